"""Controllers: Ray-free ask/tell search algorithms, and the one adapter that runs any of them under Ray Tune.

Importing this package registers the built-in controllers (`CONTROLLERS.names()`).
"""
from nas.controllers.base import CONTROLLERS, Controller, ControllerOptions, make_controller, register_controller
from nas.controllers import evolution, local_search, nsga2, random_search, reinforce  # noqa: F401  (the built-ins)
from nas.controllers import tune_searcher  # noqa: F401  (any Ray Tune searcher; its back-ends are extras)

__all__ = ["CONTROLLERS", "Controller", "ControllerOptions", "make_controller", "register_controller"]
