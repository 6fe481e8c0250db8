"""The ``tabular`` and ``surrogate`` evaluators: accuracy read from a metric table (`nas.metric_tables`), or
predicted from one, instead of training.

The ``tabular`` evaluator reads a candidate's accuracy from one column; a latency constraint with ``source: table``
reads its latency from another (`nas.latency_sources`), so limits are checked before any "trial" is spent, exactly
as with predictors. The ``surrogate`` evaluator fits an accuracy predictor to a table's rows.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field, PositiveInt, field_validator

from nas.evaluation.base import Evaluator, EvaluatorOptions, register_evaluator
from nas.metric_tables import SYNTHETIC_PREFIX, TableError, lookup, metric_column, read_metric_table, table_path


def constraint_table(recipe: Any, lat: Any) -> str | None:
    """The metric table a ``source: table`` latency constraint reads: its own `table`, else the tabular
    evaluator's `path`, else None."""
    if lat.table:
        return table_path(lat.table)
    if recipe.evaluator.name == "tabular":   # the validated options, or validated here for a recipe not checked
        return (recipe.plugins.evaluator if recipe.plugins else TabularOptions(**recipe.evaluator.options)).path
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

    def dataset_record(self) -> dict[str, Any]:
        """The metric table the accuracy was read from (hashed; a synthetic table has no file)."""
        from core.errors import sha256_file

        o = self.options
        synthetic = o.path.startswith(SYNTHETIC_PREFIX)
        return {"name": f"metric table {o.path if synthetic else Path(o.path).name}",
                "sha256": None if synthetic else sha256_file(o.path),
                "split": f"column {o.accuracy!r} of the table (measured by whoever made it; see its README)"}

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
