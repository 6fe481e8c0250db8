"""Random search: the baseline every other controller is measured against."""
from __future__ import annotations

from collections.abc import Hashable

from nas.controllers.base import Controller, register_controller


@register_controller("random")
class RandomSearch(Controller):
    """Uniform samples from the space, independent of any result."""

    def _propose(self) -> Hashable:
        return self.space.sample(self.rng)
