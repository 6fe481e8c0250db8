"""Errors a user can act on, and the one way every command line reports them.

Library code raises `InputError` (or one of its subclasses: `RecipeError`, `PredictorFileError`, `ManifestError`,
`TableError`, ...) with a one-line message that names the file (and the line, column or field) and what was
expected, e.g. ``runs/t.csv: line 7, column 'ms': 'fast' is not a number``. Only entry points format them:
`cli_entry` wraps a command's ``main`` so such an error prints ``error: <message>`` on stderr and exits with
status 2. Anything else is a bug in this project and keeps its traceback, so it can be reported.

`IntegrityError` is the refusal of a file whose SHA-256 does not match the one recorded when it was written
(predictor folders, profile tables, a run's ledger): files travel between machines and users, and a damaged
LightGBM text model can crash the process that parses it, so checksums are verified before anything reads them.
"""
from __future__ import annotations

import functools
import hashlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


class InputError(ValueError):
    """Bad user input (a file, a field, a value, a path); the message is one line naming it."""


class IntegrityError(InputError):
    """A file whose content is not what was recorded when it was written (truncated, altered or replaced)."""


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_sha256(root: str | Path) -> str:
    """Hex SHA-256 of a file, or of a folder's content: every file's path relative to the folder and its bytes, in
    sorted order (a renamed, added, removed or altered file changes it; the folder's location and file times do
    not). What a model card records of the dataset it was trained on."""
    root = Path(root)
    if root.is_file():
        return sha256_file(root)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + sha256_file(f).encode() + b"\n")
    return h.hexdigest()


def json_sha256(data: object) -> str:
    """Hex SHA-256 of `data`'s canonical JSON (keys sorted, no whitespace): the digest a JSON file records of its
    own content, which survives reformatting the file but not an edited value."""
    import json

    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def verify_sha256(path: str | Path, expected: str, *, what: str = "") -> None:
    """Refuse `path` unless its SHA-256 is `expected`.

    Raises:
        IntegrityError: the file is missing or its checksum differs (expected and found are both named).
    """
    path = Path(path)
    if not path.is_file():
        raise IntegrityError(f"{path}: missing{f' ({what})' if what else ''}; the folder is incomplete")
    found = sha256_file(path)
    if found != expected:
        raise IntegrityError(f"{path}: SHA-256 mismatch{f' ({what})' if what else ''}: expected "
                             f"{expected[:16]}..., found {found[:16]}...; the file was damaged or changed "
                             "after it was written")


def cli_entry(main: Callable[..., int]) -> Callable[..., int]:
    """Decorate a command's ``main(argv=None) -> int``: an `InputError` prints one ``error:`` line on stderr and
    returns 2; everything else passes through (argparse's own usage errors also exit with 2)."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except InputError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2

    return wrapped


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def format_validation_error(source: str, err: Any, prefix: str = "") -> str:
    """One line naming the file, the first failing field of pydantic `ValidationError` `err`, what was expected
    and what was given."""
    first = err.errors()[0]
    field = _loc(tuple(p for p in first["loc"] if p not in ("function-after", "function-before")))
    field = ".".join(p for p in (prefix, field) if p) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    given = first.get("input")
    shown = "" if first["type"] in ("missing", "value_error") or isinstance(given, dict) else f" (got {given!r})"
    return f"{source}: {field}: {msg}{shown}".replace("\n", " ")
