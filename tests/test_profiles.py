"""Hardware profiles: manifests and versions, resumable measurement, lookup-table latency."""
from __future__ import annotations

import pandas as pd
import pytest
import yaml

from core.errors import sha256_file
from hardware_profiles import get_profile, has_profile, profile_names
from hardware_profiles.lookup import MissingKeys
from hardware_profiles.manifest import Manifest, ManifestError, read_manifest, resolve, write_manifest
from hardware_profiles.backends import OnnxCpuBackend
from hardware_profiles.measure import main as measure_main
from nas.checks import load_recipe
from search_spaces import get_space

from conftest import ASSETS

TINY_SPACE = {"resolutions": [32], "widths": [0.5], "kernels": [3, 5], "expansions": [3], "se": [False, True],
              "stages": [{"channels": 16, "stride": 2, "depths": [1, 2]}], "last_channels": 0, "num_features": 64}


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNAS_PROFILE_PATH", str(tmp_path / "profiles"))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(TINY_SPACE))
    return tmp_path


def measure(root, *extra: str) -> int:
    return measure_main(["--profile", "tiny-cpu", "--space", "mobilenet", "--space-options",
                         str(root / "space.yaml"), "--root", str(root / "profiles"), "--repeats", "5",
                         "--warmup", "2", "--networks", "3", "--flush-seconds", "0", *extra])


def space():
    return get_space("mobilenet", TINY_SPACE)


def test_manifest_errors_name_file_and_field(tmp_path):
    path = tmp_path / "manifest.yaml"
    path.write_text("name: x\nkind: guessed\ndevice: d\nruntime: r\n")
    with pytest.raises(ManifestError, match=r"manifest\.yaml: kind: Input should be 'measured'"):
        read_manifest(path)
    path.write_text("name: x\nkind: measured\ndevice: d\nruntime: r\ncolour: red\n")
    with pytest.raises(ManifestError, match="colour"):
        read_manifest(path)


def test_newest_version_by_default_and_pinned_versions(root):
    for version in (1, 3, 2):
        write_manifest(Manifest(name="board", version=version, kind="imported", device="d", runtime="r"),
                       root / "profiles" / "board" / str(version))
    assert resolve("board").name == "3" and resolve("board@2").name == "2"
    assert resolve("board@7") is None and resolve("nothing") is None
    assert "board" in profile_names() and has_profile("board@1") and not has_profile("board@9")


def test_a_broken_newest_version_is_reported_not_skipped(root):
    write_manifest(Manifest(name="board", version=1, kind="imported", device="d", runtime="r"),
                   root / "profiles" / "board" / "1")
    (root / "profiles" / "board" / "2").mkdir(parents=True)
    (root / "profiles" / "board" / "2" / "manifest.yaml").write_text("name: board\nversion: 2\nkind: [\n")
    with pytest.raises(ManifestError, match=r"board/2/manifest\.yaml: malformed YAML at line 4"):
        resolve("board")   # the newest version was asked for: never fall back to an older one silently
    assert resolve("board@1").name == "1" and "board" in profile_names()


def test_measure_builds_complete_tables_and_a_usable_profile(root):
    assert measure(root) == 0
    folder = resolve("tiny-cpu")
    manifest = read_manifest(folder / "manifest.yaml")
    blocks = pd.read_csv(folder / "blocks.csv")
    layers, exact = space().enumerate_layers()
    assert exact and sorted(blocks.key) == sorted(str(lc.key) for lc in layers)
    assert (blocks.median_ms > 0).all() and (blocks.p10_ms <= blocks.median_ms).all()
    assert (blocks.median_ms <= blocks.p90_ms).all()
    assert len(pd.read_csv(folder / "networks.csv")) == 3
    assert manifest.machine["cpus"] >= 1 and manifest.runtime == "onnxruntime" and manifest.threads == 1
    assert "median_relative_spread_blocks" in manifest.noise and manifest.options["overhead_ms"] > 0
    assert not list(folder.glob(".*.tmp"))
    assert manifest.table_sha256 == {"blocks": sha256_file(folder / "blocks.csv"),
                                     "networks": sha256_file(folder / "networks.csv")}
    profile = get_profile("tiny-cpu")
    arch = space().decode("r32_w0.5|k5e3s,k3e3")
    keys = space().cost_keys(arch)
    table = dict(zip(blocks.key, blocks.median_ms))
    overhead = manifest.options["overhead_ms"]
    expected = overhead + sum(max(table[k] - overhead, 0) for k in keys)
    assert profile.latency(space(), arch).median_ms == pytest.approx(expected)


def test_killed_measurement_resumes_without_remeasuring(root, monkeypatch):
    real = OnnxCpuBackend.measure
    calls = {"n": 0}

    def dies_after_five(self, module, shape):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return real(self, module, shape)

    monkeypatch.setattr(OnnxCpuBackend, "measure", dies_after_five)
    with pytest.raises(KeyboardInterrupt):
        measure(root)
    folder = root / "profiles" / "tiny-cpu" / "1"
    first = pd.read_csv(folder / "blocks.csv")
    assert 1 <= len(first) <= 5
    monkeypatch.setattr(OnnxCpuBackend, "measure", real)
    assert measure(root) == 0
    done = pd.read_csv(folder / "blocks.csv")
    assert len(done) == len(space().enumerate_layers()[0])
    pd.testing.assert_frame_equal(done.iloc[:len(first)], first)   # kept, not re-measured
    assert done.key.is_unique


def test_missing_layers_name_the_measure_command(root):
    measure(root)
    wider = get_space("mobilenet", {**TINY_SPACE, "kernels": [3, 7]})
    arch = wider.decode("r32_w0.5|k7e3")
    with pytest.raises(MissingKeys, match="python -m hardware_profiles.measure --profile tiny-cpu"):
        get_profile("tiny-cpu").latency(wider, arch)


def test_recipe_accepts_a_manifest_profile(root):
    measure(root)
    recipe = load_recipe(ASSETS / "tiny.yaml", ["constraints.latency=[{profile: tiny-cpu, max_ms: 1}]",
                                                f"space.options={TINY_SPACE}", "constraints.max_flops=null"])
    assert recipe.profiles == ["tiny-cpu"]


def test_recipe_refuses_a_table_that_does_not_cover_the_space(root):
    measure(root)
    from nas.recipe import RecipeError

    with pytest.raises(RecipeError, match=r"constraints\.latency\[0\]\.profile: tiny-cpu has no measurement for"):
        load_recipe(ASSETS / "tiny.yaml", ["constraints.latency=[{profile: tiny-cpu, max_ms: 1}]",
                                           "space.options.kernels=[3, 7]"])


def test_unmeasured_class_count_is_scaled_from_a_measured_classifier(root):
    measure(root)   # measured with 1000 classes
    profile = get_profile("tiny-cpu")
    ten = get_space("mobilenet", TINY_SPACE, num_classes=10)
    arch = ten.decode("r32_w0.5|k5e3s,k3e3")
    keys = ten.cost_keys(arch)
    thousand_key = space().cost_keys(arch)[-1]
    o = profile.overhead_ms
    scaled = o + max(profile.block_ms[thousand_key] - o, 0) * 10 / 1000
    body = profile.latency_of_keys(keys[:-1])
    assert profile.latency(ten, arch).median_ms == pytest.approx(body + scaled - o)
    assert profile.missing(keys) == []
