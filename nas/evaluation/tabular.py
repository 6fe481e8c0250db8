"""Tabular benchmarks: accuracy (and latency) read from a table instead of training.

A metric table is a CSV or Parquet file with an ``arch`` column (canonical arch strings of the recipe's space)
and numeric metric columns, e.g. accuracy per dataset and latency per device, as NAS-Bench-201 and HW-NAS-Bench
publish them. The ``tabular`` evaluator reads a candidate's accuracy from one column; a latency constraint with
``source: table`` reads its latency from another (`nas.latency_sources`), so limits are checked before any
"trial" is spent, exactly as with predictors.

``synthetic:nb201[:SEED]`` in place of a path is a synthetic table over the 15,625 NAS-Bench-201 cells, made in
memory (`synthetic_nb201`). Its figures are not NAS-Bench-201's: it is a test landscape with the benchmark's
structure and nearly additive by construction, a fixture for tests and the quickstart of tabular search, so
everything runs offline; never evidence of how a method does on real data (`bench/controllers.py` keeps it apart
from the real problems).
"""
from __future__ import annotations

import functools
import itertools
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import Field, PositiveInt, field_validator

from core.errors import InputError
from nas.evaluation.base import Evaluator, EvaluatorOptions, register_evaluator

SYNTHETIC_PREFIX = "synthetic:"


class TableError(InputError):
    """A metric table that cannot be used; one line naming the file and the column."""


