"""What every command line of the project shares to check its input: one `InputError` line naming the flag or the
file (and the line or field), printed by `core.errors.cli_entry` with exit status 2, never a traceback.

- `ArgParser`: argparse whose usage errors are `InputError`s (so ``main([...])`` returns 2 in-process too), and
  whose `parse_into` fills a command's settings dataclass: library code takes those settings, never argparse, so
  ``measure_profile(MeasureSettings(profile="p", space="mobilenet"))`` works as the command line does.
- `check_folder` / `check_output` (`core.io`'s): a folder to write into / a file to write, refused before any work
  is done.
- `check_range`: numeric flags below their minimum.
- `read_yaml_mapping` / `read_space_options`: YAML files of options, with the line of a syntax error.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml

from core.errors import InputError
from core.io import check_output  # noqa: F401  (a command's file output: one check, atomic_write's)

S = TypeVar("S")


class ArgParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are `InputError`s, so `cli_entry` prints them as one ``error:`` line
    (exit 2) and a caller of ``main([...])`` gets 2 back instead of a `SystemExit`."""

    def error(self, message: str):
        raise InputError(f"{message} (see {self.prog} --help)")

    def parse_into(self, settings: type[S], argv: list[str] | None = None) -> S:
        """Parse `argv` into the dataclass `settings`, whose fields are the flags (``--max-rows`` -> ``max_rows``)
        and whose defaults are the flags' defaults (the parser's own are not used: one place holds them)."""
        defaults = {}
        for f in dataclasses.fields(settings):
            if f.default_factory is not dataclasses.MISSING:
                defaults[f.name] = f.default_factory()
            elif f.default is not dataclasses.MISSING:
                defaults[f.name] = f.default
        self.set_defaults(**defaults)
        return settings(**vars(self.parse_args(argv)))


def check_range(args: Any, **minimum: float) -> None:
    """Refuse a numeric flag below its minimum: ``check_range(args, repeats=1)`` checks ``--repeats >= 1``."""
    for dest, low in minimum.items():
        value = getattr(args, dest)
        if value is not None and value < low:
            raise InputError(f"--{dest.replace('_', '-')}: expected a number >= {low:g}, got {value:g}")


def check_folder(path: str | Path, flag: str) -> Path:
    """`path` as a folder to write into (nothing is made): refuse it, naming the culprit, when it or a folder
    above it is a file."""
    path = Path(path)
    culprit = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if culprit == path:
        raise InputError(f"{flag}: {path} is a file; expected a folder")
    if culprit is not None:
        raise InputError(f"{flag}: {path}: cannot write here, {culprit} is a file, not a folder")
    return path


def read_yaml_mapping(path: str | Path, what: str, error: type[InputError] = InputError) -> dict[str, Any]:
    """The mapping in a YAML file (empty for an empty file), or one `error` line naming the file and, for
    malformed YAML, the line and column."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise error(f"{path}: not a UTF-8 text file ({err.reason} at byte {err.start})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise error(f"{path}: malformed YAML{where}: {getattr(err, 'problem', None) or 'cannot parse'}") from None
    except OSError as err:
        raise error(f"{path}: cannot read the {what} ({err.strerror or err})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{path}: (top level): expected a mapping ({what}), got {type(data).__name__}")
    return data


def read_space_options(path: str | Path | None) -> dict[str, Any] | None:
    """The mapping in a ``--space-options`` YAML file (None when no file is given).

    Raises:
        InputError: the file is missing, not YAML, or not a mapping of option names to values.
    """
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--space-options: {path}: {'is a folder' if path.is_dir() else 'not found'}; "
                         "expected a YAML file of the space's options")
    return read_yaml_mapping(path, "space options")
