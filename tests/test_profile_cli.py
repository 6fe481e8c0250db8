"""The hardware-profile command lines under bad input, damaged profile files and killed jobs.

Every bad input to `measure`, `importer` and `cost` is exit status 2 and exactly one ``error:`` line naming the
file (and line or field) or the flag, never a traceback; a profile table that is not the one its manifest recorded
is refused in one line; a damaged manifest fails only its own profile; a `measure` killed at any point and re-run
with the same command keeps every finished row byte for byte and measures nothing twice.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from core.errors import InputError, IntegrityError, sha256_file
from hardware_profiles import get_profile, profile_names
from hardware_profiles import cost, importer, measure
from hardware_profiles.manifest import BUILTIN_ROOT, Manifest, ManifestError, broken, read_manifest, write_manifest
from hardware_profiles.backends import OnnxCpuBackend
from search_spaces import get_space

from conftest import REPO

X86_VERSION = str(max(int(p.name) for p in (BUILTIN_ROOT / "x86-ort-t1").iterdir() if p.name.isdigit()))
MOBILENET_ARCH = "r224_w1|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3"
SMALL_SPACE = {"resolutions": [32], "widths": [0.5], "kernels": [3, 5], "expansions": [3], "se": [False, True],
               "stages": [{"channels": 16, "stride": 2, "depths": [1, 2]}], "last_channels": 0, "num_features": 64}
NB201 = ["--space", "nb201", "--sample", "6", "--networks", "3", "--warmup", "1", "--repeats", "3",
         "--attempts", "1", "--flush-seconds", "0"]


def one_error(main, argv: list[str], capsys) -> str:
    """Run `main(argv)` in-process; it must return 2 and print exactly one ``error:`` line and no traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def files(tmp_path) -> Path:
    """Small input files, good and bad, shared by the batteries below."""
    t = tmp_path
    (t / "a_folder").mkdir()
    (t / "a_file").write_text("x\n")
    (t / "empty.txt").write_text("")
    (t / "comments.txt").write_text("# only a comment\n\n")
    (t / "archs.txt").write_text(f"# archs\n\n{MOBILENET_ARCH}\nr224_w1|k3e3\n")      # line 4 does not decode
    (t / "no_arch.csv").write_text("net,ms\nx,1\n")
    (t / "header_only.csv").write_text("arch,ms\n")
    (t / "list.yaml").write_text("- 3\n- 5\n")
    (t / "malformed.yaml").write_text("kernels: [3\n")
    (t / "rejected.yaml").write_text("kernels: [4]\n")
    (t / "unknown_key.yaml").write_text("colour: red\n")
    (t / "binary.yaml").write_bytes(b"\xff\xfe\x00kernels")
    (t / "res160.yaml").write_text("resolutions: [160]\n")
    (t / "archs160.txt").write_text("\n" + MOBILENET_ARCH.replace("r224", "r160") + "\n")
    (t / "space.yaml").write_text(yaml.safe_dump(SMALL_SPACE))
    return t


# --- cost ----------------------------------------------------------------------------------------------------------