def read_metric_table(path: str) -> pd.DataFrame:
    """The table at `path` (CSV, or Parquet by suffix) indexed by ``arch``, or a synthetic one.

    Raises:
        TableError: missing file, no ``arch`` column, or an arch listed twice.
    """
    if path.startswith(SYNTHETIC_PREFIX):
        return _synthetic(path)
    file = Path(path)
    if not file.is_file():
        raise TableError(f"{path}: metric table not found")
    return _read_file(str(file.resolve()), file.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _read_file(path: str, mtime_ns: int) -> pd.DataFrame:
    try:
        # arch strings stay strings: NAS-Bench-Macro's "00000000" would otherwise be read as the number 0
        table = (pd.read_parquet(path) if path.endswith((".parquet", ".pq"))
                 else pd.read_csv(path, dtype={"arch": str}))
    except Exception as err:  # noqa: BLE001 - any reader error is a bad file for the user
        raise TableError(f"{path}: cannot read the metric table ({type(err).__name__}: {err})") from None
    if "arch" not in table.columns:
        raise TableError(f"{path}: no 'arch' column (columns: {', '.join(map(str, table.columns))})")
    table["arch"] = table["arch"].astype(str)
    dup = table["arch"].duplicated()
    if dup.any():
        raise TableError(f"{path}: arch {table['arch'][dup].iloc[0]!r} is listed more than once")
    return table.set_index("arch")


def metric_column(table: pd.DataFrame, path: str, column: str, field: str) -> pd.Series:
    """A numeric column of a metric table (`TableError` naming the file, the recipe field and the columns)."""
    if column not in table.columns:
        raise TableError(f"{path}: {field}: no column {column!r} (columns: {', '.join(map(str, table.columns))})")
    values = pd.to_numeric(table[column], errors="coerce")
    if values.isna().all():
        raise TableError(f"{path}: {field}: column {column!r} has no numeric values")
    return values


def check_space(table: pd.DataFrame, path: str, space: Any, field: str, *, min_rows: int | None = None,
                sample: int = 2000) -> None:
    """Refuse a metric table whose arch strings are not architectures of `space` (a table of another space, or
    of other space options), before any trial looks one up.

    Args:
        table: the table, indexed by arch string in file order.
        path: where it came from, for the message.
        space: the recipe's search space.
        field: the recipe field naming the table.
        min_rows: None: every checked row must decode (lookups); N: at least N of them (a surrogate skips the rest).
        sample: rows checked (the first ones); decoding all of a 15,625-row table would take seconds.

    Raises:
        TableError: naming the table, the line of the first string that does not decode, and why.
    """
    first_bad, good = None, 0
    for i, string in enumerate(table.index[:sample]):
        try:
            space.decode(string)
            good += 1
        except ValueError as err:
            first_bad = first_bad or (i, string, err)
    if first_bad is None or (min_rows is not None and good >= min(min_rows, len(table))):
        return
    i, string, err = first_bad
    line = f"line {i + 2}" if not path.startswith(SYNTHETIC_PREFIX) and not path.endswith((".parquet", ".pq")) \
        else f"row {i + 1}"
    raise TableError(f"{path}: {field}: {line}: not an architecture of space {space.name!r} ({err}); is this a "
                     "table of another space or other space options?")


def lookup(values: pd.Series, where: str, arch: str) -> float:
    """The table's figure for `arch` (`KeyError` naming `where` the figure comes from when it has no row)."""
    try:
        return float(values.at[arch])
    except KeyError:
        raise KeyError(f"{arch!r} has no row in {where}") from None


def table_path(path: str) -> str:
    """`path` as the table loaders take it: a synthetic spec (checked) as is, a file as an absolute path (trials
    may run in another working directory)."""
    if path.startswith(SYNTHETIC_PREFIX):
        _parse_synthetic(path)
        return path
    return str(Path(path).expanduser().resolve())


def constraint_table(recipe: Any, lat: Any) -> str | None:
    """The metric table a ``source: table`` latency constraint reads: its own `table`, else the tabular
    evaluator's `path`, else None."""
    if lat.table:
        return table_path(lat.table)
    if recipe.evaluator.name == "tabular":
        return TabularOptions(**recipe.evaluator.options).path
    return None


# ---- the evaluator ---------------------------------------------------------------------------------------------
class TabularOptions(EvaluatorOptions):
    """Accuracy looked up in a metric table."""

    path: str = Field(description="CSV/Parquet file with an 'arch' column, or 'synthetic:nb201[:SEED]'")
    accuracy: str = Field("accuracy", description="column holding the accuracy to maximise")
    num_classes: PositiveInt = Field(10, description="classifier outputs of the exported network")

    @field_validator("path")
    @classmethod
    def _readable(cls, v: str) -> str:
        path = table_path(v)
        if not path.startswith(SYNTHETIC_PREFIX) and not Path(path).is_file():
            raise ValueError(f"metric table {v!r} not found")
        return path


@register_evaluator("tabular")
class TabularEvaluator(Evaluator):
    """Accuracy from a metric table: no model is built or trained (`trains` is False)."""

    Options = TabularOptions
    options: TabularOptions
    trains: ClassVar[bool] = False

    def __init__(self, options: TabularOptions, seed: int = 0):
        super().__init__(options, seed)
        self.table = read_metric_table(options.path)
        self.values = metric_column(self.table, options.path, options.accuracy, "evaluator.options.accuracy")

    def num_classes(self) -> int:
        return self.options.num_classes

    def estimate(self, arch: str) -> dict[str, float]:
        """The table's accuracy for `arch` (canonical string); `KeyError` when it has no row."""
        where = f"the metric table {self.options.path}"
        return {"accuracy": lookup(self.values, where, arch)}


class SurrogateOptions(TabularOptions):
    """An accuracy predictor fitted to a metric table (e.g. an earlier run's results.csv)."""

    n_estimators: PositiveInt = 300
    num_leaves: PositiveInt = 15


@register_evaluator("surrogate")
class SurrogateEvaluator(TabularEvaluator):
    """Accuracy predicted by a LightGBM regressor on the space's `encode` features, fitted to every row of a
    metric table whose arch decodes in the recipe's space (OFA's accuracy predictor, on your own data): the
    estimate for any architecture of the space, not only those in the table, without training a network."""

    Options = SurrogateOptions
    options: SurrogateOptions

    def bind(self, space: Any) -> SurrogateEvaluator:
        import lightgbm as lgb

        archs, y = [], []
        for string, acc in self.values.dropna().items():
            try:
                archs.append(space.decode(string))
            except ValueError:
                continue
            y.append(acc)
        if len(archs) < 10:
            raise TableError(f"{self.options.path}: evaluator.options.path: {len(archs)} rows decode in space "
                             f"{space.name!r}; the surrogate needs at least 10")
        self.space = space
        self.model = lgb.LGBMRegressor(n_estimators=self.options.n_estimators, num_leaves=self.options.num_leaves,
                                       learning_rate=0.05, min_child_samples=5, n_jobs=1, verbose=-1,
                                       random_state=self.seed).fit(space.encode(archs), np.asarray(y, float))
        return self

    def estimate(self, arch: str) -> dict[str, float]:
        return {"accuracy": float(self.model.predict(self.space.encode([self.space.decode(arch)]))[0])}


# ---- the synthetic NAS-Bench-201-structured table ----------------------------------------------------------
def _parse_synthetic(spec: str) -> tuple[str, int]:
    name, _, seed = spec.removeprefix(SYNTHETIC_PREFIX).partition(":")
    if name != "nb201" or (seed and not seed.isdigit()):
        raise TableError(f"unknown synthetic table {spec!r}; expected 'synthetic:nb201' or 'synthetic:nb201:SEED'")
    return name, int(seed or 0)


def _synthetic(spec: str) -> pd.DataFrame:
    return synthetic_nb201(_parse_synthetic(spec)[1]).set_index("arch")


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
