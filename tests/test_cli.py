"""Every `python -m` entry point of the project: one error path (`core.errors.cli_entry`), argparse usage errors as
one line with exit status 2, and a `--help` that explains every flag."""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from core.cli import ArgParser

from conftest import REPO

COMMANDS = ["nas.run", "predictors.train", "predictors.evaluate", "predictors.predict", "hardware_profiles.measure",
            "hardware_profiles.cost", "hardware_profiles.importer", "nas.train"]


@pytest.fixture
def flags(monkeypatch) -> list[tuple[tuple, str | None]]:
    """(names, help text) of every argument added to a `core.cli.ArgParser` while the test runs."""
    added: list[tuple[tuple, str | None]] = []
    real = ArgParser.add_argument

    def recording(self, *names, **kwargs):
        added.append((names, kwargs.get("help")))
        return real(self, *names, **kwargs)

    monkeypatch.setattr(ArgParser, "add_argument", recording)
    return added


@pytest.mark.parametrize("name", COMMANDS)
def test_help_describes_every_flag(name, flags, capsys):
    with pytest.raises(SystemExit) as done:
        importlib.import_module(name).main(["--help"])
    assert done.value.code == 0
    shown = capsys.readouterr().out
    assert len(flags) >= 3, f"{name} does not build its parser with core.cli.ArgParser"
    for names, text in flags:
        assert text and len(text) > 10, f"{name} {names}: no help text"
        assert names[-1] in shown


def test_zoo_subcommands_describe_every_flag(flags, capsys):
    from nas.zoo.__main__ import main

    shown = ""
    for sub in ("release", "verify", "list"):
        with pytest.raises(SystemExit) as done:
            main([sub, "--help"])
        assert done.value.code == 0
        shown += capsys.readouterr().out
    assert len(flags) >= 3 * 9
    for names, text in flags:
        assert names[-1] in shown
        assert text and len(text) > 10, f"nas.zoo {names}: no help text"


@pytest.mark.parametrize("name", COMMANDS + ["nas.zoo.__main__"])
def test_usage_errors_and_input_errors_share_one_path(name, capsys):
    main = importlib.import_module(name).main
    assert hasattr(main, "__wrapped__"), f"{name}.main is not wrapped by core.errors.cli_entry"
    assert main(["--no-such-flag"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert "unrecognized arguments: --no-such-flag" in err or "arguments are required" in err, err


def test_a_shell_gets_exit_status_2_and_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "predictors.predict", "--model", str(tmp_path / "none"),
                           "--arch", "x"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and str(tmp_path / "none") in proc.stderr