COST_CASES = {   # id: (arguments replacing the defaults, what the error line must contain)
    "archs missing": ({"--archs": "{t}/nothing.txt"}, "{t}/nothing.txt: arch file not found"),
    "archs a folder": ({"--archs": "{t}/a_folder"}, "{t}/a_folder: is a folder"),
    "archs empty": ({"--archs": "{t}/empty.txt"}, "{t}/empty.txt: empty file"),
    "archs only comments": ({"--archs": "{t}/comments.txt"}, "{t}/comments.txt: no arch strings"),
    "arch does not decode (real line)": ({}, "{t}/archs.txt: line 4: arch 'r224_w1|k3e3'"),
    "csv without arch column": ({"--archs": "{t}/no_arch.csv"}, "{t}/no_arch.csv: no column 'arch'"),
    "csv header only": ({"--archs": "{t}/header_only.csv"}, "{t}/header_only.csv: no rows below the header"),
    "unknown profile": ({"--profile": "nope"}, "--profile: unknown hardware profile 'nope'; expected one of: "),
    "unknown space": ({"--space": "nope"}, "--space: unknown search space 'nope'; expected one of: "),
    "options missing": ({"--space-options": "{t}/nothing.yaml"}, "--space-options: {t}/nothing.yaml: not found"),
    "options a list": ({"--space-options": "{t}/list.yaml"}, "{t}/list.yaml: (top level): expected a mapping"),
    "options malformed": ({"--space-options": "{t}/malformed.yaml"}, "{t}/malformed.yaml: malformed YAML at line 2"),
    "options not UTF-8": ({"--space-options": "{t}/binary.yaml"}, "{t}/binary.yaml: not a UTF-8 text file"),
    "option rejected": ({"--space-options": "{t}/rejected.yaml"}, "{t}/rejected.yaml: kernels[0]: Input should"),
    "option unknown": ({"--space-options": "{t}/unknown_key.yaml"}, "{t}/unknown_key.yaml: colour: Extra inputs"),
    "layer not in the table": ({"--space-options": "{t}/res160.yaml", "--archs": "{t}/archs160.txt"},
                               "{t}/archs160.txt: line 2: profile x86-ort-t1@" + X86_VERSION + " has no measurement for"),
    "out below a file": ({"--out": "{t}/a_file/o.csv"}, "--out: {t}/a_file/o.csv: cannot write here, {t}/a_file is"),
    "out a folder": ({"--out": "{t}/a_folder"}, "--out: {t}/a_folder is a folder"),
    "num-classes zero": ({"--num-classes": "0"}, "--num-classes: expected a number >= 1, got 0"),
    "num-classes text": ({"--num-classes": "ten"}, "argument --num-classes: invalid int value: 'ten'"),
    "flag missing": ({"--out": None}, "the following arguments are required: --out"),
}


def argv_of(defaults: dict[str, str], changes: dict[str, str | None], t: Path) -> list[str]:
    out = []
    for flag, value in {**defaults, **changes}.items():
        if value is not None:
            out += [flag, value.format(t=t)]
    return out


@pytest.mark.parametrize("case", list(COST_CASES))
def test_cost_refuses_bad_input_in_one_line(case, files, capsys):
    changes, expected = COST_CASES[case]
    defaults = {"--profile": "x86-ort-t1", "--space": "mobilenet", "--archs": "{t}/archs.txt",
                "--out": "{t}/out.csv"}
    line = one_error(cost.main, argv_of(defaults, changes, files), capsys)
    assert expected.format(t=files) in line
    assert not (files / "out.csv").exists()


# --- importer ------------------------------------------------------------------------------------------------------

def small_table(n: int = 40, seed: int = 0) -> pd.DataFrame:
    """Every distinct arch of the small space with a latency that is a sum of per-key costs."""
    import numpy as np

    space = get_space("mobilenet", SMALL_SPACE)
    rng = np.random.default_rng(seed)
    archs = sorted({space.to_string(space.sample(rng)) for _ in range(n)})
    cost_of = {}
    ms = [0.1 + sum(cost_of.setdefault(k, float(rng.uniform(0.01, 1))) for k in space.cost_keys(space.decode(a)))
          for a in archs]
    return pd.DataFrame({"arch": archs, "ms": ms})


@pytest.fixture
def tables(files) -> Path:
    t = files
    good = small_table()
    good.to_csv(t / "good.csv", index=False)
    text = good.astype({"ms": object})
    text.loc[2, "ms"] = "fast"
    text.to_csv(t / "text.csv", index=False)
    neg = good.copy()
    neg.loc[3, "ms"] = -1.0
    neg.to_csv(t / "negative.csv", index=False)
    good.assign(ms=float("nan")).to_csv(t / "nan.csv", index=False)
    dup = pd.concat([good, good.iloc[[0]].assign(ms=good.ms[0] * 2)], ignore_index=True)
    dup.to_csv(t / "conflicting.csv", index=False)
    bad_arch = good.copy()
    bad_arch.loc[4, "arch"] = "r32_w0.5|k9e3"
    bad_arch.to_csv(t / "bad_arch.csv", index=False)
    return t


