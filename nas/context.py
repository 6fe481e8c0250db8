"""The run context: a validated recipe's plug-ins, built once and used by the checks, the search and the trials.

Loading a recipe (`nas.checks.load_run`) validates each plug-in's options against its registered class once and
keeps the typed options on the recipe (`Plugins`, `Recipe.plugins`). A `RunContext` is built from them: the
evaluator, the search space (at the evaluator's class count), the controller, the prescreen estimator and, once
the run directory is known, the latency sources (`nas.latency_sources`). The driver's checks run against that
context, and the same context then runs the search and exports its best network; each Ray worker builds its own
from the same recipe (once per process, `nas.trial.tune_trainable`), since a context holds datasets and models
that are not shipped between processes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.registry import PluginOptions
from nas.compression import repaired
from nas.controllers import CONTROLLERS
from nas.controllers.base import SearchObjectives
from nas.evaluation import EVALUATORS
from nas.evaluation.tabular import constraint_table
from nas.latency_sources import LatencySource, latency_figures, make_sources
from nas.objectives import latency_violation, memory_columns, profile_budget_columns, static_figures
from nas.recipe import Recipe, validate_plugin
from search_spaces import SPACES, get_space
from search_spaces.base import CompressionOptions
from search_spaces.policy import PolicySpace


@dataclass(frozen=True)
class Plugins:
    """The recipe's plug-in options, validated by their plug-ins' `Options` classes."""

    space: PluginOptions
    controller: PluginOptions
    evaluator: PluginOptions
    prescreen: PluginOptions | None = None


def validate_plugins(source: str, recipe: Recipe) -> Plugins:
    """Validate every plug-in's name and options and keep them on the recipe (`Recipe.plugins`).

    Raises:
        RecipeError: an unknown name or bad options, one line naming `source` and the field.
    """
    pre = recipe.search.prescreen
    plugins = Plugins(
        space=validate_plugin(source, "space", SPACES, recipe.space),
        controller=validate_plugin(source, "controller", CONTROLLERS, recipe.controller),
        evaluator=validate_plugin(source, "evaluator", EVALUATORS, recipe.evaluator),
        prescreen=None if pre is None else validate_plugin(source, "search.prescreen.estimator", EVALUATORS,
                                                           pre.estimator))
    recipe.keep_plugins(plugins)
    return plugins


def result_metrics(recipe: Recipe) -> tuple[str, ...]:
    """The results columns beside ``accuracy``: the evaluator's figures (`Evaluator.metrics`, e.g. mAP) and those
    its ``compression`` adds (`nas.compression.metrics_of`: the fp32 accuracy and the drop, for int8), and
    ``accuracy_unpruned`` where a policy prunes (`nas.trial.train_candidate`), and the memory and energy figures
    its limits ask for (`nas.objectives.memory_columns`, `profile_budget_columns`)."""
    from nas.compression import metrics_of

    policy = dict(recipe.space.options or {}).get("compression")
    prunes = recipe.compression == "search" and policy is not None and CompressionOptions.model_validate(policy).prunes
    return tuple(EVALUATORS.get(recipe.evaluator.name).metrics) + metrics_of(recipe.compression) + \
        ("accuracy_unpruned",) * prunes + memory_columns(recipe.constraints) + \
        profile_budget_columns(recipe.constraints)


class RunContext:
    """Everything a search and its trials need, built once from a validated recipe.

    Args:
        recipe: the recipe (its typed plug-in options are validated here if `nas.checks` has not done so).
        run_dir: the run directory; given, the latency sources are set up at once (`open`).

    Attributes:
        evaluator: the recipe's evaluator, bound to the space.
        space: the search space at the evaluator's class count.
        latency: the latency source per profile (empty until `open`).
    """

    def __init__(self, recipe: Recipe, run_dir: Path | None = None):
        self.recipe = recipe
        self.plugins: Plugins = recipe.plugins or validate_plugins("recipe", recipe)
        seed = recipe.search.seed
        self.evaluator = EVALUATORS.create(recipe.evaluator.name, self.plugins.evaluator, seed=seed)
        self.space = get_space(recipe.space.name, self.plugins.space, num_classes=self.evaluator.num_classes())
        self.evaluator.bind(self.space)
        self.latency: dict[str, LatencySource] = {}
        self.run_dir: Path | None = None
        self._controller = None
        self._repaired: dict[Any, Any] = {}   # proposal -> its repair (`repair`)
        if run_dir is not None:
            self.open(run_dir)

    def open(self, run_dir: Path, log=print) -> RunContext:
        """Set up the latency sources in `run_dir` (the driver builds and keeps the predictors there, before any
        trial; workers and a resumed run load them); returns self."""
        r = self.recipe
        self.run_dir, self._repaired = Path(run_dir), {}   # repairs priced without these sources are stale
        self.latency = make_sources(r.constraints, self.space, self.run_dir, seed=r.search.seed, log=log,
                                    tables={c.profile: constraint_table(r, c) for c in r.constraints.latency})
        return self

    @property
    def metrics(self) -> tuple[str, ...]:
        """The results columns beside ``accuracy`` (`result_metrics`)."""
        return result_metrics(self.recipe)

    @property
    def controller(self):
        """The recipe's controller, made on first use (the checks make it, the search then drives it)."""
        if self._controller is None:
            r = self.recipe
            self._controller = CONTROLLERS.create(r.controller.name, self.plugins.controller, self.space,
                                                  seed=r.search.seed,
                                                  objectives=SearchObjectives.from_constraints(r.constraints))
        return self._controller

    @property
    def repairs(self) -> bool:
        """Whether proposals are repaired (`repair`): a compression policy searched with ``search.repair`` other
        than none."""
        return self.recipe.compression == "search" and self.recipe.search.repair != "none" and \
            isinstance(self.space, PolicySpace)

    def repair(self, arch: Any) -> Any:
        """`arch` repaired as ``search.repair`` says, by this run's cheap figures (`nas.compression.repaired`, by
        `precheck`); with no latency source open yet, `arch` itself. Remembered per proposal (the figures are
        deterministic), since controllers propose the same arch again and again once a search has converged."""
        if arch not in self._repaired:
            if len(self._repaired) >= 100_000:
                self._repaired.clear()
            self._repaired[arch] = repaired(self.space, arch, self.precheck, self.recipe.search.repair)
        return self._repaired[arch]

    def make_estimator(self) -> Any:
        """The prescreen stage's estimator (`search.prescreen.estimator`), bound to the space."""
        pre = self.recipe.search.prescreen
        return EVALUATORS.create(pre.estimator.name, self.plugins.prescreen,
                                 seed=self.recipe.search.seed).bind(self.space)

    def precheck(self, arch: Any) -> tuple[str | None, dict[str, Any]]:
        """(violation or None, row fields) from what costs nothing: FLOPs, params and the latency figures of
        cheap sources (predictors, tables, simulators); run before a trial is spent on `arch`."""
        extra, violation = static_figures(self.space, self.recipe.constraints, arch)
        if violation is None:
            # a candidate a metric table lacks is skipped here: its trial records it as failed, the search goes on
            lat, fields = latency_figures(self.latency, self.space, arch, cheap_only=True)
            extra.update(fields)
            violation = latency_violation(self.recipe.constraints, lat, fields)
        return violation, extra
