"""Any Ray Tune search algorithm (Optuna's TPE, HyperOpt, ...) as an ask/tell controller.

``controller: {name: tune, options: {searcher: optuna}}`` searches the space's decisions
(`SearchSpace.decision_sizes`) with a Ray Tune `Searcher`: its search space is one ``tune.choice(range(n))`` per
decision, keyed ``d0``, ``d1``, ...; `ask` is the searcher's ``suggest`` mapped through `space.from_decisions`,
`tell` its ``on_trial_complete`` with ``{"accuracy": score}``. Being an ordinary controller, it runs in-process
(`nas.controllers.proposer.search_in_process`, the benchmark's loop) and under Ray Tune (through
`nas.controllers.tune_adapter.ControllerSearcher`) with the same cheap checks and free answers as every other
controller, so a user can bring the library they know and the benchmark compares it on the same path. The
back-ends are optional dependencies: ``pip install -e ".[optuna]"`` (or ``.[hyperopt]``).

Every suggestion is completed exactly once, when the search tells its outcome:

- a feasible candidate reports its accuracy;
- a candidate without a score (rejected by the cheap checks, over a limit after evaluation, failed, crashed or
  non-finite) reports a *penalty*: worse than every score, without inventing a number on the accuracy scale.
  Optuna gets a PRUNED trial (Ray's `OptunaSearch` reports a trial completed without a result as pruned), which
  its TPE ranks below every completed trial; HyperOpt gets a loss of +inf (``accuracy: -inf``), which its TPE
  ranks last the same way. A made-up figure such as the worst accuracy so far would rank a candidate that broke
  the latency limit above a later, feasible but less accurate one;
- a repeat (a suggestion of a candidate whose outcome the controller already learnt, answered by the search
  from its ledger at no cost) carries no new information and is completed as an error, which both libraries
  skip: reporting its value again would weigh the same point twice and make TPE, which concentrates on its best
  points, propose them ever more often. Ignored repeats leave the model as it was, though, and TPE can get stuck
  proposing known points: once `repeat_patience` (20) suggestions in a row were repeats, each further one gets
  the penalty, which moves the searcher off them (ignoring every repeat stalls half of Optuna's searches and
  every HyperOpt one; penalising every repeat doubles the regret; the figures are in the README, "Measured
  design decisions");
- a candidate the controller did not suggest (one in flight when an earlier session stopped, or one told by the
  caller) is fed with the searcher's ``add_evaluated_point`` where it has one (Optuna); HyperOpt has none, so it
  only counts as seen.

State and resume: `state_dict` is plain JSON: the controller's RNG, the history of what the searcher learnt
(``[arch, decisions, value, fed]`` per outcome, value None for the penalty) and the current run of repeats.
`load_state_dict` builds a fresh searcher and replays that history: Optuna through ``add_evaluated_point``,
HyperOpt through ``points_to_evaluate`` (Ray's `HyperOptSearch` has no ``add_evaluated_point``), each completed as
it was. The library's own random state is not saved: the searcher is reseeded from the controller's RNG before
every suggestion, so a search resumed from a state taken between suggestions proposes exactly what an
uninterrupted one does (in-process, or one trial at a time under Tune). Suggestions still in flight when the
state was taken are not part of it (the search requeues them); with several trials at once the resumed search
may therefore differ from an uninterrupted one. Either way the ledger guarantees that nothing is evaluated twice.

Decisions an architecture does not use (`to_decisions` gives None, e.g. layers beyond a stage's depth) are
whatever the searcher suggested for candidates it proposed, and 0 for candidates fed from outside.
The controller is single-objective: latency limits act through the penalty, as for evolution.
"""
from __future__ import annotations

import importlib
import math
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from core.errors import InputError
from core.registry import Registry
from nas.controllers.base import Controller, ControllerOptions, Outcome, register_controller

if TYPE_CHECKING:
    from ray.tune.search import Searcher

METRIC = "accuracy"


