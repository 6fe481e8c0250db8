"""The predictors command lines refuse bad input in one line (status 2, no traceback), and predictor folders are
checked before they are trusted: damaged or deleted files, edited metadata, a `predictors.train` killed mid-save."""
from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from test_predictors import synthetic_fbnet

from core.errors import IntegrityError
from predictors.evaluate import main as evaluate_main
from predictors.io import PredictorFileError, load, meta_digest
from predictors.predict import main as predict_main
from predictors.train import main as train_main

ROOT = Path(__file__).resolve().parents[1]
FOLDER_FILES = ("meta.json", "blocks.json", "block_model.txt", "network_model.txt", "generic_model.txt")


def refused(capsys, main: Callable[[list[str]], int], argv: list) -> str:
    """Run `main(argv)` in this process: status 2, exactly one ``error:`` line on stderr, no traceback; the line."""
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def _write_inputs(d: Path) -> dict[str, Path]:
    """Good and bad input files, by name."""
    table = synthetic_fbnet(120)
    paths = {name: d / name.replace("_", ".") for name in (
        "ok_csv", "nan_csv", "header_csv", "text_csv", "negative_csv", "short_csv", "dup_csv", "three_csv",
        "list_yaml", "bad_yaml", "broken_yaml", "afile", "archs_txt", "archs_csv", "good_txt", "empty_txt",
        "comments_txt", "noarch_csv")}
    table.to_csv(paths["ok_csv"], index=False)
    table.assign(device_ms=np.nan).to_csv(paths["nan_csv"], index=False)
    paths["header_csv"].write_text("arch,device_ms\n")
    table.assign(device_ms="fast").to_csv(paths["text_csv"], index=False)
    table.assign(device_ms=np.where(np.arange(120) == 2, -1.0, table.device_ms)).to_csv(paths["negative_csv"],
                                                                                      index=False)
    short = table.copy()
    short.loc[5, "arch"] = "1 2 3"
    short.to_csv(paths["short_csv"], index=False)
    dup = table.copy()
    dup.loc[9, "arch"] = dup.loc[3, "arch"]
    dup.to_csv(paths["dup_csv"], index=False)
    table.iloc[:3].to_csv(paths["three_csv"], index=False)
    paths["list_yaml"].write_text("- 1\n- 2\n")
    paths["bad_yaml"].write_text("bogus: 1\n")
    paths["broken_yaml"].write_text("a: [1, 2\nb: 3\n")
    paths["afile"].write_text("not a folder\n")
    good = table.arch[:2].tolist()
    paths["archs_txt"].write_text(f"# two good archs, then a bad one\n\n{good[0]}\n1 2\n{good[1]}\n")
    paths["archs_csv"].write_text(f"arch\n{good[0]}\n1 2\n")
    paths["good_txt"].write_text("\n".join(good) + "\n")
    paths["empty_txt"].write_text("")
    paths["comments_txt"].write_text("# nothing here\n\n")
    table.rename(columns={"arch": "net"}).to_csv(paths["noarch_csv"], index=False)
    paths["missing"], paths["missing_yaml"], paths["missing_dir"] = d / "nope.csv", d / "nope.yaml", d / "nope"
    paths["dir"] = d
    return paths


DROP = object()   # in `META_EDITS`: remove the field


def _edit_meta(model: Path, to: Path, changes: list[tuple[tuple[str, ...], object]], resign: bool) -> Path:
    """A copy of the predictor folder `model` at `to` whose meta.json has `changes` ((field path, new value or
    DROP); the empty path replaces the whole document), re-signed as a tool that rewrites meta.json properly would
    when `resign`."""
    shutil.copytree(model, to)
    meta = json.loads((to / "meta.json").read_text())
    for keys, value in changes:
        if not keys:
            meta = value
            continue
        parent = meta
        for key in keys[:-1]:
            parent = parent[key]
        if value is DROP:
            del parent[keys[-1]]
        else:
            parent[keys[-1]] = value
    if resign:
        meta["meta_sha256"] = meta_digest(meta)
    (to / "meta.json").write_text(json.dumps(meta, indent=2))
    return to