IMPORT_CASES = {
    "table missing": ({"--table": "{t}/nothing.csv"}, "{t}/nothing.csv: latency table not found"),
    "table empty": ({"--table": "{t}/empty.txt"}, "{t}/empty.txt: empty file"),
    "table header only": ({"--table": "{t}/header_only.csv"}, "{t}/header_only.csv: no rows below the header"),
    "no arch column": ({"--table": "{t}/no_arch.csv"}, "{t}/no_arch.csv: no column 'arch' (columns: net, ms)"),
    "no target column": ({"--target": "device_ms"}, "{t}/good.csv: no column 'device_ms' (columns: arch, ms)"),
    "text latency": ({"--table": "{t}/text.csv"}, "{t}/text.csv: line 4, column 'ms': 'fast' is not a number"),
    "negative latency": ({"--table": "{t}/negative.csv"}, "{t}/negative.csv: line 5, column 'ms': -1 is not a "
                                                          "positive latency"),
    "NaN only": ({"--table": "{t}/nan.csv"}, "{t}/nan.csv: column 'ms' has no values"),
    "conflicting duplicates": ({"--table": "{t}/conflicting.csv"},
                               "{t}/conflicting.csv: column 'ms': 1 arch(s) listed more than once with different"),
    "arch does not decode": ({"--table": "{t}/bad_arch.csv"}, "{t}/bad_arch.csv: line 6: "),
    "holdout 1": ({"--holdout": "1.0"}, "--holdout: expected a share of the rows in [0, 1), got 1"),
    "holdout negative": ({"--holdout": "-0.1"}, "--holdout: expected a share of the rows in [0, 1), got -0.1"),
    "holdout leaves too few rows": ({"--holdout": "0.9"}, "--holdout 0.9 leaves "),
    "root a file": ({"--root": "{t}/a_file"}, "--root: {t}/a_file is a file; expected a folder"),
    "bad profile name": ({"--profile": "My Phone"}, "--profile: 'My Phone' is not a profile name"),
    "version zero": ({"--version": "0"}, "--version: expected a number >= 1, got 0"),
    "unknown space": ({"--space": "nope"}, "--space: unknown search space 'nope'; expected one of: "),
    "options a list": ({"--space-options": "{t}/list.yaml"}, "{t}/list.yaml: (top level): expected a mapping"),
    "option rejected": ({"--space-options": "{t}/rejected.yaml"}, "{t}/rejected.yaml: kernels[0]: Input should"),
    "holdout text": ({"--holdout": "most"}, "argument --holdout: invalid float value: 'most'"),
}


@pytest.mark.parametrize("case", list(IMPORT_CASES))
def test_importer_refuses_bad_input_in_one_line(case, tables, capsys):
    changes, expected = IMPORT_CASES[case]
    defaults = {"--profile": "phone", "--space": "mobilenet", "--space-options": "{t}/space.yaml",
                "--table": "{t}/good.csv", "--target": "ms", "--root": "{t}/profiles"}
    line = one_error(importer.main, argv_of(defaults, changes, tables), capsys)
    assert expected.format(t=tables) in line
    assert not (tables / "profiles" / "phone").exists()


def test_importer_says_how_many_training_rows_the_fit_needs(tables, capsys):
    line = one_error(importer.main, ["--profile", "phone", "--space", "mobilenet", "--space-options",
                                     str(tables / "space.yaml"), "--table", str(tables / "good.csv"), "--target",
                                     "ms", "--holdout", "0.9", "--root", str(tables / "profiles")], capsys)
    n = len(pd.read_csv(tables / "good.csv"))
    assert f"of the {n} rows of {tables / 'good.csv'} to fit" in line and "needs at least" in line


def test_importer_keeps_identical_duplicates_once(tables):
    good = pd.read_csv(tables / "good.csv")
    pd.concat([good, good.iloc[:3]]).to_csv(tables / "same_twice.csv", index=False)
    assert importer.main(["--profile", "phone", "--space", "mobilenet", "--space-options", str(tables / "space.yaml"),
                          "--table", str(tables / "same_twice.csv"), "--target", "ms", "--holdout", "0",
                          "--root", str(tables / "profiles")]) == 0
    nets = pd.read_csv(tables / "profiles" / "phone" / "1" / "networks.csv")
    assert sorted(nets.arch) == sorted(good.arch)


# --- measure: bad input (all refused before anything is timed) -----------------------------------------------------

