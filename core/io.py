"""Atomic file writes: a crash never leaves half a file behind (temp file in the same folder + `os.replace`).

A destination that cannot be written (its folder is a file, no permission, the path is a folder) is an
`OutputError` naming the path, so a command line reports it in one line.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any
from collections.abc import Callable

from core.errors import InputError, IntegrityError, sha256_file, verify_sha256

_UMASK = os.umask(0)
os.umask(_UMASK)


class OutputError(InputError):
    """A destination path that cannot be written."""


def check_output(path: str | Path, flag: str = "") -> Path:
    """`path` as a file to write, checked before any work is done: an `OutputError` (naming `flag`, if given) when
    it is a folder or a folder above it is a file."""
    path = Path(path)
    name = f"{flag}: " if flag else ""
    if path.is_dir():
        raise OutputError(f"{name}{path} is a folder; expected a file path to write")
    culprit = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if culprit is not None:
        raise OutputError(f"{name}{path}: cannot write here, {culprit} is a file, not a folder")
    return path


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` then move the temp file onto `path` in one step.

    Args:
        path: final location (its folder is created).
        write: writes the complete file at the path it is given.

    Raises:
        OutputError: the folder cannot be made or written, or `path` is a folder.
    """
    path = check_output(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise OutputError(f"{path}: cannot write here ({err.strerror or err})") from None
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_UMASK)   # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """Write `data` as indented JSON atomically (NaN is written as null)."""
    return atomic_write_text(path, json.dumps(nan_to_none(data), indent=2, sort_keys=False) + "\n")


def nan_to_none(data: Any) -> Any:
    """`data` with NaN floats replaced by None, as JSON files hold them."""
    if isinstance(data, float) and data != data:
        return None
    if isinstance(data, dict):
        return {k: nan_to_none(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [nan_to_none(v) for v in data]
    return data


SUMS = "SHA256SUMS"


def write_sha256sums(folder: str | Path) -> Path:
    """Write ``folder/SHA256SUMS`` (the format ``sha256sum -c`` reads) over every other file in `folder` and its
    sub-folders (paths relative to it, e.g. ``plan_local-cpu/artifact/model.onnx``; hidden ones, such as a killed
    write's temporary, left out), so a folder handed to another machine or user can be checked there, with this
    project or with coreutils."""
    folder = Path(folder)
    files = sorted(f for f in folder.rglob("*") if f.is_file() and f != folder / SUMS
                   and not any(part.startswith(".") for part in f.relative_to(folder).parts))   # no temporaries
    lines = [f"{sha256_file(f)}  {f.relative_to(folder).as_posix()}" for f in files]
    return atomic_write_text(folder / SUMS, "\n".join(lines) + "\n")


def verify_sha256sums(folder: str | Path, names: list[str] | None = None) -> None:
    """Check the files of `folder` (all listed, or just `names`) against its SHA256SUMS; a folder without one
    (written before checksums) passes.

    Raises:
        IntegrityError: a listed file is missing or differs, naming it, expected and found.
    """
    folder = Path(folder)
    sums = folder / SUMS
    if not sums.is_file():
        return
    try:
        listed = dict(reversed(line.split(maxsplit=1)) for line in sums.read_text().splitlines() if line.strip())
    except (ValueError, UnicodeDecodeError) as err:
        raise IntegrityError(f"{sums}: not a SHA256SUMS file ({err})") from None
    for name in names if names is not None else listed:
        if name in listed:
            verify_sha256(folder / name, listed[name].strip(), what=f"listed in {SUMS}")
