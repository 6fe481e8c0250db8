"""Accuracy estimators ("evaluators"), registered by name: importing this package registers every built-in one.

`make_evaluator(name, options, seed)` instantiates one; `EVALUATORS.names()` lists them (`nas.evaluation.base`).
"""
from nas.evaluation.base import EVALUATORS, Evaluator, EvaluatorOptions, make_evaluator, register_evaluator
from nas.evaluation import evaluators  # noqa: F401  (registers "proxy")
from nas.evaluation import tabular  # noqa: F401  (registers "tabular" and "surrogate")
from nas.evaluation import fixed_cost  # noqa: F401  (registers "fixed_cost")
from nas.evaluation.detection import evaluator  # noqa: F401  (registers "detection")

__all__ = ["EVALUATORS", "Evaluator", "EvaluatorOptions", "make_evaluator", "register_evaluator"]