MEASURE_CASES = {
    "bad profile name": ({"--profile": "Tiny CPU"}, "--profile: 'Tiny CPU' is not a profile name"),
    "root a file": ({"--root": "{t}/a_file"}, "--root: {t}/a_file is a file; expected a folder"),
    "root below a file": ({"--root": "{t}/a_file/p"}, "--root: {t}/a_file/p: cannot write here, {t}/a_file is a"),
    "repeats zero": ({"--repeats": "0"}, "--repeats: expected a number >= 1, got 0"),
    "networks negative": ({"--networks": "-1"}, "--networks: expected a number >= 0, got -1"),
    "attempts zero": ({"--attempts": "0"}, "--attempts: expected a number >= 1, got 0"),
    "max-spread negative": ({"--max-spread": "-0.5"}, "--max-spread: expected a number >= 0, got -0.5"),
    "preheat negative": ({"--preheat": "-1"}, "--preheat: expected a number >= 0, got -1"),
    "plain networks negative": ({"--plain-networks": "-2"}, "--plain-networks: expected a number >= 0, got -2"),
    "mixed networks negative": ({"--mixed-networks": "-1"}, "--mixed-networks: expected a number >= 0, got -1"),
    "batch on the CPU": ({"--batch": "4"}, "--batch: the onnxruntime-cpu backend measures batch 1"),
    "unknown backend": ({"--backend": "tpu"}, "argument --backend: invalid choice: 'tpu'"),
    "unknown space": ({"--space": "nope"}, "--space: unknown search space 'nope'; expected one of: "),
    "options missing": ({"--space-options": "{t}/nothing.yaml"}, "--space-options: {t}/nothing.yaml: not found"),
    "options a folder": ({"--space-options": "{t}/a_folder"}, "--space-options: {t}/a_folder: is a folder"),
    "options a list": ({"--space-options": "{t}/list.yaml"}, "{t}/list.yaml: (top level): expected a mapping"),
    "options malformed": ({"--space-options": "{t}/malformed.yaml"}, "{t}/malformed.yaml: malformed YAML at line 2"),
    "option rejected": ({"--space-options": "{t}/rejected.yaml"}, "{t}/rejected.yaml: kernels[0]: Input should"),
    "flag missing": ({"--space": None}, "the following arguments are required: --space"),
}


@pytest.mark.parametrize("case", list(MEASURE_CASES))
def test_measure_refuses_bad_input_in_one_line(case, files, capsys):
    changes, expected = MEASURE_CASES[case]
    defaults = {"--profile": "tiny-cpu", "--space": "mobilenet", "--space-options": "{t}/space.yaml",
                "--root": "{t}/profiles"}
    line = one_error(measure.main, argv_of(defaults, changes, files), capsys)
    assert expected.format(t=files) in line
    assert not list((files / "profiles").glob("*/*/blocks.csv"))


def test_measure_without_cuda_says_so(files, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    line = one_error(measure.main, ["--profile", "g", "--space", "mobilenet", "--backend", "torch-cuda", "--root",
                                    str(files / "profiles")], capsys)
    assert line.startswith("error: --backend torch-cuda: no CUDA device is available here")


def _manifest(root: Path, name: str, **fields) -> Path:
    folder = root / name / "1"
    write_manifest(Manifest(name=name, kind=fields.pop("kind", "measured"), device="d", runtime="onnxruntime",
                            backend="onnxruntime-cpu", threads=1, space="nb201", num_classes=1000,
                            tables={"blocks": "blocks.csv", "networks": "networks.csv"}, **fields), folder)
    return folder


def test_measure_refuses_to_continue_a_profile_of_another_kind_or_setup(files, capsys):
    root = files / "profiles"
    _manifest(root, "phone", kind="imported")
    line = one_error(measure.main, ["--profile", "phone", "--space", "nb201", "--root", str(root)], capsys)
    assert "--profile: phone@1 in " in line and "is imported, not measured" in line
    _manifest(root, "cpu")
    line = one_error(measure.main, ["--profile", "cpu", "--space", "mobilenet", "--root", str(root)], capsys)
    assert "--space: cpu@1 in " in line and "was measured with space 'nb201', not 'mobilenet'" in line
    line = one_error(measure.main, ["--profile", "cpu", "--space", "nb201", "--threads", "2", "--root", str(root)],
                     capsys)
    assert "--threads: cpu@1 in " in line and "threads 1, not 2" in line


def test_measure_refuses_a_damaged_partial_table_or_manifest(files, capsys):
    root = files / "profiles"
    folder = _manifest(root, "cpu")
    (folder / "blocks.csv").write_text("name,ms\nx,1\n")
    line = one_error(measure.main, ["--profile", "cpu", *NB201, "--root", str(root)], capsys)
    assert line.startswith(f"error: {folder / 'blocks.csv'}: no column 'key'")
    (folder / "manifest.yaml").write_text("name: cpu\nkind: guessed\n")
    line = one_error(measure.main, ["--profile", "cpu", *NB201, "--root", str(root)], capsys)
    assert line.startswith(f"error: {folder / 'manifest.yaml'}: kind: Input should be")


# --- profile files checked before they are trusted ------------------------------------------------------------------


@pytest.fixture
def copied(tmp_path, monkeypatch) -> Path:
    """The built-in x86-ort-t1 profile (its newest version) copied onto the profile path (a later root overrides
    the built-in one)."""
    folder = tmp_path / "profiles" / "x86-ort-t1" / X86_VERSION
    shutil.copytree(BUILTIN_ROOT / "x86-ort-t1" / X86_VERSION, folder)
    monkeypatch.setenv("HWNAS_PROFILE_PATH", str(tmp_path / "profiles"))
    (tmp_path / "archs.txt").write_text(MOBILENET_ARCH + "\n")
    return folder


def test_every_builtin_table_matches_its_recorded_sha256():
    for path in sorted(BUILTIN_ROOT.glob("*/*/manifest.yaml")):
        manifest = read_manifest(path)
        for which in ("blocks", "networks", "extra"):
            table = manifest.table_path(path.parent, which)
            if table is not None:
                assert manifest.table_sha256[which] == sha256_file(table), table


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [truncate, flip_a_byte, Path.unlink], ids=["truncated", "byte flipped",
                                                                             "deleted"])