META_EDITS = {   # name -> (changes, re-signed)
    "meta_space": ([(("params", "space"), "nb201")], False),
    "meta_space_signed": ([(("params", "space"), "nb201")], True),
    "meta_unknown_space": ([(("params", "space"), "nope")], True),
    "meta_bad_options": ([(("params", "space_options"), {"bogus": 1})], True),
    "meta_format": ([(("format",), "something-else")], True),
    "meta_no_key": ([(("train_archs",), DROP)], True),
    "meta_no_param": ([(("params", "seed"), DROP)], True),
    "meta_wrong_type": ([(("params",), "fbnet")], True),
    "meta_old_version": ([(("format_version",), 1), (("files",), DROP), (("meta_sha256",), DROP)], False),
    "meta_not_object": ([((), [1, 2])], False),
    "meta_file_entry": ([(("files", "../escape.txt"), "0" * 64)], True),
    "meta_no_digest": ([(("meta_sha256",), DROP)], False),
}


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, Path]:
    """Input files, a trained predictor (`model`, on 80 of the table's 120 rows), copies of it with meta.json
    edited (`META_EDITS`), one with a truncated block model (`damaged`), and a table of its training rows."""
    d = tmp_path_factory.mktemp("inputs")
    p = _write_inputs(d)
    p["model"] = d / "model"
    assert train_main(["--space", "fbnet", "--num-classes", "100", "--table", str(p["ok_csv"]), "--target",
                       "device_ms", "--max-rows", "80", "--out", str(p["model"])]) == 0
    for name, (changes, resign) in META_EDITS.items():
        p[name] = _edit_meta(p["model"], d / name, changes, resign)
    p["damaged"] = d / "damaged"
    shutil.copytree(p["model"], p["damaged"])
    _truncate(p["damaged"] / "block_model.txt")
    train_archs = set(json.loads((p["model"] / "meta.json").read_text())["train_archs"])
    table = synthetic_fbnet(120)
    p["trained_csv"] = d / "trained.csv"
    table[table.arch.isin(train_archs)].to_csv(p["trained_csv"], index=False)
    return p


def _run_case(capsys, main, paths: dict, tmp_path: Path, argv: str, expected: str) -> str:
    """Fill `argv` and `expected` with the paths (``{out}`` is a fresh folder) and check the one-line refusal."""
    names = {**{k: str(v) for k, v in paths.items()}, "out": str(tmp_path / "out"),
             "arch0": synthetic_fbnet(1).arch[0]}
    line = refused(capsys, main, [token.format(**names) for token in shlex.split(argv)])
    pattern = expected.format(**{k: re.escape(v) for k, v in names.items()})
    assert re.search(pattern, line), (line, pattern)
    return line


TRAIN = "--space fbnet --num-classes 100 --target device_ms --out {out}"
TRANSFER = "--init-from {model} --target device_ms --out {out}"


