"""Saving and loading predictors: LightGBM text models plus JSON, never pickle.

A model folder holds `meta.json` (estimator, hyper-parameters, space, profile name and version, feature schemas,
training-data hash, FLOPs baseline, training archs), `blocks.json` (per-block costs and overhead), `block_model.txt`
and `network_model.txt` (LightGBM text dumps). Loading checks the feature schemas against this code and, when
asked, the profile, and refuses a mismatch with a message naming the folder and what differs.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from nas.errors import InputError
from nas.io import atomic_write, atomic_write_json
from predictors.features import BLOCK_FEATURES, network_feature_names
from predictors.models import FlopsLinear, LGBMLatencyPredictor

FORMAT = "hwnas-latency-predictor"
PARAMS = ("space", "space_options", "num_classes", "n_estimators", "learning_rate", "num_leaves",
          "min_child_samples", "block_estimators", "n_folds", "correction", "seed")


class PredictorFileError(InputError):
    """A model folder that cannot be used as asked."""


def data_hash(archs: list[str], y: np.ndarray) -> str:
    """sha256 of the training rows (arch and target), order-independent."""
    rows = sorted(f"{a}\t{float(v):.9g}" for a, v in zip(archs, y))
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def save(model: LGBMLatencyPredictor, folder: Path, *, archs: list[str], y: np.ndarray,
         profile: dict[str, Any] | None = None, target: str = "median_ms",
         extra: dict[str, Any] | None = None) -> Path:
    """Write `model` into `folder` (atomic per file), with the FLOPs-linear baseline fitted on the same training
    rows (`predictors.evaluate` reports it); `extra` entries are added to meta.json."""
    flops_coef = list(FlopsLinear(model.space, model.space_options, model.num_classes).fit(archs, y).coef_)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "block_model.txt", lambda t: model.block_model_.booster_.save_model(str(t)))
    if model.correction:
        atomic_write(folder / "network_model.txt", lambda t: model.network_model_.booster_.save_model(str(t)))
    atomic_write_json(folder / "blocks.json", {"overhead_ms": model.lookup_.overhead_, "costs_ms": model.lookup_.costs_})
    atomic_write_json(folder / "meta.json", {
        "format": FORMAT, "format_version": 1, "estimator": type(model).__name__,
        "params": {k: getattr(model, k) for k in PARAMS}, "profile": profile, "target": target,
        "block_feature_schema": list(BLOCK_FEATURES), "network_feature_schema": network_feature_names(model.space_),
        "training_data_sha256": data_hash(archs, y), "n_train": len(archs), "flops_linear": flops_coef,
        "train_archs": list(archs), **(extra or {})})
    return folder


def load(folder: Path, *, profile: str | None = None) -> tuple[LGBMLatencyPredictor, dict[str, Any]]:
    """A saved predictor and its metadata.

    Args:
        folder: the model folder.
        profile: if given (``name`` or ``name@version``), the model must have been trained for it.

    Raises:
        PredictorFileError: missing files, another format, a feature schema this code does not produce, or
            another profile.
    """
    import lightgbm as lgb

    folder = Path(folder)
    try:
        meta = json.loads((folder / "meta.json").read_text())
        blocks = json.loads((folder / "blocks.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise PredictorFileError(f"{folder}: not a predictor folder ({err})") from None
    if meta.get("format") != FORMAT:
        raise PredictorFileError(f"{folder}/meta.json: format: expected {FORMAT!r}, got {meta.get('format')!r}")
    if meta["block_feature_schema"] != list(BLOCK_FEATURES):
        raise PredictorFileError(f"{folder}/meta.json: block_feature_schema: the model was trained on other block "
                                 "features than this version computes; retrain it")
    model = LGBMLatencyPredictor(**meta["params"])
    if meta["network_feature_schema"] != network_feature_names(model.space_):
        raise PredictorFileError(f"{folder}/meta.json: network_feature_schema: does not match space "
                                 f"{model.space!r} as configured; retrain the model")
    if profile is not None:
        got = meta.get("profile") or {}
        name, _, version = profile.partition("@")
        if got.get("name") != name or (version and str(got.get("version")) != version):
            raise PredictorFileError(f"{folder}/meta.json: profile: trained for "
                                     f"{got.get('name')}@{got.get('version')}, not {profile}")
    from predictors.models import LookupSum

    model.lookup_ = LookupSum(model.space, model.space_options, model.num_classes)
    model.lookup_.costs_, model.lookup_.overhead_ = blocks["costs_ms"], blocks["overhead_ms"]
    model.block_model_ = lgb.Booster(model_file=str(folder / "block_model.txt"))
    if model.correction:
        model.network_model_ = lgb.Booster(model_file=str(folder / "network_model.txt"))
    return model, meta
