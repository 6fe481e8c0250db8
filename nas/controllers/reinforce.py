"""Reinforcement learning: a policy over the space's decisions trained by policy gradient (REINFORCE).

The policy is one categorical distribution per decision of the space (`SearchSpace.decision_sizes`), a
factorised form of the controllers of Zoph & Le (2017) and MnasNet (Tan et al., 2019) that needs no recurrent
network for spaces whose decisions are a fixed list. Each outcome becomes a reward; every `batch_size` rewards the
logits take one Adam step along ``sum_i A_i * grad log pi(d_i)`` with ``A_i = u_i - b``: `u_i` is 1 when the
reward is among the best `elite` fraction of every reward seen so far and 0 otherwise, and `b` the baseline: a
moving average of `u` with factor `baseline_decay`, whose default 0 makes it the batch's own mean. Ranking
instead of raw rewards makes the step independent of the reward's scale and of outliers (a few broken networks
at 10 % accuracy would otherwise drown the differences that matter at the top). On `bench/controllers.py` (20
seeds, 100 queries) the raw-reward form with a moving baseline had 1.43 regret, this form 0.89 with the batch
mean and 1.17 with a moving average at 0.5. Each decision is sampled from the policy mixed with a uniform share
(`explore`): a policy that has converged would otherwise only re-propose candidates already evaluated, which are
free, so the search would stall (it did on fbnet: 669 new candidates where 10,000 were asked for). Updating in
batches is what lets several trials run at once: outcomes arrive in any order and the policy changes only between
batches.

Rewards:
- ``hard`` (default): the accuracy of a feasible candidate. Failed, rejected and over-limit candidates get the
  penalty (by default the lowest reward seen so far), so the policy learns to avoid them without NaN or a
  reward scale of its own.
- ``mnasnet``: MnasNet's soft constraint ``ACC * prod_p (LAT_p / T_p) ** w`` with ``w = alpha`` when
  ``LAT_p <= T_p`` and ``beta`` otherwise (``alpha = beta = -0.07`` is the paper's soft setting; ``alpha = 0,
  beta = -1`` its hard-ish one). Targets ``T_p`` come from `targets`, else from the recipe's latency limits.
  Candidates over a hard limit still count when they were trained (``search.train_infeasible``).
"""
from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any, Literal

import numpy as np
from pydantic import Field

from nas.controllers.base import Controller, ControllerOptions, Outcome, register_controller


class ReinforceOptions(ControllerOptions):
    """Options of the policy-gradient controller."""

    batch_size: int = Field(4, ge=1, description="outcomes per policy update")
    lr: float = Field(0.2, gt=0, description="Adam step size on the logits")
    elite: float = Field(0.2, gt=0, le=1, description="fraction of the rewards seen so far that counts as a success")
    baseline_decay: float = Field(0.0, ge=0, lt=1, description="moving-average factor of the baseline (0: the "
                                  "batch's mean)")
    entropy_weight: float = Field(0.0, ge=0, description="bonus on the policy's entropy (keeps it exploring)")
    explore: float = Field(0.05, ge=0, lt=1, description="share of each decision sampled uniformly, so a policy "
                           "that has converged still proposes new candidates")
    reward: Literal["hard", "mnasnet"] = "hard"
    alpha: float = Field(-0.07, le=0, description="MnasNet latency exponent when within the target")
    beta: float = Field(-0.07, le=0, description="MnasNet latency exponent when over the target")
    targets: dict[str, float] = Field(default_factory=dict, description="MnasNet latency targets (ms) per "
                                      "profile; default: the recipe's latency limits")
    penalty: float | None = Field(None, description="reward of failed / infeasible candidates; default: the "
                                  "lowest reward seen so far")


_ADAM = (0.9, 0.999, 1e-8)