class TuneSearcherBackend:
    """How the controller drives one Ray Tune searcher class (a registered entry of `TUNE_SEARCHERS`).

    Args:
        options: the controller's validated options.

    Class attributes:
        modules: packages the searcher needs beyond Ray (checked before anything is built).
        extra: this project's extra that installs them (``pip install -e ".[<extra>]"``).
        reserved: constructor arguments the controller sets itself, refused in ``searcher_options``.
    """

    modules: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str] = ""
    reserved: ClassVar[frozenset[str]] = frozenset({"space", "metric", "mode", "points_to_evaluate"})

    def __init__(self, options: TuneOptions):
        self.options = options

    def new_searcher(self, space: dict[str, Any], history: list[tuple[dict[str, int], float | None]]) -> Searcher:
        """A searcher over `space` (Tune domains) that has learnt `history` ((config, value) in order)."""
        raise NotImplementedError

    def reseed(self, searcher: Searcher, seed: int) -> None:
        """Seed the randomness of the searcher's next suggestion."""
        raise NotImplementedError

    def report(self, searcher: Searcher, trial_id: str, value: float | None) -> None:
        """Complete a suggestion with `value`, or with the penalty (worse than every score) when None."""
        raise NotImplementedError

    def add(self, searcher: Searcher, config: dict[str, int], value: float | None) -> bool:
        """Feed a point the searcher did not suggest; False when it cannot learn from one."""
        return False

    @staticmethod
    def ignore(searcher: Searcher, trial_id: str) -> None:
        """Complete a suggestion that carries no information (a repeat): as an error, which searchers skip."""
        searcher.on_trial_complete(trial_id, None, error=True)

    def _construct(self, cls: type, **kwargs: Any) -> Searcher:
        """`cls(**kwargs, **searcher_options)`, a bad keyword reported as a one-line `InputError`."""
        extra = self.options.searcher_options
        clash = sorted((self.reserved | kwargs.keys()) & extra.keys())
        if clash:
            raise InputError(f"controller 'tune': searcher_options: {', '.join(clash)}: set by the controller itself")
        try:
            return cls(**kwargs, **extra)
        except TypeError as err:
            raise InputError(f"controller 'tune': searcher_options for {cls.__name__}: {err}") from None


TUNE_SEARCHERS: Registry[type[TuneSearcherBackend]] = Registry("Tune searcher")
register_tune_searcher = TUNE_SEARCHERS.register


def require_searcher(name: str) -> type[TuneSearcherBackend]:
    """The registered back-end `name`, its packages imported.

    Raises:
        ValueError: `name` is unknown (the message lists the valid names).
        InputError: a package it needs is missing; the message names the install command.
    """
    backend = TUNE_SEARCHERS.get(name)
    for module in backend.modules:
        try:
            importlib.import_module(module)
        except ImportError:
            raise InputError(f"Tune searcher {name!r} needs the {module} package: "
                             f"pip install -e \".[{backend.extra}]\"") from None
    return backend


class TuneOptions(ControllerOptions):
    """Options of the Tune-searcher controller."""

    searcher: str = Field("optuna", description="registered Tune searcher: optuna (OptunaSearch), hyperopt "
                          "(HyperOptSearch)")
    searcher_options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the Tune "
                                             "searcher's constructor (e.g. hyperopt's n_initial_points, gamma)")
    repeat_patience: int = Field(20, ge=0, description="suggestions of already-known archs in a row that are "
                                 "ignored before further ones get the penalty (0: every repeat does)")
    sampler: Literal["tpe", "random"] = Field("tpe", description="optuna only: Optuna's sampler (TPESampler, "
                                              "RandomSampler), seeded from the controller's seed")
    sampler_options: dict[str, Any] = Field(default_factory=dict, description="optuna only: keyword arguments of "
                                            "the sampler (e.g. n_startup_trials, multivariate)")

    @field_validator("searcher")
    @classmethod
    def _known_and_installed(cls, v: str) -> str:
        require_searcher(v)
        return v

    @model_validator(mode="after")
    def _sampler_is_optunas(self) -> TuneOptions:
        if self.searcher != "optuna" and self.model_fields_set & {"sampler", "sampler_options"}:
            raise ValueError(f"sampler and sampler_options apply to searcher 'optuna', not {self.searcher!r}")
        return self


