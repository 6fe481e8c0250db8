"""Profile manifests: one YAML file per profile version, describing where its latency figures come from.

Layout: ``<root>/<name>/<version>/manifest.yaml`` beside the table files it names. The built-in root is
`hardware_profiles/profiles/`; more roots can be listed in the ``HWNAS_PROFILE_PATH`` environment variable
(``os.pathsep``-separated). A profile is loaded by name (newest version) or as ``name@version``.

A finished profile records the SHA-256 of each table (``table_sha256``) so that a table damaged or changed after
it was written is refused before it is parsed (`verify_tables`); a profile still being measured has none, its
partial tables belong to the run that continues them. A manifest that cannot be read does not hide the others:
`discover` skips it and keeps its error (`broken`), which is raised only when that profile is asked for by name.
"""
from __future__ import annotations

import os
import re
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_serializer

from core.cli import read_yaml_mapping
from core.errors import InputError, sha256_file, verify_sha256
from core.io import atomic_write_text
from hardware_profiles.implementations import IMPLEMENTATIONS

BUILTIN_ROOT = Path(__file__).parent / "profiles"
Kind = Literal["measured", "simulated", "imported"]
# what measured a profile: a registered implementation (hardware_profiles.implementations), or none
Backend = Literal[tuple(dict.fromkeys(["onnxruntime-cpu", "torch-cuda", *IMPLEMENTATIONS.names(), "simulator",
                                       "none"]))]
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
TableName = Literal["blocks", "networks", "extra", "energy", "memory", "workspace"]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class ManifestError(InputError):
    """A manifest that cannot be used; the message names the file and the field."""


class Tables(BaseModel):
    """Table files of a profile, relative to its manifest."""

    model_config = ConfigDict(extra="forbid")

    blocks: str | None = Field(None, description="per-block latency: CSV or Parquet with a `key` column")
    networks: str | None = Field(None, description="whole-network latency: CSV or Parquet with an `arch` column")
    extra: str | None = Field(None, description="whole networks outside the space (random block definitions, timm "
                              "models): CSV or Parquet with `network` and `definition` (JSON) columns")
    energy: str | None = Field(None, description="energy per inference of networks (hardware_profiles.energy): CSV "
                               "or Parquet with `arch` and `energy_mj` columns")
    memory: str | None = Field(None, description="activation peak of networks at batch 1 (hardware_profiles.memory): "
                               "CSV or Parquet with `arch` and `activation_bytes` columns")
    workspace: str | None = Field(None, description="each layer of the space run alone on a GPU "
                                  "(hardware_profiles.memory --workspace): CSV or Parquet with `key`, `op` and "
                                  "`peak_bytes` (its eager inference peak at batch 1) columns, and "
                                  "`train_b<B>_bytes` (its largest cuDNN workspace in a training step at batch B)")

    @model_serializer(mode="wrap")
    def _without_missing_energy(self, handler):
        """Dumped without ``energy``, ``memory`` and ``workspace`` when there are none, as before they existed (so
        earlier versions read it)."""
        data = handler(self)
        for which in ("energy", "memory", "workspace"):
            if data.get(which) is None:
                data.pop(which, None)
        return data


class Manifest(BaseModel):
    """What a profile is and how its figures were obtained."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    version: PositiveInt = 1
    kind: Kind
    device: str
    runtime: str
    runtime_version: str = ""
    backend: Backend = "none"
    precision: Literal["fp32", "fp16", "bf16", "int8", "int4"] = "fp32"
    batch: PositiveInt = 1
    threads: int = Field(0, ge=0, description="CPU threads (0 = not a CPU runtime)")
    space: str | None = Field(None, description="search space the tables were built for")
    space_options: dict[str, Any] = Field(default_factory=dict)
    num_classes: PositiveInt | None = Field(None, description="classifier outputs of the networks measured")
    resolution: PositiveInt | None = Field(None, description="input resolution (None: several, see the space)")
    tables: Tables = Field(default_factory=Tables)
    table_sha256: dict[TableName, Sha256] = Field(
        default_factory=dict, description="SHA-256 of each final table (none while a measurement is unfinished)")
    how_measured: str = ""
    noise: dict[str, float] = Field(default_factory=dict, description="e.g. median relative spread (p90-p10)/p50")
    options: dict[str, Any] = Field(default_factory=dict, description="backend settings (e.g. channels_last)")
    machine: dict[str, Any] = Field(default_factory=dict)
    created: str = Field(default_factory=lambda: date.today().isoformat())
    sources: list[str] = Field(default_factory=list, description="citations for imported data")

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def table_path(self, folder: Path, which: TableName) -> Path | None:
        """Path of table `which` ("blocks", "networks" or "extra") beside the manifest in `folder`; None if it has
        none."""
        name = getattr(self.tables, which)
        return Path(folder) / name if name else None


def roots() -> list[Path]:
    """Folders searched for manifests: the built-in one, then those in HWNAS_PROFILE_PATH."""
    extra = [Path(p) for p in os.environ.get("HWNAS_PROFILE_PATH", "").split(os.pathsep) if p]
    return [BUILTIN_ROOT, *extra]


def read_manifest(path: Path) -> Manifest:
    """Load and validate one manifest file (`ManifestError` naming the file and field)."""
    data = read_yaml_mapping(path, "manifest", ManifestError)
    try:
        return Manifest(**data)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ManifestError(f"{path}: {field}: {first['msg']}".replace("\n", " ")) from None
    except TypeError as err:   # keys that are not strings
        raise ManifestError(f"{path}: cannot read manifest: {err}") from None


def write_manifest(manifest: Manifest, folder: Path) -> Path:
    """Write `manifest.yaml` into `folder` atomically."""
    text = yaml.safe_dump(manifest.model_dump(mode="json"), sort_keys=False)
    return atomic_write_text(Path(folder) / "manifest.yaml", text)


def attach_table(folder: Path, table, which: TableName, options: dict[str, Any]) -> Path:
    """`table` (a DataFrame of networks) as the profile's ``<which>.csv`` in `folder`, and the manifest naming it,
    with its hash and `options` (how it was measured) added to the manifest's options."""
    from hardware_profiles.tables import write_table

    manifest = read_manifest(Path(folder) / "manifest.yaml")
    path = write_table(table, Path(folder) / f"{which}.csv")
    setattr(manifest.tables, which, f"{which}.csv")
    manifest.options.update(options)
    manifest.table_sha256 = table_hashes(manifest, folder)
    write_manifest(manifest, folder)
    return path