@pytest.mark.parametrize("argv, expected", [
    pytest.param(f"{TRAIN} --table {{nan_csv}}", "{nan_csv}: column 'device_ms' has no values", id="all-nan"),
    pytest.param(f"{TRAIN} --table {{header_csv}}", "{header_csv}: no rows below the header", id="header-only"),
    pytest.param(f"{TRAIN} --table {{text_csv}}", "{text_csv}: line 2, column 'device_ms': 'fast' is not a number",
                 id="text-target"),
    pytest.param(f"{TRAIN} --table {{negative_csv}}", "{negative_csv}: line 4, column 'device_ms': -1 is not a "
                 "positive latency", id="negative-latency"),
    pytest.param(f"{TRAIN} --table {{short_csv}}", "{short_csv}: line 7: arch '1 2 3': has 3 layer choices",
                 id="wrong-length-arch"),
    pytest.param(f"{TRAIN} --table {{dup_csv}}", r"{dup_csv}: column 'device_ms': 1 arch\(s\) listed more than "
                 "once with different values, e.g. lines 5, 11", id="conflicting-duplicates"),
    pytest.param(f"{TRAIN} --table {{missing}}", "{missing}: latency table not found", id="missing-table"),
    pytest.param(f"{TRAIN} --table {{dir}}", "{dir}: is a folder", id="table-is-a-folder"),
    pytest.param(f"{TRAIN} --table {{ok_csv}} --target ms", r"{ok_csv}: no column 'ms' \(columns: arch, device_ms\)",
                 id="no-target-column"),
    pytest.param(f"{TRAIN} --table {{noarch_csv}}", "{noarch_csv}: no column 'arch'", id="no-arch-column"),
    pytest.param(f"{TRAIN} --table {{three_csv}}", r"{three_csv}: 3 network\(s\) with a value in column "
                 "'device_ms'; training needs at least 5", id="too-few-rows"),
    pytest.param(f"{TRAIN} --table {{ok_csv}} --max-rows 2", r"{ok_csv}: 2 network\(s\) .*\(--max-rows 2\); "
                 "training needs at least 5", id="max-rows-too-few"),
    pytest.param("--space nope --table {ok_csv} --target device_ms --out {out}",
                 "--space: unknown search space 'nope'; expected one of: .*fbnet.*nb201", id="unknown-space"),
    pytest.param(f"{TRAIN} --table {{ok_csv}} --space-options {{missing_yaml}}",
                 "--space-options: {missing_yaml}: not found", id="missing-space-options"),
    pytest.param(f"{TRAIN} --table {{ok_csv}} --space-options {{list_yaml}}",
                 "{list_yaml}: .*expected a mapping .*got list", id="space-options-not-a-mapping"),
    pytest.param(f"{TRAIN} --table {{ok_csv}} --space-options {{bad_yaml}}",
                 "{bad_yaml}: bogus: Extra inputs are not permitted", id="space-options-rejected"),
    pytest.param(f"{TRAIN} --table {{ok_csv}} --space-options {{broken_yaml}}",
                 r"{broken_yaml}: malformed YAML at line \d+", id="space-options-not-yaml"),
    pytest.param(f"{TRAIN} --table {{ok_csv}} --out {{afile}}",
                 "--out: {afile} is a file; expected a folder", id="out-is-a-file"),
    pytest.param(f"{TRAIN} --table {{ok_csv}} --out {{afile}}/sub",
                 "--out: {afile}/sub: cannot write here, {afile} is a file", id="out-under-a-file"),
    pytest.param("--profile nope --out {out}",
                 "--profile: unknown hardware profile 'nope'; expected one of: .*gpu-h100-fp32-b1",
                 id="unknown-profile"),
    pytest.param("--profile local-cpu --out {out}", "--profile: local-cpu has no block and network tables",
                 id="profile-without-tables"),
    pytest.param("--out {out}", "give --profile, or --space, --table and --target", id="nothing-to-train-on"),
    pytest.param("--init-from {missing_dir} --samples 10 --table {ok_csv} --target device_ms --out {out}",
                 "--init-from: {missing_dir}: not a predictor folder", id="init-from-missing"),
    pytest.param("--init-from {damaged} --samples 10 --table {ok_csv} --target device_ms --out {out}",
                 "--init-from: {damaged}/block_model.txt: SHA-256 mismatch", id="init-from-damaged"),
    pytest.param(TRANSFER, "--init-from needs --table, --target and --samples", id="init-from-without-samples"),
    pytest.param(f"{TRANSFER} --samples 500 --table {{ok_csv}}",
                 "--samples: {ok_csv} has only 120 rows of 'device_ms', fewer than --samples 500",
                 id="samples-over-table"),
    pytest.param(f"{TRANSFER} --samples 2 --table {{ok_csv}}", "--init-from: few-shot transfer needs at least 3",
                 id="samples-too-few"),
    pytest.param(f"{TRANSFER} --samples 10 --table {{ok_csv}} --space nb201",
                 "--space: nb201 but the --init-from predictors are for fbnet", id="init-from-other-space"),
    pytest.param(f"{TRANSFER} --samples 10 --table {{short_csv}}", "{short_csv}: line 7: arch '1 2 3'",
                 id="init-from-wrong-length-arch"),
])
def test_train_refuses_bad_input_in_one_line(paths, tmp_path, capsys, argv, expected):
    _run_case(capsys, train_main, paths, tmp_path, argv, expected)
    assert not (tmp_path / "out").exists(), "nothing is written before the input is known to be good"


EVALUATE = "--model {model} --table {ok_csv} --target device_ms --json"