@register_controller("tune")
class TuneSearch(Controller):
    """A Ray Tune searcher over the space's decisions (see the module docstring for what it is told and how it
    resumes)."""

    Options = TuneOptions
    options: TuneOptions

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.sizes = self.space.decision_sizes()
        self.keys = [f"d{i}" for i in range(len(self.sizes))]
        self.backend = require_searcher(self.options.searcher)(self.options)
        self.history: list[list[Any]] = []                         # [arch, decisions, value, fed] per learnt arch
        self.seen: set[str] = set()
        self.pending: dict[str, list[tuple[str, list[int]]]] = {}  # arch -> its (trial id, decisions) in flight
        self.streak = 0                                            # repeats suggested since the last new arch
        self.searcher = self._new_searcher()

    def _tune_space(self) -> dict[str, Any]:
        from ray import tune

        return {k: tune.choice(list(range(n))) for k, n in zip(self.keys, self.sizes)}

    def _config(self, decisions: list[int]) -> dict[str, int]:
        return dict(zip(self.keys, decisions))

    def _new_searcher(self) -> Searcher:
        fed = [(self._config(d), v) for _, d, v, was_fed in self.history if was_fed]
        return self.backend.new_searcher(self._tune_space(), fed)

    def _propose(self) -> Hashable:
        self.backend.reseed(self.searcher, int(self.rng.integers(2**31 - 1)))
        trial_id = f"t{self.n_asked}"
        config = self.searcher.suggest(trial_id)
        if not isinstance(config, dict):
            raise RuntimeError(f"Tune searcher {self.options.searcher!r} suggested {config!r}, not a configuration")
        decisions = [int(config[k]) for k in self.keys]
        arch = self.space.from_decisions(decisions)
        self.pending.setdefault(self.space.to_string(arch), []).append((trial_id, decisions))
        return arch

    def _observe(self, arch: Hashable, outcome: Outcome) -> None:
        string = self.space.to_string(arch)
        trials = self.pending.pop(string, [])
        if string in self.seen:
            for trial_id, decisions in trials:
                self._repeat(string, trial_id, decisions)
            return
        self.seen.add(string)
        self.streak = 0
        value = outcome.score
        if trials:
            (trial_id, decisions), *twins = trials   # twins: the same arch suggested again while in flight
            self.backend.report(self.searcher, trial_id, value)
            for twin, twin_decisions in twins:
                self._repeat(string, twin, twin_decisions)
            fed = True
        else:
            decisions = [0 if d is None else int(d) for d in self.space.to_decisions(arch)]
            fed = self.backend.add(self.searcher, self._config(decisions), value)
        self.history.append([string, decisions, value, fed])

    def _repeat(self, string: str, trial_id: str, decisions: list[int]) -> None:
        """Complete a suggestion of an arch whose outcome was already learnt: ignored, unless the searcher has
        suggested nothing new for `repeat_patience` suggestions, in which case it gets the penalty."""
        self.streak += 1
        if self.streak <= self.options.repeat_patience:
            self.backend.ignore(self.searcher, trial_id)
            return
        self.backend.report(self.searcher, trial_id, None)
        self.history.append([string, decisions, None, True])

    def _extra_state(self) -> dict[str, Any]:
        return {"history": [list(entry) for entry in self.history], "streak": self.streak}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        history = []
        for arch, decisions, value, fed in state["history"]:
            if len(decisions) != len(self.sizes) or any(not 0 <= int(d) < n for d, n in zip(decisions, self.sizes)):
                raise ValueError(f"history: {arch!r}: decisions {decisions} do not fit the space's {self.sizes}")
            history.append([str(arch), [int(d) for d in decisions], None if value is None else float(value),
                            bool(fed)])
        self.history = history
        self.seen = {entry[0] for entry in history}
        self.pending = {}
        self.streak = int(state["streak"])
        self.searcher = self._new_searcher()


