"""Search spaces: architectures as data, with analytic cost and a separate build step.

Importing this package registers every built-in space; use `get_space(name, options)` or `SPACES.names()`.
"""
from search_spaces.base import SPACES, SearchSpace, SpaceOptions, register_space
from search_spaces.make import get_space, make_space
from search_spaces import mobilenet  # noqa: F401  (registers "mobilenet")
from search_spaces import fbnet  # noqa: F401  (registers "fbnet")
from search_spaces import nb201  # noqa: F401  (registers "nb201")
from search_spaces import muffnet  # noqa: F401  (registers "muffnet")
from search_spaces import macro  # noqa: F401  (registers "macro")
from search_spaces.heads import detector  # noqa: F401  (registers "lrssd")

__all__ = ["SPACES", "SearchSpace", "SpaceOptions", "get_space", "make_space", "register_space"]