@pytest.mark.parametrize("argv, expected", [
    pytest.param(f"{EVALUATE} --table {{missing}}", "{missing}: latency table not found", id="missing-table"),
    pytest.param(f"{EVALUATE} --table {{short_csv}}", "{short_csv}: line 7: arch '1 2 3': has 3 layer choices",
                 id="wrong-length-arch"),
    pytest.param(f"{EVALUATE} --table {{text_csv}}", "{text_csv}: line 2, column 'device_ms': 'fast'",
                 id="text-target"),
    pytest.param(f"{EVALUATE} --table {{nan_csv}}", "{nan_csv}: column 'device_ms' has no values", id="all-nan"),
    pytest.param(f"{EVALUATE} --table {{header_csv}}", "{header_csv}: no rows below the header", id="header-only"),
    pytest.param(f"{EVALUATE} --target ms", "{ok_csv}: no column 'ms'", id="no-target-column"),
    pytest.param(f"{EVALUATE} --table {{trained_csv}}", r"{trained_csv}: every row with a value in column "
                 r"'device_ms' \(80\) was used to train {model}", id="only-training-rows"),
    pytest.param(f"{EVALUATE} --plot {{afile}}/p.png", "{afile}/p.png: cannot write here, {afile} is a file",
                 id="plot-under-a-file"),
    pytest.param(f"{EVALUATE} --model {{missing_dir}}", r"--model: {missing_dir}: not a predictor folder \(no such",
                 id="model-missing"),
    pytest.param(f"{EVALUATE} --model {{dir}}", r"--model: {dir}: not a predictor folder \(no meta.json",
                 id="model-without-meta"),
    pytest.param(f"{EVALUATE} --model {{damaged}}", "--model: {damaged}/block_model.txt: SHA-256 mismatch "
                 r"\(the block model\): expected [0-9a-f]+\.\.\., found [0-9a-f]+\.\.\.", id="model-damaged"),
    pytest.param(f"{EVALUATE} --model {{meta_space}}", "--model: {meta_space}/meta.json: content changed after it "
                 "was written", id="meta-edited-to-another-space"),
    pytest.param(f"{EVALUATE} --model {{meta_space_signed}}", "{meta_space_signed}/meta.json: "
                 "network_feature_schema: does not match space 'nb201'", id="meta-re-signed-to-another-space"),
    pytest.param(f"{EVALUATE} --model {{meta_unknown_space}}", "{meta_unknown_space}/meta.json: params.space: unknown "
                 "search space 'nope'; expected one of: ", id="meta-unknown-space"),
    pytest.param(f"{EVALUATE} --model {{meta_bad_options}}", "{meta_bad_options}/meta.json: params: bogus: Extra "
                 "inputs are not permitted", id="meta-bad-space-options"),
    pytest.param(f"{EVALUATE} --model {{meta_format}}", "{meta_format}/meta.json: format: expected "
                 "'hwnas-latency-predictor', got 'something-else'", id="meta-other-format"),
    pytest.param(f"{EVALUATE} --model {{meta_no_key}}", "{meta_no_key}/meta.json: no field 'train_archs'",
                 id="meta-missing-key"),
    pytest.param(f"{EVALUATE} --model {{meta_no_param}}", "{meta_no_param}/meta.json: params: no 'seed'",
                 id="meta-missing-param"),
    pytest.param(f"{EVALUATE} --model {{meta_wrong_type}}", "{meta_wrong_type}/meta.json: params: expected an "
                 "object, got str", id="meta-wrong-type"),
    pytest.param(f"{EVALUATE} --model {{meta_old_version}}", "{meta_old_version}/meta.json: saved by an older "
                 "version without file checksums; train the predictor again", id="meta-older-version"),
    pytest.param(f"{EVALUATE} --model {{meta_not_object}}", "{meta_not_object}/meta.json: expected a JSON object, "
                 "got list", id="meta-not-an-object"),
    pytest.param(f"{EVALUATE} --model {{meta_file_entry}}", r"{meta_file_entry}/meta.json: files: unexpected entry "
                 r"'\.\./escape\.txt'", id="meta-file-outside-the-folder"),
    pytest.param(f"{EVALUATE} --model {{meta_no_digest}}", "{meta_no_digest}/meta.json: no field 'meta_sha256'",
                 id="meta-without-digest"),
])
def test_evaluate_refuses_bad_input_in_one_line(paths, tmp_path, capsys, argv, expected):
    _run_case(capsys, evaluate_main, paths, tmp_path, argv, expected)


