"""Regularized (aging) evolution, as in Real et al., "Regularized Evolution for Image Classifier Architecture
Search" (AAAI 2019): tournament selection over a population from which the oldest member is removed.

By default a surrogate steers it (`nas.controllers.surrogate`): each proposal is the draw of highest expected
improvement among `candidates` (50) draws (random ones while the population fills, then children, each bred from its
own tournament).
``surrogate: none`` is the paper's algorithm.
"""
from __future__ import annotations

from collections import deque
from typing import Any
from collections.abc import Hashable

from pydantic import Field, model_validator

from nas.controllers.base import Controller, Outcome, register_controller
from nas.controllers.surrogate import Surrogate, SurrogateOptions


class EvolutionOptions(SurrogateOptions):
    """Options of regularized evolution."""

    candidates: int = Field(50, ge=1, description="children the surrogate chooses each proposal from")
    population_size: int = Field(16, ge=2, description="members kept; the oldest dies when a child joins")
    sample_size: int = Field(4, ge=1, description="tournament size")
    crossover_prob: float = Field(0.0, ge=0, le=1, description="chance a child crosses two parents first")

    @model_validator(mode="after")
    def _sample_fits(self) -> EvolutionOptions:
        if self.sample_size > self.population_size:
            raise ValueError(f"sample_size ({self.sample_size}) must not exceed population_size "
                             f"({self.population_size})")
        return self


@register_controller("evolution")
class RegularizedEvolution(Controller):
    """Aging evolution: proposals are random until `population_size` candidates have joined the population; after
    that each child is a mutation of the best of `sample_size` random members. Failed or infeasible candidates
    (score None) and candidates the cheap checks rejected never join, so they neither become parents nor push out a
    working member, and they do not shorten the random start: under a tight latency limit most random draws are
    rejected, and counting them would start evolving from one or two members.
    """

    Options = EvolutionOptions
    options: EvolutionOptions

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.population: deque[tuple[Hashable, float | None]] = deque(maxlen=self.options.population_size)
        self.surrogate = (Surrogate(self.space, self.options.ridge, self.objectives.limits, self.options.surrogate)
                          if self.options.surrogate != "none" else None)

    def _propose(self) -> Hashable:
        draw = self._randoms if len(self.population) < self.options.population_size else self._children
        if self.surrogate is None:
            return draw(1)[0]
        return self.surrogate.steer(draw, self.options.candidates, self.options.warm)

    def _randoms(self, n: int) -> list[Hashable]:
        return [self.space.sample(self.rng) for _ in range(n)]

    def _children(self, n: int) -> list[Hashable]:
        return [self._breed(self._tournament, self.options.crossover_prob) for _ in range(n)]

    def _tournament(self) -> Hashable:
        idx = self.rng.choice(len(self.population), size=min(self.options.sample_size, len(self.population)),
                              replace=False)
        members = [self.population[int(i)] for i in idx]
        return max(members, key=lambda m: m[1])[0]

    def _observe(self, arch: Hashable, outcome: Outcome) -> None:
        if self.surrogate is not None:
            self.surrogate.observe(arch, outcome.score, outcome.latency)
        if outcome.score is not None:
            self.population.append((arch, outcome.score))

    def _extra_state(self) -> dict[str, Any]:
        return {"population": [[self.space.to_string(a), s] for a, s in self.population],
                **({"surrogate": self.surrogate.state_dict()} if self.surrogate is not None else {})}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.population.clear()
        self.population.extend((self.space.decode(a), s) for a, s in state["population"])
        if self.surrogate is not None:
            self.surrogate.load_state_dict(state["surrogate"])
