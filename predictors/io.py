"""Saving and loading predictors: LightGBM text models plus JSON, never pickle.

A model folder holds `meta.json` (estimator, hyper-parameters, space, the profile's name, version, runtime and
machine, feature schemas, training-data hash, FLOPs baseline, training archs, the generic model's residual
interval, the SHA-256 of every other file, and `meta_sha256`, the digest of its own content), `blocks.json`
(per-block costs, overhead and the block model's analytic prior), `block_model.txt`, `network_model.txt` and
`generic_model.txt` (LightGBM text dumps).

Folders travel between machines and a truncated LightGBM text file can crash the process that parses it, so `load`
checks `meta.json` field by field, then the recorded checksums, and only then parses anything else; every refusal
is one `PredictorFileError` line naming the file and what differs. `save` removes `meta.json` first and writes it
last, so a save that is killed half way leaves a folder `load` refuses (no `meta.json`, or checksums that do not
match), never a silently mixed one.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from core.cli import check_folder
from core.errors import InputError, IntegrityError, json_sha256, sha256_file, verify_sha256
from core.io import OutputError, atomic_write, atomic_write_json, atomic_write_text
from predictors.features import BLOCK_FEATURES, network_feature_names
from predictors.models import FlopsLinear, LGBMLatencyPredictor
from search_spaces import make_space

FORMAT = "hwnas-latency-predictor"
FORMAT_VERSION = 3   # 2: meta.json records the SHA-256 of every other file; 3: a generic network model
# the estimator's constructor keywords that meta.json records (the block table is saved as blocks.json instead)
PARAMS = tuple(k for k in LGBMLatencyPredictor._get_param_names() if k not in ("block_table", "overhead_ms"))
FILES = {"block_model.txt": "the block model", "network_model.txt": "the network correction",
         "generic_model.txt": "the generic network correction", "blocks.json": "the block costs"}
CORRECTION_FILES = {"network_model.txt", "generic_model.txt"}   # present exactly when params.correction is on
META_FIELDS = {   # field of meta.json -> the type it must have (declarative: `_check_meta` reads it)
    "format": str, "format_version": int, "estimator": str, "params": dict, "files": dict, "block_feature_schema": list,
    "network_feature_schema": list, "flops_linear": list, "train_archs": list, "target": str,
    "profile": (dict, type(None)),
}
ESTIMATORS = {cls.__name__: cls for cls in (LGBMLatencyPredictor,)}   # what meta.json's `estimator` may name
# meta.json fields about the training rows: computed by `save` from them, carried over by a re-save of a loaded model
TRAINING_FIELDS = ("profile", "target", "training_data_sha256", "n_train", "flops_linear", "train_archs")
# the fields `save` writes from the model itself; anything else in a loaded meta.json is an `extra` entry
MODEL_FIELDS = ("format", "format_version", "estimator", "params", "block_feature_schema", "network_feature_schema",
                "files", "generic_interval", "block_interval", "meta_sha256")


class PredictorFileError(InputError):
    """A model folder that cannot be used as asked."""


class PredictorIntegrityError(PredictorFileError, IntegrityError):
    """A model folder file whose SHA-256 is not the one `save` recorded (truncated, altered, missing)."""


def data_hash(archs: list[str], y: np.ndarray) -> str:
    """sha256 of the training rows (arch and target), order-independent."""
    rows = sorted(f"{a}\t{float(v):.9g}" for a, v in zip(archs, y))
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def output_folder(folder: Path, flag: str = "") -> Path:
    """`folder`, made if missing; an `OutputError` (naming `flag` if given) when it is a file or cannot be made."""
    folder = check_folder(folder, flag or "folder")
    name = f"{flag}: " if flag else ""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{name}{folder}: cannot make the folder ({err.strerror or err})") from None
    return folder


def save(model: LGBMLatencyPredictor, folder: Path, *, archs: list[str] | None = None, y: np.ndarray | None = None,
         profile: dict[str, Any] | None = None, target: str = "median_ms",
         extra: dict[str, Any] | None = None) -> Path:
    """Write `model` into `folder` (atomic per file, `meta.json` last, with the SHA-256 of the other files), with
    the FLOPs-linear baseline fitted on the training rows `archs`, `y` (`predictors.evaluate` reports it); `extra`
    entries are added to meta.json. A model `load` returned is saved without them: its training fields and extra
    entries come from the folder it was loaded from (`saved_meta_`; `extra` adds to them), so saving it again
    writes the same files.

    Raises:
        OutputError: `folder` is a file or cannot be written.
        ValueError: no training rows for a model that was not loaded from a folder.
    """
    if archs is None or y is None:
        loaded = getattr(model, "saved_meta_", None)
        if loaded is None:
            raise ValueError("save: a predictor fitted here needs its training rows (archs=..., y=...)")
        training = {k: loaded[k] for k in TRAINING_FIELDS}
        extra = {**{k: v for k, v in loaded.items() if k not in TRAINING_FIELDS and k not in MODEL_FIELDS},
                 **(extra or {})}
    else:
        flops = FlopsLinear(model.space, model.space_options, model.num_classes).fit(archs, y)
        training = {"profile": profile, "target": target, "training_data_sha256": data_hash(archs, y),
                    "n_train": len(archs), "flops_linear": list(flops.coef_), "train_archs": list(archs)}
    folder = output_folder(folder)
    (folder / "meta.json").unlink(missing_ok=True)   # the folder is incomplete until meta.json is back
    for name in (*FILES, "meta.json"):   # temp files of a save that was killed (atomic_write could not clean up)
        for stale in folder.glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)
    atomic_write(folder / "block_model.txt", lambda t: model.block_model_.save_model(str(t)))
    for name, part in (("network_model.txt", "network_model_"), ("generic_model.txt", "generic_model_")):
        if model.correction:
            booster = getattr(model, part)
            atomic_write(folder / name, lambda t, b=booster: b.save_model(str(t)))
        else:
            (folder / name).unlink(missing_ok=True)   # a stale one from an earlier save
    atomic_write_json(folder / "blocks.json", {"overhead_ms": model.lookup_.overhead_,
                                               "costs_ms": model.lookup_.costs_, "block_prior": model.block_prior_})
    written = [n for n in FILES if (folder / n).is_file()]
    meta = _json_value({
        "format": FORMAT, "format_version": FORMAT_VERSION, "estimator": type(model).__name__,
        "params": {k: getattr(model, k) for k in PARAMS}, **training,
        "block_feature_schema": list(BLOCK_FEATURES), "network_feature_schema": network_feature_names(model.space_),
        "files": {n: sha256_file(folder / n) for n in written},
        "generic_interval": getattr(model, "generic_interval_", None) if model.correction else None,
        "block_interval": getattr(model, "block_interval_", None),
        **(extra or {})})
    meta["meta_sha256"] = meta_digest(meta)
    atomic_write_text(folder / "meta.json", json.dumps(meta, indent=2) + "\n")
    return folder


def _json_value(data: Any) -> Any:
    """`data` as it reads back from JSON (NaN and infinities become null: JSON has neither), so the digest
    `save` records is the one `load` computes."""
    return json.loads(json.dumps(data), parse_constant=lambda _: None)


def meta_digest(meta: dict[str, Any]) -> str:
    """SHA-256 of meta.json's content (every field but ``meta_sha256``, keys sorted, no whitespace): any edit of
    a value is caught, while reformatting the file is not an edit."""
    return json_sha256({k: v for k, v in meta.items() if k != "meta_sha256"})


def load(folder: Path, *, profile: str | None = None) -> tuple[LGBMLatencyPredictor, dict[str, Any]]:
    """A saved predictor and its metadata, checked before anything is parsed.

    Args:
        folder: the model folder.
        profile: if given (``name`` or ``name@version``), the model must have been trained for it.

    Raises:
        PredictorFileError: not a folder or no meta.json, a meta.json that is damaged or of another format or
            version, missing fields, an unknown space, a feature schema this code does not produce, another
            profile; `PredictorIntegrityError` (a subclass) when a file is missing or its SHA-256 differs.
    """
    folder = Path(folder)
    meta = _read_meta(folder)
    model = _model_from_meta(folder, meta)
    _check_profile(folder, meta, profile)
    for name, digest in meta["files"].items():   # before LightGBM parses anything
        try:
            verify_sha256(folder / name, digest, what=FILES[name])
        except IntegrityError as err:
            raise PredictorIntegrityError(str(err)) from None
    interval = meta.get("generic_interval")
    if model.correction and not (isinstance(interval, list) and len(interval) == 2
                                 and all(isinstance(v, float) for v in interval)):
        raise PredictorFileError(f"{folder / 'meta.json'}: generic_interval: expected two numbers, got "
                                 f"{interval!r}; train the predictor again")
    block = meta.get("block_interval")   # absent from predictors trained before it existed: no widening
    if block is not None and not (isinstance(block, list) and len(block) == 2
                                  and all(isinstance(v, float) for v in block)):
        raise PredictorFileError(f"{folder / 'meta.json'}: block_interval: expected two numbers, got {block!r}; "
                                 "train the predictor again")
    return _fill(folder, model, interval if model.correction else None, block, meta), meta


def load_flag(flag: str, folder: str | Path) -> tuple[LGBMLatencyPredictor, dict[str, Any]]:
    """`load` for a command line: a refused folder is one `InputError` line that starts with the flag naming it."""
    try:
        return load(Path(folder))
    except PredictorFileError as err:
        raise InputError(f"{flag}: {err}") from None


def _read_meta(folder: Path) -> dict[str, Any]:
    """meta.json, parsed and with every field `load` relies on present and of the right type."""
    path = folder / "meta.json"
    if not folder.is_dir():
        raise PredictorFileError(f"{folder}: not a predictor folder (no such folder)")
    if not path.is_file():
        raise PredictorFileError(f"{folder}: not a predictor folder (no meta.json: not written by predictors.train, "
                                 "or a save that did not finish; train it again)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PredictorFileError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
                                 "the file is damaged, train the predictor again") from None
    except (OSError, UnicodeDecodeError) as err:
        raise PredictorFileError(f"{path}: cannot read it ({err})") from None
    _check_meta(path, meta)
    return meta


def _check_meta(path: Path, meta: Any) -> None:
    """meta.json's format and version, its own digest (an edited file is refused before any value is used), then
    every field `load` and the commands read, present and of the right type."""
    if not isinstance(meta, dict):
        raise PredictorFileError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise PredictorFileError(f"{path}: format: expected {FORMAT!r}, got {meta.get('format')!r}")
    version = meta.get("format_version")
    if version == 1:
        raise PredictorFileError(f"{path}: saved by an older version without file checksums; train the predictor "
                                 "again (python -m predictors.train ... --out FOLDER) to re-save it")
    if version != FORMAT_VERSION:
        raise PredictorFileError(f"{path}: format_version: expected {FORMAT_VERSION}, got {version!r}")
    recorded, found = meta.get("meta_sha256"), meta_digest(meta)
    if recorded is None:
        raise PredictorFileError(f"{path}: no field 'meta_sha256'; the file is damaged, train the predictor again")
    if recorded != found:
        raise PredictorFileError(f"{path}: content changed after it was written (meta_sha256: expected "
                                 f"{str(recorded)[:16]}..., found {found[:16]}...); train the predictor again")
    for key, kind in META_FIELDS.items():
        if key not in meta:
            raise PredictorFileError(f"{path}: no field {key!r}; the file is damaged, train the predictor again")
        if not isinstance(meta[key], kind):
            raise PredictorFileError(f"{path}: {key}: expected {_kind(kind)}, got {type(meta[key]).__name__}")
    missing = [k for k in PARAMS if k not in meta["params"]]
    if missing:
        raise PredictorFileError(f"{path}: params: no {missing[0]!r}; the file is damaged, train the predictor again")
    _check_files(path, meta)


def _kind(kind) -> str:
    names = {dict: "an object", list: "a list", str: "a string", int: "an integer", type(None): "null"}
    return " or ".join(names[k] for k in (kind if isinstance(kind, tuple) else (kind,)))


def _check_files(path: Path, meta: dict[str, Any]) -> None:
    """`files` must name exactly the files this model has (no others: a name is a path inside the folder)."""
    files = meta["files"]
    expected = {"block_model.txt", "blocks.json"} | (CORRECTION_FILES if meta["params"]["correction"] else set())
    unknown = sorted(set(files) - expected)
    if unknown:
        raise PredictorFileError(f"{path}: files: unexpected entry {unknown[0]!r} "
                                 f"(expected {', '.join(sorted(expected))})")
    if set(files) != expected:
        raise PredictorFileError(f"{path}: files: no checksum of {sorted(expected - set(files))[0]}; the file is "
                                 "damaged, train the predictor again")
    bad = [n for n, d in files.items() if not (isinstance(d, str) and len(d) == 64)]
    if bad:
        raise PredictorFileError(f"{path}: files.{bad[0]}: expected a SHA-256 (64 hex digits), got {files[bad[0]]!r}")


def _model_from_meta(folder: Path, meta: dict[str, Any]) -> LGBMLatencyPredictor:
    """An unfitted predictor with meta.json's parameters, refused if this code computes other features, or if
    its space cannot read the archs it was trained on (meta.json edited to another space)."""
    path = folder / "meta.json"
    params = meta["params"]
    space = make_space(params["space"], params["space_options"], params["num_classes"], source=f"{path}: params",
                       name_field=f"{path}: params.space", error=PredictorFileError)
    if meta["block_feature_schema"] != list(BLOCK_FEATURES):
        raise PredictorFileError(f"{path}: block_feature_schema: the model was trained on other block "
                                 "features than this version computes; retrain it")
    estimator = ESTIMATORS.get(meta["estimator"])
    if estimator is None:
        raise PredictorFileError(f"{path}: estimator: expected one of {', '.join(ESTIMATORS)}, got "
                                 f"{meta['estimator']!r}")
    try:
        model = estimator(**params)
    except TypeError as err:
        raise PredictorFileError(f"{path}: params: {err}") from None
    if meta["network_feature_schema"] != network_feature_names(space):
        raise PredictorFileError(f"{path}: network_feature_schema: does not match space "
                                 f"{model.space!r} as configured; retrain the model")
    for arch in meta["train_archs"][:5]:
        try:
            space.decode(str(arch))
        except ValueError as err:
            raise PredictorFileError(f"{path}: train_archs: not archs of space {model.space!r} as configured "
                                     f"({err}); the file was changed after it was written") from None
    return model


def _check_profile(folder: Path, meta: dict[str, Any], profile: str | None) -> None:
    if profile is None:
        return
    got = meta.get("profile") or {}
    name, _, version = profile.partition("@")
    if got.get("name") != name or (version and str(got.get("version")) != version):
        raise PredictorFileError(f"{folder}/meta.json: profile: trained for "
                                 f"{got.get('name')}@{got.get('version')}, not {profile}")


def _fill(folder: Path, model: LGBMLatencyPredictor, generic_interval: list[float] | None,
          block_interval: list[float] | None, meta: dict[str, Any]) -> LGBMLatencyPredictor:
    """The fitted parts, from files whose checksums were verified (so a parse failure here is a bug, not input)."""
    import lightgbm as lgb

    blocks = json.loads((folder / "blocks.json").read_text())
    booster = lambda name: lgb.Booster(model_file=str(folder / name)) if model.correction else None  # noqa: E731
    return model.set_fitted(blocks["costs_ms"], blocks["overhead_ms"], blocks["block_prior"],
                            lgb.Booster(model_file=str(folder / "block_model.txt")),
                            booster("network_model.txt"), booster("generic_model.txt"), generic_interval,
                            block_interval, saved=meta)