PREDICT = "--model {model}"


@pytest.mark.parametrize("argv, expected", [
    pytest.param(f"{PREDICT} --arch '1 2'", "^error: --arch: arch '1 2': has 2 layer choices", id="bad-arch"),
    pytest.param(f"{PREDICT} --arch {{arch0}} --arch x", "^error: --arch: arch 'x'", id="second-arch-bad"),
    pytest.param(f"{PREDICT} --archs {{archs_txt}}", "{archs_txt}: line 4: arch '1 2': has 2 layer choices",
                 id="archs-file-bad-line"),
    pytest.param(f"{PREDICT} --archs {{archs_csv}}", "{archs_csv}: line 3: arch '1 2'", id="archs-csv-bad-line"),
    pytest.param(f"{PREDICT} --archs {{missing}}", "{missing}: arch file not found", id="archs-missing"),
    pytest.param(f"{PREDICT} --archs {{empty_txt}}", "{empty_txt}: empty file", id="archs-empty"),
    pytest.param(f"{PREDICT} --archs {{comments_txt}}", "{comments_txt}: no arch strings", id="archs-only-comments"),
    pytest.param(f"{PREDICT} --archs {{noarch_csv}}", "{noarch_csv}: no column 'arch'", id="archs-csv-no-column"),
    pytest.param(f"{PREDICT} --archs {{good_txt}} --out {{afile}}/p.csv",
                 "{afile}/p.csv: cannot write here, {afile} is a file", id="out-under-a-file"),
    pytest.param("--model {missing_dir} --arch {arch0}", "--model: {missing_dir}: not a predictor folder",
                 id="model-missing"),
    pytest.param("--model {damaged} --arch {arch0}", "--model: {damaged}/block_model.txt: SHA-256 mismatch",
                 id="model-damaged"),
    pytest.param("--model {meta_space} --arch {arch0}", "--model: {meta_space}/meta.json: content changed",
                 id="meta-edited"),
    pytest.param("--model {meta_old_version} --arch {arch0}", "{meta_old_version}/meta.json: saved by an older "
                 "version", id="meta-older-version"),
])
def test_predict_refuses_bad_input_in_one_line(paths, tmp_path, capsys, argv, expected):
    _run_case(capsys, predict_main, paths, tmp_path, argv, expected)