@pytest.mark.parametrize("which", ["blocks", "networks"])
def test_a_damaged_table_is_refused_in_one_line(which, damage, copied, capsys):
    table = copied / f"{which}.csv"
    expected = read_manifest(copied / "manifest.yaml").table_sha256[which]
    damage(table)
    with pytest.raises(IntegrityError):
        get_profile("x86-ort-t1")
    line = one_error(cost.main, ["--profile", "x86-ort-t1", "--space", "mobilenet", "--archs",
                                 str(copied.parents[2] / "archs.txt"), "--out", str(copied.parents[2] / "o.csv")],
                     capsys)
    assert f"{table}: " in line and f"{which} table of profile x86-ort-t1@{X86_VERSION}" in line
    if table.exists():
        assert f"SHA-256 mismatch ({which} table of profile x86-ort-t1@{X86_VERSION}): expected {expected[:16]}..., found " \
               f"{sha256_file(table)[:16]}..." in line
    else:
        assert "missing" in line
    line = one_error(measure.main, ["--profile", "x86-ort-t1", "--space", "mobilenet", "--root",
                                    str(copied.parents[1])], capsys)   # a finished profile is checked on resume
    assert f"{table}: " in line


def test_a_manifest_without_hashes_still_loads_and_reads_its_tables(copied):
    manifest = read_manifest(copied / "manifest.yaml")
    manifest.table_sha256 = {}
    write_manifest(manifest, copied)
    profile = get_profile("x86-ort-t1")
    assert len(profile.block_ms) > 100 and len(profile.read_networks()) > 10
    nets = pd.read_csv(copied / "networks.csv").astype({"median_ms": object})
    nets.loc[4, "median_ms"] = "slow"   # unverified, so parsed and checked: the line is named
    nets.to_csv(copied / "networks.csv", index=False)
    with pytest.raises(InputError, match=r"networks\.csv: line 6, column 'median_ms': 'slow' is not a finite"):
        profile.read_networks()


def test_a_verified_table_reader_serves_predictors(copied):
    profile = get_profile("x86-ort-t1")
    nets = profile.read_networks()
    assert {"arch", "median_ms"} <= set(nets.columns) and len(nets) == len(pd.read_csv(copied / "networks.csv"))
    flip_a_byte(copied / "networks.csv")   # damaged after loading: still refused when read
    with pytest.raises(IntegrityError, match="networks.csv: SHA-256 mismatch"):
        profile.table("networks")


@pytest.mark.parametrize("text", ["name: x86\nkind: guessed\ndevice: d\nruntime: r\n", "{{{ not yaml",
                                  "- a list\n", b"\x00\xff\xfe binary"], ids=["bad field", "malformed", "a list",
                                                                             "binary"])