def table_hashes(manifest: Manifest, folder: Path) -> dict[str, str]:
    """SHA-256 of each table the manifest names, as found in `folder` now (for a writer whose tables are final)."""
    paths = {which: manifest.table_path(folder, which) for which in ("blocks", "networks", "extra", "energy",
                                                                      "memory", "workspace")}
    return {which: sha256_file(path) for which, path in paths.items() if path is not None}


def verify_tables(manifest: Manifest, folder: Path,
                  which: tuple[TableName, ...] = ("blocks", "networks", "extra")) -> None:
    """Refuse a table whose SHA-256 differs from the recorded one (a manifest without hashes passes unchecked).

    Raises:
        IntegrityError: a table is missing, truncated or altered (the file, expected and found hashes named).
    """
    for name in which:
        path, expected = manifest.table_path(folder, name), manifest.table_sha256.get(name)
        if path is not None and expected:
            verify_sha256(path, expected, what=f"{name} table of profile {manifest.ref}")


def _scan() -> tuple[dict[str, dict[int, Path]], dict[str, dict[int, ManifestError]]]:
    """(readable, broken) manifests over every root; a later root overrides an earlier one for the same version.

    A broken manifest is filed under its folders' names (``<name>/<version>/manifest.yaml``): its own name field
    may be what cannot be read.
    """
    found: dict[str, dict[int, Path]] = {}
    broken: dict[str, dict[int, ManifestError]] = {}
    for root in roots():
        for path in sorted(root.glob("*/*/manifest.yaml")) if root.is_dir() else []:
            try:
                m = read_manifest(path)
            except ManifestError as err:
                name, folder = path.parent.parent.name, path.parent.name
                version = int(folder) if folder.isdigit() else 0
                broken.setdefault(name, {})[version] = err
                found.get(name, {}).pop(version, None)
                continue
            found.setdefault(m.name, {})[m.version] = path.parent
            broken.get(m.name, {}).pop(m.version, None)
    return found, broken


def discover() -> dict[str, dict[int, Path]]:
    """name -> version -> manifest folder, over every root (a later root overrides an earlier one).

    Manifests that cannot be read are left out (see `broken`), so one damaged profile does not hide the others.
    """
    return {name: versions for name, versions in _scan()[0].items() if versions}


def broken() -> list[ManifestError]:
    """The errors of the manifests `discover` skipped, one per profile version."""
    return [err for versions in _scan()[1].values() for err in versions.values()]


def resolve(ref: str) -> Path | None:
    """Folder of profile `name` (newest version) or `name@version`; None when there is none.

    Raises:
        ManifestError: the version asked for (or the newest, for a bare name) has a manifest that cannot be read.
    """
    name, _, version = ref.partition("@")
    found, bad = _scan()
    versions, errors = found.get(name, {}), bad.get(name, {})
    if version:
        if not version.isdigit():
            return None
        wanted = int(version)
    elif versions or errors:
        wanted = max([*versions, *errors])
    else:
        return None
    if wanted in errors:
        raise errors[wanted]
    return versions.get(wanted)


def check_profile_name(name: str, flag: str = "--profile") -> str:
    """A name a manifest accepts (it becomes a folder name too), or one `InputError` line naming `flag`."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise InputError(f"{flag}: {name!r} is not a profile name; expected lower-case letters, digits, '.', '_' "
                         "and '-', starting with a letter or digit")
    return name