# ---- back-ends ---------------------------------------------------------------------------------------------------
@register_tune_searcher("optuna")
class OptunaBackend(TuneSearcherBackend):
    """`ray.tune.search.optuna.OptunaSearch` with a seeded Optuna sampler (TPE by default)."""

    modules = ("optuna",)
    extra = "optuna"
    reserved = TuneSearcherBackend.reserved | {"sampler", "seed", "evaluated_rewards"}

    def new_searcher(self, space: dict[str, Any], history: list[tuple[dict[str, int], float | None]]) -> Searcher:
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)   # one INFO line per trial otherwise
        searcher = self._construct(OptunaSearch, space=OptunaSearch.convert_search_space(space), metric=METRIC,
                                   mode="max", sampler=self._sampler(0))
        for config, value in history:
            searcher.add_evaluated_point(config, value, pruned=value is None)
        return searcher

    def _sampler(self, seed: int) -> Any:
        from optuna import samplers

        cls = {"tpe": samplers.TPESampler, "random": samplers.RandomSampler}[self.options.sampler]
        try:
            return cls(seed=seed, **self.options.sampler_options)
        except TypeError as err:
            raise InputError(f"controller 'tune': sampler_options for {cls.__name__}: {err}") from None

    def reseed(self, searcher: Searcher, seed: int) -> None:
        # Optuna samplers cannot be reseeded with a given seed; the study reads its (public) `sampler` attribute
        # on every ask, so a fresh sampler is swapped in. Ray's OptunaSearch keeps the study in `_ot_study`.
        searcher._ot_study.sampler = self._sampler(seed)

    def report(self, searcher: Searcher, trial_id: str, value: float | None) -> None:
        searcher.on_trial_complete(trial_id, None if value is None else {METRIC: value})   # None: PRUNED

    def add(self, searcher: Searcher, config: dict[str, int], value: float | None) -> bool:
        searcher.add_evaluated_point(config, value, pruned=value is None)
        return True


@register_tune_searcher("hyperopt")
class HyperOptBackend(TuneSearcherBackend):
    """`ray.tune.search.hyperopt.HyperOptSearch` (HyperOpt's TPE)."""

    modules = ("hyperopt",)
    extra = "hyperopt"
    reserved = TuneSearcherBackend.reserved | {"random_state_seed"}

    def new_searcher(self, space: dict[str, Any], history: list[tuple[dict[str, int], float | None]]) -> Searcher:
        import numpy as np
        from ray.tune.search.hyperopt import HyperOptSearch

        # No add_evaluated_point: the history is replayed as points to evaluate. HyperOptSearch numbers them in
        # reverse and suggests them first in, first out; given reversed, they are numbered in the order they were
        # learnt, as HyperOpt's TPE (which forgets the oldest points first) numbered them the first time.
        searcher = self._construct(HyperOptSearch, space=HyperOptSearch.convert_search_space(space), metric=METRIC,
                                   mode="max", points_to_evaluate=[dict(c) for c, _ in reversed(history)] or None)
        searcher.rstate = np.random.RandomState(0)
        for i, (config, value) in enumerate(reversed(history)):
            trial_id = f"replay{i}"
            if searcher.suggest(trial_id) != config:
                raise RuntimeError("HyperOptSearch did not replay its points_to_evaluate in order")
            self.report(searcher, trial_id, value)
        return searcher

    def reseed(self, searcher: Searcher, seed: int) -> None:
        import numpy as np

        searcher.rstate = np.random.RandomState(seed)   # HyperOptSearch draws each suggestion's seed from it

    def report(self, searcher: Searcher, trial_id: str, value: float | None) -> None:
        searcher.on_trial_complete(trial_id, {METRIC: -math.inf if value is None else value})   # loss +inf
