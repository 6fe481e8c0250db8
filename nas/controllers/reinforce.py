"""Reinforcement learning: a policy over the space's decisions trained by policy gradient (PPO or REINFORCE).

The policy is one categorical distribution per decision of the space (`SearchSpace.decision_sizes`), a
factorised form of the controllers of Zoph & Le (2017) and MnasNet (Tan et al., 2019) that needs no recurrent
network for spaces whose decisions are a fixed list. Each new candidate's outcome becomes a reward, turned into a
utility `u_i`: 1 when the reward is among the best `elite` fraction of every reward seen so far, else 0. Every
`batch_size` outcomes the advantages ``A_i = u_i - b`` (`b`: the baseline, a moving average of `u` with factor
`baseline_decay`, whose default 0 makes it the batch's own mean) drive the update:

- ``ppo`` (default; Schulman et al., 2017): `epochs` Adam steps on the clipped surrogate over the samples of the
  last `memory` batches, so each costly outcome is learned from several times without the policy running away
  from the data (the probability ratio is clipped to ``1 +- clip``);
- ``reinforce``: one Adam step along ``mean_i A_i grad log q(d_i)`` on the batch alone.

Ranking instead of raw rewards makes the step independent of the reward's scale and of outliers (a few broken
networks at a tenth of the best accuracy would otherwise drown the differences that matter at the top); PPO was
kept over REINFORCE because it learns several times from each costly outcome. Each decision is sampled
from the policy mixed with a uniform share (`explore`), and the probabilities of that mixture are what the
gradient and PPO's ratios use, so they stay finite. A candidate is learned from once: repeats (already-evaluated
candidates the search answers for free) are ignored, because counting them again reinforced the policy's mode
until it proposed nothing new. Updating in batches is what lets several trials run at once: outcomes arrive in any
order and the policy changes only between batches.

Under concurrency the behaviour probability of a sample is taken when its outcome is told, which is the policy it
was drawn from unless an update happened while it was in flight; the clip bounds that error.

What makes it sample-efficient enough for costly evaluations (each choice was measured with `bench/controllers.py`;
the README has the figures):
- a surrogate steers the proposals (`nas.controllers.surrogate`): each is the best-predicted unseen one of
  `candidates` policy samples;
- candidates the cheap checks rejected are recorded but not learnt from (``rejected: ignore``): they cost
  nothing, and penalising them pushes the policy away from the latency limit, where the best feasible networks
  lie (``rejected: penalty`` does so);
- a small entropy bonus (`entropy_weight` 0.01) keeps the policy from collapsing onto candidates it has already
  seen, which otherwise multiplies the free repeats per query and can end a search early.

Rewards:
- ``hard`` (default): the accuracy of a feasible candidate. Failed and over-limit candidates (rejected ones too
  with ``rejected: penalty``) get the penalty (by default the lowest reward seen so far), so the policy learns
  to avoid them without NaN or a reward scale of its own.
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

from nas.controllers.base import Controller, Outcome, register_controller
from nas.controllers.surrogate import Surrogate, SurrogateOptions


class ReinforceOptions(SurrogateOptions):
    """Options of the policy-gradient controller."""

    candidates: int = Field(200, ge=1, description="policy samples the surrogate chooses each proposal from")
    algorithm: Literal["ppo", "reinforce"] = Field("ppo", description="ppo: clipped policy-gradient steps over "
                                                  "the last `memory` batches; reinforce: one plain step per batch")
    batch_size: int = Field(4, ge=1, description="outcomes per policy update")
    lr: float = Field(0.1, gt=0, description="Adam step size on the logits")
    epochs: int = Field(8, ge=1, description="ppo: gradient steps per update")
    memory: int = Field(4, ge=1, description="ppo: batches whose samples each update reuses")
    clip: float = Field(0.2, gt=0, description="ppo: a sample stops pushing once its probability ratio leaves "
                        "[1 - clip, 1 + clip] in the direction of its advantage")
    elite: float = Field(0.2, gt=0, le=1, description="fraction of the rewards seen so far that counts as a success")
    baseline_decay: float = Field(0.0, ge=0, lt=1, description="moving-average factor of the baseline (0: the "
                                  "batch's mean)")
    entropy_weight: float = Field(0.01, ge=0, description="bonus on the policy's entropy (keeps it exploring)")
    explore: float = Field(0.05, ge=0, lt=1, description="share of each decision sampled uniformly, so a policy "
                           "that has converged still proposes new candidates")
    reward: Literal["hard", "mnasnet"] = "hard"
    alpha: float = Field(-0.07, le=0, description="MnasNet latency exponent when within the target")
    beta: float = Field(-0.07, le=0, description="MnasNet latency exponent when over the target")
    targets: dict[str, float] = Field(default_factory=dict, description="MnasNet latency targets (ms) per "
                                      "profile; default: the recipe's latency limits")
    penalty: float | None = Field(None, description="reward of failed / infeasible candidates; default: the "
                                  "lowest reward seen so far")
    rejected: Literal["ignore", "penalty"] = Field("ignore", description="candidates the cheap checks rejected "
                                                   "(they cost no evaluation): not learnt from, or penalised")


_ADAM = (0.9, 0.999, 1e-8)


@register_controller("rl")
class Reinforce(Controller):
    """Policy gradient (PPO or REINFORCE) over a factorised categorical policy, on rank utilities with a
    baseline (see the module)."""

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
        # the steering model, and the record of the candidates already learnt from
        self.surrogate = Surrogate(self.space, self.options.ridge, self.objectives.limits,
                                   "ridge" if self.options.surrogate == "none" else self.options.surrogate)
        # (decisions, reward, behaviour probability of each decision's choice) awaiting the next update
        self.batch: list[tuple[list[int | None], float | None, list[float]]] = []
        # (decisions, advantage, behaviour probabilities) of the last `memory` batches (ppo)
        self.buffer: list[tuple[list[int | None], float, list[float]]] = []
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

    def sampling_probabilities(self) -> list[np.ndarray]:
        """What proposals are actually drawn from: the policy mixed with the uniform `explore` share."""
        eps = self.options.explore
        return [(1 - eps) * p + eps / len(p) for p in self.probabilities()]

    def _propose(self) -> Hashable:
        if self.options.surrogate == "none":
            return self._samples(1)[0]
        return self.surrogate.steer(self._samples, self.options.candidates, self.options.warm)

    def _samples(self, n: int) -> list[Hashable]:
        """`n` proposals drawn from the sampling distribution (inverse CDF of one uniform per decision)."""
        q = self.sampling_probabilities()
        u = self.rng.random((n, len(q)))
        choices = np.stack([np.minimum(np.searchsorted(np.cumsum(p), u[:, d], side="right"), len(p) - 1)
                            for d, p in enumerate(q)], axis=1)
        return [self.space.from_decisions([int(c) for c in row]) for row in choices]

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
        if not self.surrogate.observe(arch, reward, outcome.latency):
            return   # a repeat adds no information; learning from it again would lock the policy in
        if outcome.rejected and self.options.rejected == "ignore":
            return
        if reward is not None:
            self.lowest = reward if self.lowest is None else min(self.lowest, reward)
        decisions = list(self.space.to_decisions(arch))
        q = self.sampling_probabilities()
        self.batch.append((decisions, reward, [1.0 if c is None else float(q[d][c]) for d, c in enumerate(decisions)]))
        if len(self.batch) >= self.options.batch_size:
            self._update()

    def _rewards(self) -> np.ndarray:
        penalty = self.options.penalty if self.options.penalty is not None else self.lowest
        return np.array([penalty if b[1] is None else b[1] for b in self.batch], dtype=float)

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
        samples = [(d, float(adv), q) for (d, _, q), adv in zip(batch, utility - self.baseline)]
        ppo = self.options.algorithm == "ppo"
        self.buffer = (self.buffer + samples)[-self.options.memory * self.options.batch_size:] if ppo else samples
        for _ in range(self.options.epochs if ppo else 1):
            grad = self._surrogate_gradient(self.options.clip if ppo else math.inf)
            if self.options.entropy_weight:
                grad += self.options.entropy_weight * self._entropy_gradient(np.concatenate(self.probabilities()))
            self._adam_ascent(grad)

    def _surrogate_gradient(self, clip: float) -> np.ndarray:
        """Gradient of PPO's clipped objective mean_i min(r_i A_i, clip(r_i) A_i) over the buffer, where r_i is
        the sample's probability under the current sampling distribution over the one it was drawn from. With
        every r_i = 1 (a fresh batch) and no clip it is REINFORCE's ``mean_i A_i grad log q(d_i)``."""
        probs, eps = self.probabilities(), self.options.explore
        grad = np.zeros_like(self.logits)
        for decisions, adv, behaviour in self.buffer:
            chosen = [(d, c) for d, c in enumerate(decisions) if c is not None]
            now = {d: (1 - eps) * probs[d][c] + eps / len(probs[d]) for d, c in chosen}
            ratio = float(np.prod([now[d] / behaviour[d] for d, _ in chosen]))
            if adv == 0 or (adv > 0 and ratio > 1 + clip) or (adv < 0 and ratio < 1 - clip):
                continue   # clipped: this sample has moved the policy as far as PPO allows
            for d, c in chosen:   # d log q(c) / d logits = (1 - eps) p_c (onehot_c - p) / q(c)
                a, p = self.offsets[d], probs[d]
                g = -p * ((1 - eps) * p[c] / now[d])
                g[c] += (1 - eps) * p[c] / now[d]
                grad[a:a + len(p)] += ratio * adv * g
        return grad / max(len(self.buffer), 1)

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
                "surrogate": self.surrogate.state_dict(), "batch": [list(b) for b in self.batch],
                "buffer": [list(b) for b in self.buffer]}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.logits = np.asarray(state["logits"], dtype=float)
        self.moments = np.asarray(state["moments"], dtype=float)
        self.steps, self.baseline, self.lowest = state["steps"], state["baseline"], state["lowest"]
        self.history = list(state["history"])
        self.surrogate.load_state_dict(state["surrogate"])
        self.batch = [(list(d), r, list(q)) for d, r, q in state["batch"]]
        self.buffer = [(list(d), float(a), list(q)) for d, a, q in state["buffer"]]