def test_good_inputs_still_work(paths, tmp_path, capsys):
    """The refusals above are not refusing everything: the same model and files answer when they are good."""
    assert predict_main(["--model", str(paths["model"]), "--archs", str(paths["good_txt"]), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["predictions"]) == 2
    assert evaluate_main(["--model", str(paths["model"]), "--table", str(paths["ok_csv"]), "--target",
                          "device_ms", "--json", "--plot", str(tmp_path / "p.png")]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["rows"] == 40 and res["training_rows_skipped"] == 80 and "spearman" in res["predictor"]


# --- damaged predictor folders --------------------------------------------------------------------------------------
def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01   # any byte of meta.json flipped this way leaves bad JSON or a changed value
    path.write_bytes(bytes(data))


DAMAGE = {"truncate": _truncate, "flip": _flip, "delete": Path.unlink}


def _refusal(folder: Path, name: str, damage: str) -> str:
    """The start of the one line `load` gives for `damage` done to `name` (a regex)."""
    path = re.escape(str(folder / name))
    if name != "meta.json":
        return f"{path}: missing" if damage == "delete" else f"{path}: SHA-256 mismatch"
    return {"delete": re.escape(f"{folder}: not a predictor folder (no meta.json"),
            "truncate": f"{path}: not valid JSON", "flip": f"{path}: "}[damage]


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("name", FOLDER_FILES)
def test_damaged_predictor_folder_is_refused_in_one_line(paths, tmp_path, capsys, name, damage):
    folder = tmp_path / "m"
    shutil.copytree(paths["model"], folder)
    DAMAGE[damage](folder / name)
    expected = _refusal(folder, name, damage)
    with pytest.raises(PredictorFileError) as info:
        load(folder)
    assert re.match(expected, str(info.value)) and "\n" not in str(info.value)
    assert isinstance(info.value, IntegrityError) == (name != "meta.json")
    arch = synthetic_fbnet(1).arch[0]
    assert re.match("error: --model: " + expected, refused(capsys, predict_main, ["--model", folder, "--arch", arch]))
    line = refused(capsys, evaluate_main, ["--model", folder, "--table", paths["ok_csv"], "--target", "device_ms"])
    assert re.match("error: --model: " + expected, line)


@pytest.mark.parametrize("name", ["network_model.txt", "block_model.txt"])
def test_truncated_lightgbm_file_exits_2_not_a_crash(paths, tmp_path, name):
    """LightGBM can crash the process parsing a truncated text model (a segmentation fault); the checksum is
    verified first, so the process exits with status 2 and one line."""
    folder = tmp_path / "m"
    shutil.copytree(paths["model"], folder)
    _truncate(folder / name)
    proc = subprocess.run([sys.executable, "-m", "predictors.predict", "--model", str(folder), "--arch",
                           synthetic_fbnet(1).arch[0]], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --model: {folder / name}: SHA-256 mismatch"), lines
    assert proc.stdout == ""


# --- a killed predictors.train ----------------------------------------------------------------------------------------
def _wait_until(ready: Callable[[], bool], proc: subprocess.Popen, timeout: float = 600.0) -> None:
    """Poll `ready` until it holds, the process ends, or `timeout` passes (then the kill lands wherever it lands)."""
    end = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < end:
        try:
            if ready():
                return
        except FileNotFoundError:   # a file vanished between listing and stat: the save is moving, poll again
            pass
        time.sleep(0.002)


def _written_since(folder: Path, started: float) -> bool:
    return folder.is_dir() and any(p.stat().st_mtime >= started for p in folder.iterdir())


def _left(folder: Path, probe: list[str], complete: list[np.ndarray]) -> str:
    """What a killed run left: ``absent``, ``refused`` (one line from `load`), or ``complete`` (a folder that
    loads predicts exactly as one of the `complete` runs did: never a mix of two)."""
    if not folder.exists():
        return "absent"
    try:
        model, _ = load(folder)
    except PredictorFileError as err:
        assert "\n" not in str(err)
        return "refused"
    pred = model.predict(probe)
    assert any(np.array_equal(pred, c) for c in complete), "a folder that loads must be one complete model"
    return "complete"


def test_killed_train_leaves_the_old_folder_or_a_refused_one_and_reruns_identically(tmp_path):
    table = tmp_path / "t.csv"
    data = synthetic_fbnet(400, seed=1)
    data.to_csv(table, index=False)
    argv = ["--space", "fbnet", "--num-classes", "100", "--table", str(table), "--target", "device_ms"]
    probe = synthetic_fbnet(50, seed=2).arch.tolist()
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert train_main([*argv, "--out", str(ref)]) == 0                  # the uninterrupted run
    assert train_main([*argv, "--seed", "1", "--out", str(out)]) == 0   # an older, different model in --out
    complete = [load(ref)[0].predict(probe), load(out)[0].predict(probe)]
    assert not np.array_equal(*complete)
    points = {"start": lambda s: True, "first file written": lambda s: _written_since(out, s),
              "meta.json written": lambda s: (out / "meta.json").stat().st_mtime >= s}
    seen = {}
    for point, ready in points.items():
        started = time.time() - 0.01
        proc = subprocess.Popen([sys.executable, "-m", "predictors.train", *argv, "--out", str(out)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_until(lambda: ready(started), proc)
        proc.kill()
        proc.wait(timeout=60)
        seen[point] = _left(out, probe, complete)
    subprocess.run([sys.executable, "-m", "predictors.train", *argv, "--out", str(out)], cwd=ROOT, check=True,
                   capture_output=True, timeout=600)
    (model, meta), (_, ref_meta) = load(out), load(ref)
    np.testing.assert_array_equal(model.predict(probe), complete[0])
    assert meta["files"] == ref_meta["files"] and meta["meta_sha256"] == ref_meta["meta_sha256"], seen
    assert sorted(p.name for p in out.iterdir()) == sorted(FOLDER_FILES), "a killed save's temp files are gone"
