"""Profile manifests: one YAML file per profile version, describing where its latency figures come from.

Layout: ``<root>/<name>/<version>/manifest.yaml`` beside the table files it names. The built-in root is
`hardware_profiles/profiles/`; more roots can be listed in the ``HWNAS_PROFILE_PATH`` environment variable
(``os.pathsep``-separated). A profile is loaded by name (newest version) or as ``name@version``.
"""
from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from nas.errors import InputError
from nas.io import atomic_write_text

BUILTIN_ROOT = Path(__file__).parent / "profiles"
Kind = Literal["measured", "simulated", "imported"]
Backend = Literal["onnxruntime-cpu", "torch-cuda", "simulator", "none"]


class ManifestError(InputError):
    """A manifest that cannot be used; the message names the file and the field."""


class Tables(BaseModel):
    """Table files of a profile, relative to its manifest."""

    model_config = ConfigDict(extra="forbid")

    blocks: str | None = Field(None, description="per-block latency: CSV or Parquet with a `key` column")
    networks: str | None = Field(None, description="whole-network latency: CSV or Parquet with an `arch` column")


class Manifest(BaseModel):
    """What a profile is and how its figures were obtained."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    version: PositiveInt = 1
    kind: Kind
    device: str
    runtime: str
    runtime_version: str = ""
    backend: Backend = "none"
    precision: Literal["fp32", "fp16", "bf16", "int8"] = "fp32"
    batch: PositiveInt = 1
    threads: int = Field(0, ge=0, description="CPU threads (0 = not a CPU runtime)")
    space: str | None = Field(None, description="search space the tables were built for")
    space_options: dict[str, Any] = Field(default_factory=dict)
    num_classes: PositiveInt | None = Field(None, description="classifier outputs of the networks measured")
    resolution: PositiveInt | None = Field(None, description="input resolution (None: several, see the space)")
    tables: Tables = Field(default_factory=Tables)
    how_measured: str = ""
    noise: dict[str, float] = Field(default_factory=dict, description="e.g. median relative spread (p90-p10)/p50")
    options: dict[str, Any] = Field(default_factory=dict, description="backend settings (e.g. channels_last)")
    machine: dict[str, Any] = Field(default_factory=dict)
    created: str = Field(default_factory=lambda: date.today().isoformat())
    sources: list[str] = Field(default_factory=list, description="citations for imported data")

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def roots() -> list[Path]:
    """Folders searched for manifests: the built-in one, then those in HWNAS_PROFILE_PATH."""
    extra = [Path(p) for p in os.environ.get("HWNAS_PROFILE_PATH", "").split(os.pathsep) if p]
    return [BUILTIN_ROOT, *extra]


def read_manifest(path: Path) -> Manifest:
    """Load and validate one manifest file (`ManifestError` naming the file and field)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
        return Manifest(**(data or {}))
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ManifestError(f"{path}: {field}: {first['msg']}") from None
    except (OSError, yaml.YAMLError, TypeError) as err:
        raise ManifestError(f"{path}: cannot read manifest: {err}") from None


def write_manifest(manifest: Manifest, folder: Path) -> Path:
    """Write `manifest.yaml` into `folder` atomically."""
    text = yaml.safe_dump(manifest.model_dump(mode="json"), sort_keys=False)
    return atomic_write_text(Path(folder) / "manifest.yaml", text)


def discover() -> dict[str, dict[int, Path]]:
    """name -> version -> manifest folder, over every root (a later root overrides an earlier one)."""
    found: dict[str, dict[int, Path]] = {}
    for root in roots():
        for path in sorted(root.glob("*/*/manifest.yaml")) if root.is_dir() else []:
            m = read_manifest(path)
            found.setdefault(m.name, {})[m.version] = path.parent
    return found


def resolve(ref: str) -> Path | None:
    """Folder of profile `name` (newest version) or `name@version`; None when there is none."""
    name, _, version = ref.partition("@")
    versions = discover().get(name, {})
    if not versions:
        return None
    if version:
        return versions.get(int(version)) if version.isdigit() else None
    return versions[max(versions)]