@register_controller("rl")
class Reinforce(Controller):
    """REINFORCE over a factorised categorical policy, on rank utilities with a baseline (see the module)."""

    Options = ReinforceOptions
    options: ReinforceOptions

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.sizes = self.space.decision_sizes()
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(int)
        self.logits = np.zeros(int(self.offsets[-1]))
        self.moments = np.zeros((2, len(self.logits)))
        self.steps = 0
        self.baseline: float | None = None
        self.history: list[float] = []
        self.lowest: float | None = None
        self.batch: list[tuple[list[int | None], float | None]] = []
        self.targets = dict(self.options.targets) or dict(self.objectives.limits)
        if self.options.reward == "mnasnet" and not self.targets:
            raise ValueError("controller rl: reward 'mnasnet' needs latency targets: set controller.options.targets "
                             "or a max_ms on a latency constraint")

    # ---- policy ---------------------------------------------------------------------------------------------
    def probabilities(self) -> list[np.ndarray]:
        """The policy: choice probabilities of each decision."""
        out = []
        for a, b in zip(self.offsets[:-1], self.offsets[1:]):
            z = np.exp(self.logits[a:b] - self.logits[a:b].max())
            out.append(z / z.sum())
        return out

    def _propose(self) -> Hashable:
        eps = self.options.explore
        return self.space.from_decisions([int(self.rng.choice(len(p), p=(1 - eps) * p + eps / len(p)))
                                          for p in self.probabilities()])

    # ---- learning -------------------------------------------------------------------------------------------
    def reward(self, outcome: Outcome) -> float | None:
        """The outcome's reward, None when it has none (the penalty applies)."""
        if self.options.reward == "hard" or outcome.accuracy is None:
            return outcome.score
        r = outcome.accuracy
        for profile, target in self.targets.items():
            lat = outcome.latency.get(profile)
            if lat is not None and lat > 0:
                r *= (lat / target) ** (self.options.alpha if lat <= target else self.options.beta)
        return r if math.isfinite(r) else None

    def _observe(self, arch: Hashable, outcome: Outcome) -> None:
        reward = self.reward(outcome)
        if reward is not None:
            self.lowest = reward if self.lowest is None else min(self.lowest, reward)
        self.batch.append((list(self.space.to_decisions(arch)), reward))
        if len(self.batch) >= self.options.batch_size:
            self._update()

    def _rewards(self) -> np.ndarray:
        penalty = self.options.penalty if self.options.penalty is not None else self.lowest
        return np.array([penalty if r is None else r for _, r in self.batch], dtype=float)

    def _update(self) -> None:
        rewards = self._rewards()
        batch, self.batch = self.batch, []
        if not np.isfinite(rewards).all():   # nothing has succeeded yet: no reward to learn from
            return
        self.history.extend(rewards.tolist())
        threshold = float(np.quantile(self.history, 1 - self.options.elite))
        utility = (rewards >= threshold).astype(float)
        decay = self.options.baseline_decay
        mean = float(utility.mean())
        self.baseline = mean if self.baseline is None else decay * self.baseline + (1 - decay) * mean
        advantages = utility - self.baseline
        probs = np.concatenate(self.probabilities())
        grad = np.zeros_like(self.logits)
        for (decisions, _), adv in zip(batch, advantages):
            for d, choice in enumerate(decisions):
                if choice is not None:
                    a, b = self.offsets[d], self.offsets[d + 1]
                    grad[a:b] -= adv * probs[a:b]
                    grad[a + choice] += adv
        grad /= len(batch)
        if self.options.entropy_weight:
            grad += self.options.entropy_weight * self._entropy_gradient(probs)
        self._adam_ascent(grad)

    def _entropy_gradient(self, probs: np.ndarray) -> np.ndarray:
        """d(sum of the decisions' entropies)/d(logits)."""
        logp = np.log(np.maximum(probs, 1e-300))
        out = np.empty_like(probs)
        for a, b in zip(self.offsets[:-1], self.offsets[1:]):
            p, lp = probs[a:b], logp[a:b]
            out[a:b] = -p * (lp - (p * lp).sum())
        return out

    def _adam_ascent(self, grad: np.ndarray) -> None:
        b1, b2, eps = _ADAM
        self.steps += 1
        self.moments[0] = b1 * self.moments[0] + (1 - b1) * grad
        self.moments[1] = b2 * self.moments[1] + (1 - b2) * grad ** 2
        m_hat = self.moments[0] / (1 - b1 ** self.steps)
        v_hat = self.moments[1] / (1 - b2 ** self.steps)
        self.logits += self.options.lr * m_hat / (np.sqrt(v_hat) + eps)

    # ---- state ----------------------------------------------------------------------------------------------
    def _extra_state(self) -> dict[str, Any]:
        return {"logits": self.logits.tolist(), "moments": self.moments.tolist(), "steps": self.steps,
                "baseline": self.baseline, "lowest": self.lowest, "history": self.history,
                "batch": [[d, r] for d, r in self.batch]}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.logits = np.asarray(state["logits"], dtype=float)
        self.moments = np.asarray(state["moments"], dtype=float)
        self.steps, self.baseline, self.lowest = state["steps"], state["baseline"], state["lowest"]
        self.history = list(state["history"])
        self.batch = [(list(d), r) for d, r in state["batch"]]

