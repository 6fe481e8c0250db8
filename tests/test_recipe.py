"""Recipes: valid ones load; every kind of bad one exits 2 with one line naming the file and the field."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nas.checks import load_recipe
from nas.recipe import RecipeError
from nas.results import RunLog
from nas.run import main

from conftest import ASSETS, REPO


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def tiny(**changes) -> str:
    data = yaml.safe_load((ASSETS / "tiny.yaml").read_text())
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return yaml.safe_dump(data)


def run_bad(capsys, path: Path, *extra: str) -> str:
    code = main([str(path), "--output", str(path.parent / "out"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert str(path.parent) in err or "--set" in err   # the recipe file, or the run folder beside it
    return err


def test_shipped_recipes_are_valid():
    for path in sorted((REPO / "recipes").glob("*.yaml")):
        recipe = load_recipe(path)
        assert recipe.search.budget >= 1


def test_overrides_are_typed():
    r = load_recipe(ASSETS / "tiny.yaml", ["search.budget=9"])
    assert r.search.budget == 9
    r = load_recipe(ASSETS / "tiny.yaml", ["tracking=wandb", "evaluator.options.epochs=0.25"])
    assert r.tracking.backend == "wandb" and r.evaluator.options["epochs"] == 0.25


BAD = [
    # (recipe text, extra CLI args, field named, expected words)
    ("name: x\nsearch: {budget: 3\n", [], "malformed YAML", "line"),
    ("- just\n- a list\n", [], "(top level)", "mapping"),
    (tiny(colour="red"), [], "colour", "Extra inputs are not permitted"),
    (tiny(search__budget="many"), [], "search.budget", "integer"),
    (tiny(search__budget=0), [], "search.budget", "greater than 0"),
    (tiny(space__name="mobilnet"), [], "space.name", "unknown search space 'mobilnet'; expected one of: fbnet, lrssd, macro, mobilenet"),
    (tiny(controller__name="bayes"), [], "controller.name", "expected one of: evolution, local, nsga2, random, rl, tune"),
    (tiny(constraints__latency=[{"profile": "pixel9", "max_ms": 3}]), [], "constraints.latency[0].profile",
     "unknown hardware profile 'pixel9'; expected one of: arm-pixel3, "),
    (tiny(constraints__max_flops=10), [], "constraints.max_flops", "below the smallest architecture"),
    (tiny(space__options={"kernels": [4]}), [], "space.options.kernels[0]", "3, 5 or 7"),
    (tiny(space__options={"depth": 3}), [], "space.options.depth", "Extra inputs"),
    (tiny(controller__options={"population_size": 4, "sample_size": 9}), [], "controller.options",
     "must not exceed"),
    (tiny(evaluator__options={"dataset": "imagefolder", "path": "/no/such/dir"}), [], "evaluator.options",
     "not a directory"),
    (tiny(evaluator__options={"dataset": "cifar"}), [], "evaluator.options.dataset", "mnist5k"),
    (tiny(search__concurrency=9), [], "search.concurrency", "must not exceed"),
    (tiny(), ["--set", "search.budget"], "--set", "dotted.key=value"),
    (tiny(), ["--set", "search.bugdet=3"], "search.bugdet", "Extra inputs"),
    (tiny(tracking="tensorboard"), [], "tracking.backend", "'wandb' or 'none'"),
    (tiny(output={"dir": "runs/{nme}"}), [], "output.dir", "only placeholder allowed is {name}"),
    (tiny(cluster={"num_cpus": 2, "cpus_per_trial": 4}), [], "cluster.cpus_per_trial", "no trial could ever start"),
    (tiny(evaluator__options={"limit": 1}), [], "evaluator.options", "leaves no training or validation"),
    (tiny(evaluator__options={"threads": 3}), [], "evaluator.options.threads", "exceeds cluster.cpus_per_trial (1)"),
]


@pytest.mark.parametrize("text, extra, field, words", BAD, ids=[b[2] for b in BAD])
def test_bad_recipe_gives_one_line_naming_file_and_field(tmp_path, capsys, text, extra, field, words):
    err = run_bad(capsys, write(tmp_path, text), *extra)
    assert field in err and words in err, err


def test_flops_floor_uses_the_datasets_class_count():
    # the tiny space's smallest network has ~52k MACs with MNIST's 10 classes (~115k with 1000)
    recipe = load_recipe(ASSETS / "tiny.yaml", ["constraints.max_flops=6e4"])
    assert recipe.constraints.max_flops == 6e4


def test_relative_imagefolder_path_is_made_absolute(tmp_path, monkeypatch):
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    (tmp_path / "imgs" / "a" / "x.png").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    from nas.evaluation.evaluators import ProxyOptions

    opts = ProxyOptions(dataset="imagefolder", path="imgs")
    assert opts.path == str(tmp_path / "imgs")


def test_unreadable_inputs_are_one_line_errors(tmp_path, capsys):
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00name")
    assert "UTF-8" in run_bad(capsys, binary)
    path = write(tmp_path, tiny())
    (tmp_path / "out").write_text("a file, not a folder")
    assert "is a file" in run_bad(capsys, path)
    (tmp_path / "out").unlink()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "state.json").write_text('{"rows": [')
    assert "unreadable" in run_bad(capsys, path, "--resume")


def test_missing_recipe_file(tmp_path, capsys):
    err = run_bad(capsys, tmp_path / "nope.yaml")
    assert "not found" in err


def test_existing_run_needs_resume_and_resume_needs_a_run(tmp_path, capsys):
    path = write(tmp_path, tiny())
    (tmp_path / "out").mkdir()
    err = run_bad(capsys, path, "--resume")
    assert "no run to resume" in err
    (tmp_path / "out" / "state.json").write_text("{}")
    err = run_bad(capsys, path)
    assert "--resume" in err


def test_bad_recipe_from_the_shell_prints_no_traceback(tmp_path):
    path = write(tmp_path, tiny(space__name="nope"))
    proc = subprocess.run([sys.executable, "-m", "nas.run", str(path)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: ") and "space.name" in proc.stderr


def test_load_recipe_raises_recipe_error(tmp_path):
    with pytest.raises(RecipeError, match=r"search\.budget"):
        load_recipe(write(tmp_path, tiny(search__budget=-1)))


def test_resume_refuses_a_changed_recipe_but_allows_a_bigger_budget(tmp_path, capsys):
    path = write(tmp_path, tiny())
    out = tmp_path / "out"
    out.mkdir()
    (out / "recipe.yaml").write_text(yaml.safe_dump(load_recipe(path).model_dump(mode="json")))
    RunLog(out, ["local-cpu"]).save()
    err = run_bad(capsys, path, "--resume", "--set", "search.seed=7")
    assert "search.seed" in err
    assert "only search.budget, constraints.verify and where trials run (cluster) may change" in err
    from nas.run import parse_args, prepare

    ctx, run_dir = prepare(parse_args([str(path), "--output", str(out), "--resume", "--set", "search.budget=9"]))
    recipe = ctx.recipe
    assert recipe.search.budget == 9 and run_dir == out


# ---- --set into lists ----------------------------------------------------------------------------------------------
NB201 = REPO / "recipes" / "nb201_tabular.yaml"


def test_set_indexes_a_list():
    from nas.recipe import apply_overrides

    data = {"constraints": {"latency": [{"profile": "a", "max_ms": 1}, {"profile": "b"}]}}
    apply_overrides(data, ["constraints.latency.0.max_ms=5", "constraints.latency.1.max_ms=2.5"])
    assert data["constraints"]["latency"] == [{"profile": "a", "max_ms": 5}, {"profile": "b", "max_ms": 2.5}]
    apply_overrides(data, ["constraints.latency.1={profile: c}"])            # a whole element
    assert data["constraints"]["latency"][1] == {"profile": "c"}
    recipe = load_recipe(NB201, ["constraints.latency.0.max_ms=5", "constraints.latency.0.column=flops"])
    assert recipe.constraints.latency[0].max_ms == 5 and recipe.constraints.latency[0].column == "flops"


@pytest.mark.parametrize("key, words", [
    ("constraints.latency.1.max_ms", ["constraints.latency is a list of 1", "0..0", "'1'"]),
    ("constraints.latency.-1.max_ms", ["constraints.latency is a list of 1", "'-1'"]),
    ("constraints.latency.first.max_ms", ["constraints.latency is a list of 1", "'first'"]),
    ("search.budget.0", ["search.budget is not a mapping or a list"]),
], ids=["out-of-range", "negative", "not-a-number", "into-a-scalar"])
def test_set_with_a_bad_list_index_is_a_recipe_error(key, words):
    from nas.recipe import apply_overrides

    data = yaml.safe_load(NB201.read_text())
    with pytest.raises(RecipeError) as err:
        apply_overrides(data, [f"{key}=5"])
    assert all(w in str(err.value) for w in words), err.value
    assert f"--set '{key}=5'" in str(err.value) and "\n" not in str(err.value)


def test_bad_list_index_from_the_command_line_is_one_line(tmp_path, capsys):
    path = write(tmp_path, NB201.read_text())
    err = run_bad(capsys, path, "--set", "constraints.latency.2.max_ms=5")
    assert "constraints.latency is a list of 1" in err


def test_mnasnet_reward_without_a_target_is_a_recipe_error(tmp_path, capsys):
    path = write(tmp_path, NB201.read_text())
    err = run_bad(capsys, path, "--set", "controller={name: rl, options: {reward: mnasnet}}",
                  "--set", "constraints.latency.0.max_ms=null")
    assert "controller.options" in err and "targets" in err
    assert not (tmp_path / "out" / "state.json").exists()


@pytest.mark.parametrize("layout, words", [
    ({}, "has no class sub-folders"),
    ({"cat": [], "dog": ["a.png"]}, "cat holds no image files"),
    ({"train/cat": ["a.jpg"], "val/dog": ["b.jpg"]}, "train classes ['cat'] differ from val ['dog']"),
])
def test_an_image_folder_no_trial_could_load_is_a_recipe_error(tmp_path, capsys, layout, words):
    root = tmp_path / "data"
    root.mkdir()
    for folder, files in layout.items():
        (root / folder).mkdir(parents=True)
        for f in files:
            (root / folder / f).write_bytes(b"")
    err = run_bad(capsys, ASSETS / "tiny.yaml", "--set", "evaluator.options.dataset=imagefolder",
                  "--set", f"evaluator.options.path={root}")
    assert "evaluator.options" in err and words in err, err


def test_a_metric_table_of_another_space_is_a_recipe_error(tmp_path, capsys):
    table = tmp_path / "mobile.csv"
    table.write_text("arch,acc,ms\n" + "".join(f"{i} 1 2,{90 + i},{1 + i}\n" for i in range(3)))
    recipe = write(tmp_path, (REPO / "recipes" / "nb201_tabular.yaml").read_text())
    err = run_bad(capsys, recipe, "--set", f"evaluator.options.path={table}",
                  "--set", "evaluator.options.accuracy=acc", "--set", "constraints.latency.0.column=ms")
    assert f"{table}: evaluator.options.path: line 2: not an architecture of space 'nb201'" in err, err
    err = run_bad(capsys, recipe, "--set", f"constraints.latency.0.table={table}",
                  "--set", "constraints.latency.0.column=ms")
    assert "constraints.latency[0].table: line 2: not an architecture of space 'nb201'" in err, err