def test_a_broken_manifest_fails_only_its_own_profile(text, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "profiles" / "bad-board" / "1" / "manifest.yaml"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(text if isinstance(text, bytes) else text.encode())
    write_manifest(Manifest(name="good-board", kind="simulated", device="d", runtime="r",
                            options={"model": "fpga", "preset": "fpga-zc706-int8"}),
                   tmp_path / "profiles" / "good-board" / "1")
    monkeypatch.setenv("HWNAS_PROFILE_PATH", str(tmp_path / "profiles"))
    names = profile_names()
    assert {"good-board", "x86-ort-t1", "fpga-zc706-int8", "local-cpu"} <= set(names) and "bad-board" not in names
    assert get_profile("good-board").latency is not None and get_profile("x86-ort-t1").block_ms
    assert [str(bad) in str(err) for err in broken()] == [True]
    with pytest.raises(ManifestError, match=str(bad)):
        get_profile("bad-board")
    (tmp_path / "archs.txt").write_text(MOBILENET_ARCH + "\n")
    line = one_error(cost.main, ["--profile", "bad-board", "--space", "mobilenet", "--archs",
                                 str(tmp_path / "archs.txt"), "--out", str(tmp_path / "o.csv")], capsys)
    assert line.startswith(f"error: --profile: {bad}: ")


# --- killed measurements --------------------------------------------------------------------------------------------


def test_a_measure_interrupted_in_process_continues_in_its_root(tmp_path, monkeypatch):
    """`--root` alone (no HWNAS_PROFILE_PATH) is enough to continue; rows before the interrupt are kept as they
    were written."""
    monkeypatch.delenv("HWNAS_PROFILE_PATH", raising=False)
    real, calls = OnnxCpuBackend.measure, {"n": 0}

    def dies_after_three(self, module, shape):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return real(self, module, shape)

    argv = ["--profile", "tiny", "--root", str(tmp_path), *NB201]
    monkeypatch.setattr(OnnxCpuBackend, "measure", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        measure.main(argv)
    folder = tmp_path / "tiny" / "1"
    before = (folder / "blocks.csv").read_bytes()
    assert before.count(b"\n") == 4 and not read_manifest(folder / "manifest.yaml").table_sha256
    monkeypatch.setattr(OnnxCpuBackend, "measure", real)
    assert measure.main(argv) == 0
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == ["1"]
    assert (folder / "blocks.csv").read_bytes().startswith(before)
    manifest = read_manifest(folder / "manifest.yaml")
    assert manifest.table_sha256["blocks"] == sha256_file(folder / "blocks.csv")


def _rows(path: Path) -> int:
    return path.read_bytes().count(b"\n") - 1 if path.is_file() else 0


def _run_and_kill(cmd: list[str], env: dict, kill_when, timeout: float = 240) -> None:
    """Run `cmd`; SIGKILL it as soon as `kill_when()` holds (it may finish first: the test holds either way)."""
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if kill_when():
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_measure_killed_three_times_keeps_every_finished_row(tmp_path):
    """SIGKILL after the first block row, after the third, and once the network table exists; each time the same
    command is run again. Finished rows stay byte-identical, nothing is measured twice, one version only."""
    env = {k: v for k, v in os.environ.items() if k != "HWNAS_PROFILE_PATH"}
    cmd = [sys.executable, "-m", "hardware_profiles.measure", "--profile", "tiny", "--root", str(tmp_path), *NB201]
    folder = tmp_path / "tiny" / "1"
    blocks, nets = folder / "blocks.csv", folder / "networks.csv"
    kill_points = [lambda: _rows(blocks) >= 1, lambda: _rows(blocks) >= 3, lambda: nets.is_file()]
    kept = {blocks: b"", nets: b""}
    for kill_when in [*kill_points, lambda: False]:
        _run_and_kill(cmd, env, kill_when)
        for path, before in kept.items():
            now = path.read_bytes() if path.is_file() else b""
            assert now.startswith(before), f"{path.name}: a finished row changed or vanished"
            kept[path] = now
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == ["1"]
    done_blocks, done_nets = pd.read_csv(blocks), pd.read_csv(nets)
    assert len(done_blocks) == 6 and done_blocks.key.is_unique
    assert len(done_nets) == 3 and done_nets.arch.is_unique
    manifest = read_manifest(folder / "manifest.yaml")
    assert manifest.table_sha256 == {"blocks": sha256_file(blocks), "networks": sha256_file(nets)}
    assert not list(folder.glob(".*.tmp"))


def test_measure_times_networks_outside_the_space_and_continues_them(tmp_path, monkeypatch):
    """`--random-networks` / `--plain-networks` / `--mixed-networks` / `--same-pad-networks` / `--timm-models`: the
    networks are timed whole
    into the extra table (name and definition), their blocks alone into the block table; a rerun measures nothing
    again."""
    from hardware_profiles.lookup import TableProfile
    from search_spaces.blocks import layer_costs
    from search_spaces.random_defs import random_defs
    from search_spaces.timm_import import network_def_from_timm

    argv = ["--profile", "wide", "--root", str(tmp_path), *NB201, "--random-networks", "2", "--plain-networks", "1",
            "--mixed-networks", "1", "--same-pad-networks", "1", "--timm-models", "mobilenetv3_small_050@64"]
    assert measure.main(argv) == 0
    folder = tmp_path / "wide" / "1"
    manifest = read_manifest(folder / "manifest.yaml")
    assert manifest.tables.extra == "extra.csv" and manifest.table_sha256["extra"] == sha256_file(folder / "extra.csv")
    assert "2 random block definitions" in manifest.how_measured and "mobilenetv3_small_050@64" in manifest.how_measured
    assert "1 random plain depthwise-separable stacks" in manifest.how_measured
    assert "1 random MixNet/MobileNetV4-like networks" in manifest.how_measured
    assert "1 random networks with TensorFlow 'same' padding" in manifest.how_measured
    extra = TableProfile(manifest, folder).read_extra()
    wanted = [*random_defs("random", 2, 0), *random_defs("plain", 1, 0), *random_defs("mixed", 1, 0),
              *random_defs("same", 1, 0), network_def_from_timm("mobilenetv3_small_050", resolution=64)]
    assert [name for name, _, _ in extra] == ["random:0:0", "random:0:1", "plain:0:0", "mixed:0:0", "same:0:0",
                                        "timm:mobilenetv3_small_050@64"]
    assert wanted[4].pad_type == "same" and "_same_" in " ".join(str(lc.key) for lc in layer_costs(wanted[4]))
    assert [net for _, net, _ in extra] == wanted and all(ms > 0 for _, _, ms in extra)
    blocks = set(pd.read_csv(folder / "blocks.csv").key)
    assert all(str(lc.key) in blocks for net in wanted for lc in layer_costs(net))

    real, calls = OnnxCpuBackend.measure, []

    def counted(self, module, shape):
        calls.append(shape)
        return real(self, module, shape)

    monkeypatch.setattr(OnnxCpuBackend, "measure", counted)
    before = (folder / "extra.csv").read_bytes()
    assert measure.main(argv) == 0
    assert calls == []   # no block, no network, and the overhead the profile recorded is kept
    assert (folder / "extra.csv").read_bytes() == before


def test_preheat_loads_the_measuring_cores_once_before_anything_is_timed(tmp_path, monkeypatch):
    """`--preheat S`: one preheat of S seconds on the measuring threads, before the first block is timed (the
    figures are then all taken in the machine's sustained state); none without the flag."""
    import core.timing as latency

    events = []
    monkeypatch.setattr(latency, "preheat", lambda seconds, threads=1: events.append(("preheat", seconds, threads)))
    real = OnnxCpuBackend.round_medians

    def timed(self, items, rounds):
        events.append("timed")
        return real(self, items, rounds)

    monkeypatch.setattr(OnnxCpuBackend, "round_medians", timed)
    argv = ["--root", str(tmp_path), *NB201, "--networks", "1", "--rounds", "2", "--threads", "1"]
    assert measure.main(["--profile", "hot", *argv, "--preheat", "7.5"]) == 0
    assert events[0] == ("preheat", 7.5, 1) and events[1:] and set(events[1:]) == {"timed"}
    events.clear()
    assert measure.main(["--profile", "cold", *argv]) == 0
    assert events and set(events) == {"timed"}


def test_measure_refuses_an_unknown_timm_model_in_one_line(tmp_path, capsys):
    line = one_error(measure.main, ["--profile", "bad", "--root", str(tmp_path), *NB201,
                                    "--timm-models", "resnet18"], capsys)
    assert line.startswith("error: --timm-models: resnet18: timm model resnet18: model class ResNet")


def test_check_says_a_profile_whose_table_no_longer_matches_has_drifted(tmp_path, monkeypatch, capsys):
    """`--check N` re-measures N of the profile's networks; a table 20 times off this machine is called drifted
    (exit 1), whatever the machine's load."""
    monkeypatch.setenv("HWNAS_PROFILE_PATH", str(tmp_path))
    assert measure.main(["--profile", "tiny-check", "--root", str(tmp_path), *NB201]) == 0
    folder = tmp_path / "tiny-check" / "1"
    nets = pd.read_csv(folder / "networks.csv", dtype={"arch": str})
    nets.assign(median_ms=nets.median_ms * 20).to_csv(folder / "networks.csv", index=False)
    manifest = read_manifest(folder / "manifest.yaml")
    manifest.table_sha256 = {}
    write_manifest(manifest, folder)
    capsys.readouterr()
    assert measure.main(["--profile", "tiny-check@1", "--check", "2", "--warmup", "1", "--repeats", "3"]) == 1
    report = yaml.safe_load(capsys.readouterr().out)
    assert report["verdict"].startswith("drifted") and report["networks"] == 2 and report["median_ratio"] < 0.2
    assert len(report["networks_checked"]) == 2 and "onnxruntime" in report["runtime"]


def test_check_verdict_and_runtime_warning():
    from hardware_profiles.drift import check_verdict, runtime_drift

    table = np.array([1.0, 2.0, 4.0, 8.0])
    assert check_verdict(table, table * [1.2, 0.8, 1.02, 0.99], 0.03)["holds"]       # scatter: the median holds
    moved = check_verdict(table, table * 1.12, 0.06)
    assert not moved["holds"] and moved["tolerance"] == 0.06 and moved["within_10pct"] == 0.0
    assert check_verdict(table, table * 1.12, 0.15)["holds"]                           # within a noisy profile's spread
    import onnxruntime

    record = {"name": "x", "version": 2, "runtime": "onnxruntime", "runtime_version": "0.0.1"}
    line = runtime_drift(record)
    assert line.startswith("warning: profile x@2 was measured with onnxruntime 0.0.1, and "
                           f"{onnxruntime.__version__} is installed here") and "--check 10" in line
    assert runtime_drift({**record, "runtime_version": onnxruntime.__version__}) is None
    assert runtime_drift({**record, "runtime": "tflite"}) is None and runtime_drift(None) is None


def test_measuring_importing_and_training_are_callable_without_argparse(tmp_path, monkeypatch):
    """The library API takes each command's settings dataclass (the flags' fields and defaults): a profile is
    measured, imported and trained on without a command line, and a bad setting is the same typed `InputError`
    the command line prints, naming its flag."""
    from hardware_profiles.importer import ImportSettings, import_profile
    from hardware_profiles.measure import MeasureSettings, measure_profile
    from predictors.train import TrainSettings, train

    monkeypatch.setenv("HWNAS_PROFILE_PATH", str(tmp_path))
    settings = MeasureSettings(profile="api", space="nb201", sample=6, networks=6, warmup=1, repeats=3, attempts=1,
                               root=str(tmp_path))
    report = measure_profile(settings)
    assert report["profile"] == "api@1" and report["networks"] == 6 and report["blocks"] >= 6
    with pytest.raises(InputError, match="^--repeats: expected a number >= 1"):
        measure_profile(MeasureSettings(profile="api", space="nb201", repeats=0, root=str(tmp_path)))
    space, rng = get_space("nb201"), np.random.default_rng(0)
    archs = list(dict.fromkeys(space.to_string(space.sample(rng)) for _ in range(300)))
    table = tmp_path / "nets.csv"
    pd.DataFrame({"arch": archs, "ms": [0.1 + space.flops(space.decode(a)) * 1e-8 for a in archs]}).to_csv(
        table, index=False)
    imported = import_profile(ImportSettings(profile="api-imported", space="nb201", table=str(table), target="ms",
                                             root=str(tmp_path)))
    assert imported["profile"] == "api-imported@1" and (tmp_path / "api-imported" / "1" / "manifest.yaml").is_file()
    with pytest.raises(InputError, match="^--holdout"):
        import_profile(ImportSettings(profile="x", space="nb201", table=str(table), target="ms", holdout=2))
    summary = train(TrainSettings(out=str(tmp_path / "pred"), space="nb201", table=str(table), target="ms"))
    assert summary["rows"] == len(archs) and (tmp_path / "pred" / "meta.json").is_file()
