"""A synthetic metric table over all 15,625 NAS-Bench-201 cells: a test landscape with the benchmark's structure.

Its figures are not NAS-Bench-201's: the landscape is nearly additive by construction, a fixture for tests, benches
and the quickstart of tabular search (``synthetic:nb201[:SEED]`` as a table path, `nas.metric_tables`), so
everything runs offline; `bench/controllers.py` keeps it apart from the real problems.
"""
from __future__ import annotations

import functools
import itertools

import numpy as np
import pandas as pd


@functools.lru_cache(maxsize=2)
def synthetic_nb201(seed: int = 0) -> pd.DataFrame:
    """A synthetic metric table over all 15,625 NAS-Bench-201 cells (columns arch, accuracy, latency_ms, flops,
    params).

    The landscape has the benchmark's structure, not its figures:
    - a cell whose output node is not reached from its input through non-``none`` edges scores ~10 % (the
      network learns nothing through it);
    - otherwise accuracy rises with capacity on the input-output paths (3x3 convolutions count most, 1x1 about
      half, pooling little), needs at least two convolutions in depth, gains from a skip edge input->output and
      loses a little per pooling edge; seeded pairwise edge interactions make it rugged and a seeded noise term
      stands for the spread between training seeds (~0.15 %);
    - latency follows the network's MACs plus a per-operation overhead, with 2 % seeded noise, so accuracy and
      latency trade against each other as on real hardware.
    """
    from search_spaces import get_space
    from search_spaces.nb201 import EDGES, NUM_CELLS, NUM_EDGES, NUM_OPS, OP_NAMES, arch_string

    rng = np.random.default_rng(seed)
    ops = np.array(list(itertools.product(range(NUM_OPS), repeat=NUM_EDGES)))
    conv3, conv1, pool, skip = (OP_NAMES.index(n) for n in ("nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3",
                                                              "skip_connect"))
    weight = np.zeros(NUM_OPS)
    weight[[conv3, conv1, pool]] = 1.0, 0.55, 0.1
    on_path, connected, depth = _paths(ops, weight, EDGES)
    capacity = (weight[ops] * on_path).sum(1)
    pools = ((ops == pool) & on_path).sum(1)
    residual = ops[:, EDGES.index((3, 0))] == skip
    interactions = rng.normal(0, 0.12, size=(NUM_EDGES, NUM_OPS, NUM_EDGES, NUM_OPS))
    pair = sum(interactions[e, ops[:, e], f, ops[:, f]] for e in range(NUM_EDGES) for f in range(e + 1, NUM_EDGES))
    acc = (94.4 - 12.0 * np.exp(-0.45 * capacity) - 1.5 * np.maximum(0.0, 2.0 - depth) + 0.6 * residual
           - 0.4 * pools + pair + rng.normal(0, 0.15, len(ops)))
    acc = np.where(connected, acc, 10.0 + rng.normal(0, 0.3, len(ops)))
    pos, choices = get_space("nb201", num_classes=10).positional_layers(), np.tile(ops, NUM_CELLS)
    macs, params = pos.totals("macs", choices), pos.totals("params", choices)
    overhead = np.array([0.0, 0.002, 0.006, 0.006, 0.008])[ops].sum(1) * NUM_CELLS
    latency = (0.35 + macs / 25e6 * 0.1 + overhead) * rng.lognormal(0, 0.02, len(ops))
    return pd.DataFrame({"arch": [arch_string(o) for o in ops], "accuracy": np.round(acc, 3),
                         "latency_ms": np.round(latency, 5), "flops": macs, "params": params})


def _paths(ops: np.ndarray, weight: np.ndarray, edges) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per cell: which edges lie on an input->output path of non-``none`` edges, whether the output is reached,
    and the longest such path counted in `weight` (convolutions) units."""
    n = len(ops)
    live = ops != 0   # op 0 is "none"
    reach_fwd = np.zeros((n, 4), bool)
    reach_fwd[:, 0] = True
    longest = np.full((n, 4), -np.inf)
    longest[:, 0] = 0.0
    for e, (dst, src) in enumerate(edges):   # edges are listed in topological order of their target
        ok = live[:, e] & reach_fwd[:, src]
        reach_fwd[:, dst] |= ok
        longest[:, dst] = np.where(ok, np.maximum(longest[:, dst], longest[:, src] + weight[ops[:, e]]),
                                   longest[:, dst])
    reach_back = np.zeros((n, 4), bool)
    reach_back[:, 3] = True
    for e, (dst, src) in reversed(list(enumerate(edges))):
        reach_back[:, src] |= live[:, e] & reach_back[:, dst]
    on_path = np.stack([live[:, e] & reach_fwd[:, src] & reach_back[:, dst] for e, (dst, src) in enumerate(edges)],
                       axis=1)
    return on_path, reach_fwd[:, 3], np.where(reach_fwd[:, 3], longest[:, 3], 0.0)
