"""A compression policy in the genotype (``compression: search``, `search_spaces.policy`): strings, decisions,
variation, costs, the partly quantized graph, the recipe checks and a search end to end."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pandas as pd
import pytest
import torch

from conftest import ASSETS, REPO
from core.quantize import module_prefix
from search_spaces import get_space
from search_spaces.costs import CostKey, parse_cost_key
from search_spaces.policy import PolicyArch, PolicySpace

TINY_MOBILENET = {"resolutions": [16], "widths": [0.25, 0.5], "kernels": [3, 5], "expansions": [3, 6],
                  "stages": [{"channels": 16, "stride": 2, "depths": [1, 2]},
                             {"channels": 24, "stride": 1, "depths": [1, 2]}],
                  "last_channels": 32, "num_features": 64}


def _macro() -> PolicySpace:
    return get_space("macro", {"resolution": 16, "compression": {}}, num_classes=10)


def _mobilenet() -> PolicySpace:
    return get_space("mobilenet", {**TINY_MOBILENET, "compression": {"precisions": ["fp32", "int8"]}}, num_classes=10)


# small options of every space with compression units (a test below checks the registry against this list)
SMALL_OPTIONS = {"macro": {"resolution": 16}, "mobilenet": TINY_MOBILENET, "fbnet": {"resolution": 16},
                 "nb201": {"resolution": 16}, "muffnet": {"resolution": 64}}


def _policy(name: str, precisions=("fp32", "int8")) -> PolicySpace:
    return get_space(name, {**SMALL_OPTIONS[name], "compression": {"precisions": list(precisions)}}, num_classes=10)


def _nb201(precisions=("fp32", "int8")) -> PolicySpace:
    return _policy("nb201", precisions)


def _muffnet(precisions=("fp32", "int8")) -> PolicySpace:
    return _policy("muffnet", precisions)


@pytest.mark.parametrize("make", [_macro, _mobilenet, _nb201, _muffnet])
def test_a_policy_round_trips_through_strings_and_decisions(make):
    space = make()
    assert isinstance(space, PolicySpace) and space.name == space.base.name
    rng = np.random.default_rng(0)
    for _ in range(20):
        arch = space.sample(rng)
        assert isinstance(arch, PolicyArch) and len(arch.precisions) == len(space.units)
        assert space.decode(space.to_string(arch)) == arch
        assert space.from_decisions([d or 0 for d in space.to_decisions(arch)]).precisions == arch.precisions
    assert space.units[0] == "stem" and space.units[-1] == "head"


def test_macro_policy_units_are_its_layers_and_the_string_says_them_in_order():
    space = _macro()
    assert space.units == ("stem", *(f"l{i}" for i in range(8)), "head")
    arch = space.decode("12120201@fp32,int8,int8,fp32,int8,int8,int8,int8,int8,fp32")
    assert arch.base == space.base.decode("12120201")
    assert arch.precisions[1:3] == ("int8", "int8") and arch.precisions[3] == "fp32"
    # l4 and l6 are identities here (id at a stride-1 position): nothing to quantize, so they read the first choice
    assert space.live_units(arch.base) == [True] * 5 + [False, True, False, True, True]
    assert arch.precisions[5] == arch.precisions[7] == "fp32" and arch.precisions[6] == "int8"
    assert space.to_string(arch) == "12120201@fp32,int8,int8,fp32,int8,fp32,int8,fp32,int8,fp32"
    assert space.decision_sizes() == (3,) * 8 + (2,) * 10


def test_mutation_changes_one_decision_either_of_the_space_or_of_the_policy():
    space, rng = _macro(), np.random.default_rng(1)
    arch = space.sample(rng)
    kinds = set()
    for _ in range(200):
        child = space.mutate(arch, rng)
        diff = [i for i, (a, b) in enumerate(zip(space.to_decisions(arch), space.to_decisions(child))) if a != b]
        if len(diff) == 2:   # a layer turned into an identity or back: its unit's precision reads the first choice
            assert diff[0] < 8 and diff[1] == 8 + diff[0] + 1
            assert "fp32" in (arch.precisions[diff[0] + 1], child.precisions[diff[0] + 1])
        else:
            assert len(diff) == 1
        kinds.add("policy" if diff[0] >= 8 else "space")
        if diff[0] >= 8:   # only units with something to quantize mutate
            assert space.live_units(arch.base)[diff[0] - 8]
    assert kinds == {"policy", "space"}
    a, b = space.sample(rng), space.sample(rng)
    child = space.crossover(a, b, rng)
    assert all(p in (x, y) for p, x, y in zip(child.precisions, a.precisions, b.precisions))


@pytest.mark.parametrize("text, message", [
    ("00120201", "expected '<arch>@<precision per unit>'"),
    ("00120201@fp32,int8", "has 2 precisions, the space has 10 compression units"),
    ("00120201@fp32,int4,int8,int8,int8,int8,int8,int8,int8,int8", "precision 'int4' is not in the space's"),
    ("00120209@fp32,int8,int8,int8,int8,int8,int8,int8,int8,int8", "00120209"),
])
def test_a_bad_policy_string_is_a_clear_error(text, message):
    with pytest.raises(ValueError, match=message):
        _macro().decode(text)


def test_int8_units_cost_under_int8_keys_with_the_networks_flops():
    space = _mobilenet()
    rng = np.random.default_rng(2)
    base = space.base.sample(rng)
    arch = PolicyArch(base, ("fp32", "int8", "fp32", "int8"))
    layers, plain = space.layer_costs(arch), space.base.layer_costs(base)
    units = space.base.unit_of_layers(base)
    assert len(layers) == len(plain) == len(units)
    for lc, fp, unit in zip(layers, plain, units):
        assert lc.key.precision == arch.precisions[unit]
        assert (lc.macs, lc.params) == (fp.macs, fp.params)
        assert parse_cost_key(str(lc.key)) == lc.key
    assert space.flops(arch) == space.base.flops(base)
    every, complete = space.enumerate_layers()
    assert complete and len(every) == 2 * len(space.base.enumerate_layers()[0])
    with pytest.raises(ValueError, match="precision 'int3'"):
        CostKey("ir", (8, 4, 4), (8, 4, 4), precision="int3")


def test_options_without_a_policy_dump_as_before_and_the_plain_space_is_not_wrapped():
    plain = get_space("macro", {"resolution": 16}, num_classes=10)
    assert not isinstance(plain, PolicySpace)
    assert plain.options.model_dump(mode="json") == {"resolution": 16}
    assert _macro().options.model_dump(mode="json")["compression"] == {"precisions": ["fp32", "int8"]}


def test_the_analytic_prior_gives_int8_layers_terms_of_their_own():
    from predictors.transfer import ANALYTIC, analytic_terms

    space = _macro()
    arch = space.decode("12121212@fp32,int8,int8,int8,int8,int8,int8,int8,int8,fp32")
    layers = space.layer_costs(arch)
    fp32 = sum(analytic_terms(lc) for lc in layers if lc.key.precision == "fp32")
    int8 = sum(analytic_terms(lc) for lc in layers if lc.key.precision == "int8")
    col = {name: i for i, name in enumerate(ANALYTIC)}
    assert int8[col["dense_macs"]] == 0 and int8[col["int8_dense_macs"]] > 0
    assert fp32[col["int8_dense_macs"]] == 0 and fp32[col["dense_macs"]] > 0
    assert int8[col["int8_convs"]] == sum(len(lc.convs) for lc in layers if lc.key.precision == "int8")


def _weight_dequantized_convs(graph) -> dict[str, bool]:
    """Each Conv/Gemm node of an ONNX graph (or the file holding it): whether its weight comes through a
    DequantizeLinear."""
    graph = graph if isinstance(graph, onnx.GraphProto) else onnx.load(str(graph)).graph
    made_by = {out: n.op_type for n in graph.node for out in n.output}
    return {n.name: made_by.get(n.input[1]) == "DequantizeLinear" for n in graph.node if n.op_type in ("Conv", "Gemm")}


def test_only_the_int8_units_are_quantized_in_the_graph_that_is_timed(tmp_path):
    from hardware_profiles.backends import OnnxCpuBackend

    space = _macro()
    backend = OnnxCpuBackend(1, 1, 3)
    arch = space.decode("12121212@fp32,fp32,int8,int8,fp32,fp32,fp32,fp32,int8,fp32")
    convs = _weight_dequantized_convs(backend.export(space.build(arch), space.input_shape(arch), tmp_path / "a.onnx"))
    int8 = tuple(module_prefix(m) for m in space.int8_modules(arch))
    assert int8 == ("/blocks/blocks.1/", "/blocks/blocks.2/", "/blocks/blocks.7/")
    assert any(convs.values()) and not all(convs.values())
    for name, quantized in convs.items():
        assert quantized == name.startswith(int8), name
    fp32 = space.decode("12121212@" + ",".join(["fp32"] * 10))
    graph = backend.export(space.build(fp32), space.input_shape(fp32), tmp_path / "b.onnx")
    assert "QuantizeLinear" not in {n.op_type for n in onnx.load(str(graph)).graph.node}
    every = space.decode("12121212@" + ",".join(["int8"] * 10))
    convs = _weight_dequantized_convs(backend.export(space.build(every), space.input_shape(every),
                                                     tmp_path / "c.onnx"))
    whole = _weight_dequantized_convs(OnnxCpuBackend(1, 1, 3, "int8").export(
        space.base.build(every.base), space.input_shape(every), tmp_path / "d.onnx"))
    assert all(convs.values()) and convs == whole   # every unit int8 is the whole network int8


def test_every_space_with_units_is_tried_here():
    from search_spaces import SPACES
    from search_spaces.policy import offers_units

    assert {n for n in SPACES.names() if offers_units(SPACES.get(n))} == set(SMALL_OPTIONS)


@pytest.mark.parametrize("name", sorted(SMALL_OPTIONS))
def test_each_unit_quantizes_exactly_its_own_convolutions_in_the_exported_graph(name, tmp_path):
    """What is quantized is read from the ONNX node names, which PyTorch's exporter scopes by the modules it calls
    (`module_prefix`): MuffNet's stages sit in a ModuleList, which is never called, so ``backbone.stages.1`` is
    scoped ``/backbone/stages.1/``, not ``/backbone/backbone.stages/...``. Every other unit int8 here."""
    from hardware_profiles.backends import OnnxCpuBackend

    space = _policy(name)
    base = space.base.sample(np.random.default_rng(4))
    arch = space._arch(base, ["int8" if i % 2 else "fp32" for i in range(len(space.units))])
    model = space.build(arch)
    convs = _weight_dequantized_convs(OnnxCpuBackend(1, 1, 3).export(model, space.input_shape(arch),
                                                                      tmp_path / "m.onnx"))
    seen = set()
    for unit, precision, live in zip(space.base.unit_modules(base), arch.precisions, space.live_units(base)):
        prefixes = tuple(module_prefix(m, model) for m in unit)
        mine = {k: q for k, q in convs.items() if k.startswith(prefixes)}
        assert bool(mine) == live and all(q == (precision == "int8") for q in mine.values()), (unit, mine)
        seen |= set(mine)
    assert seen == set(convs) and any(convs.values())   # every convolution in one unit
    if name == "muffnet":
        assert module_prefix("backbone.stages.1", model) == "/backbone/stages.1/"


def test_module_prefix_follows_the_exporters_scopes(tmp_path):
    from torch import nn

    from core.timing import export_onnx

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Module()
            self.body.stages = nn.ModuleList([nn.Sequential(nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1))
                                              for _ in range(2)])
            self.blocks = nn.Sequential(nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1))

        def forward(self, x):
            for stage in self.body.stages:
                x = stage(x)
            return self.blocks(x)

    net = Net()
    graph = onnx.load(str(export_onnx(net, (1, 3, 4, 4), tmp_path / "n.onnx"))).graph
    convs = [n.name for n in graph.node if n.op_type == "Conv"]
    leaves = [name for name, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == len(leaves) == 6
    for name, leaf in zip(convs, leaves):   # exported in the order forward calls them
        assert name.startswith(module_prefix(leaf, net)), (name, leaf)
        assert name.startswith(module_prefix(leaf.rsplit(".", 1)[0], net))
    assert module_prefix("body.stages.1", net) == "/stages.1/"   # neither body nor its list is called
    assert module_prefix("blocks.1", net) == module_prefix("blocks.1") == "/blocks/blocks.1/"
    assert module_prefix("", net) == "/"


def test_a_nb201_cell_without_convolutions_leaves_its_stage_nothing_to_quantize():
    space = _nb201()
    arch = space.decode("|none~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|skip_connect~2|"
                        "@int8,int8,int8,int8,int8")
    assert space.live_units(arch.base) == [True, False, True, True, True]
    assert arch.precisions == ("int8", "fp32", "int8", "int8", "int8")   # s0 reads the first choice
    layers = space.layer_costs(arch)
    assert [lc.key.op for lc in layers if lc.key.precision == "fp32"] == ["zero", "zero", "skip", "avgpool", "zero",
                                                                         "skip"] * 5
    assert [lc.key.op for lc in layers[31:32] + layers[62:63]] == ["resblock", "resblock"]


def test_an_fp32_unit_keeps_constant_weights_and_biases_beside_int8_ones(tmp_path):
    """An untrained network's folded biases are equal zeros that the exporter stores once; quantized for an int8
    reader, a shared bias would reach the fp32 convolutions through a DequantizeLinear and cost them onnxruntime's
    fast kernels (what the block tables and the live profiles would then time)."""
    from hardware_profiles.backends import OnnxCpuBackend

    space = _macro()
    arch = space.decode("21000022@" + ",".join(["fp32"] * 7 + ["int8", "fp32", "fp32"]))
    graph = onnx.load(str(OnnxCpuBackend(1, 1, 3).export(space.build(arch), space.input_shape(arch),
                                                           tmp_path / "a.onnx"))).graph
    made_by = {out: n.op_type for n in graph.node for out in n.output}
    int8 = tuple(module_prefix(m) for m in space.int8_modules(arch))
    fp32 = [n for n in graph.node if n.op_type == "Conv" and not n.name.startswith(int8)]
    assert fp32 and any(n.name.startswith(int8) for n in graph.node if n.op_type == "Conv")
    for node in fp32:   # weight and bias: constants, not dequantized tensors
        assert [made_by.get(i) for i in node.input[1:]] == [None] * (len(node.input) - 1), node.name


def test_the_hard_swish_a_quantizer_leaves_unnamed_lands_in_its_producers_unit(tmp_path):
    from hardware_profiles.backends import OnnxCpuBackend

    space = _mobilenet()
    base = space.base.sample(np.random.default_rng(3))
    arch = PolicyArch(base, ("fp32", "int8", "fp32", "fp32"))
    graph = onnx.load(str(OnnxCpuBackend(1, 1, 3).export(space.build(arch), space.input_shape(arch),
                                                         tmp_path / "m.onnx"))).graph
    assert all(n.name for n in graph.node)   # the unnamed hard-swish nodes were named after their producers
    convs = _weight_dequantized_convs(graph)
    assert {k for k, q in convs.items() if q} == {k for k in convs if k.startswith("/blocks/blocks.1/")} != set()
    made_by = {out: n for n in graph.node for out in n.output}
    stem_act = [n for n in graph.node if n.op_type == "HardSigmoid" and n.name.startswith("/conv_stem/")]
    assert stem_act and all(made_by[n.input[0]].op_type != "DequantizeLinear" for n in stem_act)   # fp32 unit


def test_engines_that_cannot_run_int8_units_refuse_them_and_fp32_policies_score_without_a_drop():
    from core.errors import InputError
    from hardware_profiles.backends import make_backend
    from nas.compression import int8_scores

    space = _macro()
    arch = space.decode("12121212@fp32,int8,fp32,fp32,fp32,fp32,fp32,fp32,fp32,fp32")
    eager = make_backend("torch-cpu-eager", warmup=1, repeats=2)
    with pytest.raises(InputError, match="^torch-cpu-eager cannot run a compression policy's int8 layers "
                                         r"\(blocks.0\)"):
        eager.measure(space.build(arch), space.input_shape(arch))
    fp32 = space.decode("12121212@" + ",".join(["fp32"] * 10))
    assert eager.measure(space.build(fp32), space.input_shape(fp32)).median_ms > 0
    scores = int8_scores(space.build(fp32), None, space.input_shape(fp32), 0.75)   # nothing to quantize or load
    assert scores == {"accuracy": 0.75, "accuracy_fp32": 0.75, "accuracy_drop": 0.0, "quant_parity": 0.0}


def _run(tmp_path, name: str, *sets: str) -> subprocess.CompletedProcess:
    args = sum((["--set", s] for s in sets), [])
    return subprocess.run([sys.executable, "-m", "nas.run", str(ASSETS / "tiny.yaml"), "--output",
                           str(tmp_path / name), *args], cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("sets, message", [
    (("compression=search",), "space.options.compression: compression: search needs the choices of the policy"),
    (("space.options.compression={precisions: [fp32, int8]}",),
     "space.options.compression: a policy in the genotype is searched only with compression: search"),
    (("compression=search", "space.name=lrssd", "space.options={compression: {}}", "constraints.max_flops=null",
      "constraints.latency=[]"), "search space 'lrssd' has no compression units; a policy can be searched on spaces "
     "that have them (fbnet, macro, mobilenet, muffnet, nb201)"),
    (("compression=search", "space.name=nb201", "space.options={compression: {keep: [1, 0.5]}}",
      "constraints.max_flops=null", "constraints.latency=[]"),
     "search space 'nb201' cannot prune its layers; keep ratios below 1 are searched on the spaces of inverted "
     "residuals (fbnet, macro, mobilenet)"),
    (("compression=search", "space.options.compression={}",
      "constraints.latency=[{profile: x86-ort-t1, max_ms: 5}]"),
     "constraints.latency[0]: x86-ort-t1 cannot time a compression policy's units"),
    (("compression=search", "space.options.compression={precisions: [int2]}"), "space.options.compression"),
    (("compression=search", "space.options.compression={precisions: [fp32, int4]}"),
     "space.options.compression.precisions: local-cpu (constraints.latency[0]) cannot run int4 units"),
    (("compression=search", "space.options.compression={}",
      "constraints.latency=[{profile: fpga-zc706-int8, max_ms: 5, source: profile}]"),
     "fpga-zc706-int8 (constraints.latency[0]) cannot run fp32 units; an int8 accelerator runs int8 and int4"),
    (("compression=search", "space.options.compression={precisions: [fp32, fp16]}"),
     "local-cpu (constraints.latency[0]) cannot run fp16 units; 16-bit float units run on GPU tables"),
    (("compression=search", "space.options.compression={precisions: [int8, bf16]}",
      "constraints.latency=[{profile: fpga-zc706-int8, max_ms: 5, source: profile}]"),
     "fpga-zc706-int8 (constraints.latency[0]) cannot run bf16 units"),
])
def test_a_policy_recipe_that_cannot_run_is_refused_in_one_line(sets, message):
    from nas.checks import load_run
    from nas.recipe import RecipeError

    with pytest.raises(RecipeError) as err:
        load_run(ASSETS / "tiny.yaml", list(sets))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_nas_run_exits_2_on_a_policy_it_cannot_run(tmp_path):
    proc = _run(tmp_path, "r", "compression=search")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "space.options.compression: compression: search needs" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.slow
@pytest.mark.parametrize("sets", [
    ("space.name=nb201", "space.options={resolution: 16, compression: {precisions: [int8, int4]}}",
     "constraints.latency=[{profile: fpga-zc706-int8, max_ms: 1, source: profile}]", "search.repair=none"),
    ("space.name=muffnet", "space.options={resolution: 32, compression: {precisions: [fp32, int8]}}",
     "search.repair=none"),
], ids=["nb201-fpga", "muffnet-cpu"])
def test_a_policy_search_on_stage_units_runs_end_to_end_and_ships_its_quantized_stages(tmp_path, sets):
    """About 40 s each here. Without repair, the trained candidates keep the policies drawn, quantized units
    included, whatever this CPU would gain."""
    proc = _run(tmp_path, "run", "compression=search", "constraints.max_flops=null", "search.budget=3", *sets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "run"
    table = pd.read_csv(out / "results.csv")
    ok = table[table.status == "ok"]
    space = _space_of(out)
    assert len(ok) and space.units == ("stem", "s0", "s1", "s2", "head")
    quantized = [a for a in ok.arch if {"int8", "int4"} & set(space.decode(a).precisions)]
    assert quantized and np.isfinite(ok.accuracy_drop).all()
    best = space.decode((out / "best" / "arch.txt").read_text().strip())
    assert (out / "best" / "model.int8.onnx").exists() == bool(space.int8_modules(best))


def test_a_search_with_compression_search_scores_times_and_prunes_each_policy_and_ships_it(tmp_path):
    proc = _run(tmp_path, "run", "compression=search",
                "space.options.compression={precisions: [fp32, int8], keep: [1, 0.5]}", "search.budget=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "run"
    table = pd.read_csv(out / "results.csv")
    ok = table[table.status == "ok"]
    assert len(ok) and {"accuracy_fp32", "accuracy_drop", "quant_parity", "accuracy_unpruned"} <= set(table.columns)
    space = _space_of(out)
    archs = [space.decode(a) for a in table.arch]
    np.testing.assert_allclose(ok.accuracy, ok.accuracy_fp32 - ok.accuracy_drop)
    for (_, row), arch in zip(table.iterrows(), archs):
        if row.status == "ok" and "int8" not in arch.precisions:   # nothing quantized: no drop, exact parity
            assert row.accuracy_drop == 0 and row.quant_parity == 0
        if row.status == "ok":   # trained dense first where the policy prunes (the accuracy before pruning)
            assert np.isfinite(row.accuracy_unpruned) == (min(arch.keeps) < 1)
        assert row.flops == sum(lc.macs for lc in space.layer_costs(arch))
    best = space.decode((out / "best" / "arch.txt").read_text().strip())
    params = sum(int(np.prod(t.dims)) for t in onnx.load(str(out / "best" / "model.onnx")).graph.initializer
                 if len(t.dims) > 1)   # the exported network has the pruned shapes (convolution weights)
    assert params == sum(c.weights for lc in space.layer_costs(best) for c in lc.convs)
    card = (out / "best" / "MODEL_CARD.md").read_text()
    sums = (out / "best" / "SHA256SUMS").read_text()
    if "int8" in best.precisions:
        graph = onnx.load(str(out / "best" / "model.int8.onnx")).graph
        assert "QuantizeLinear" in {n.op_type for n in graph.node} and "  model.int8.onnx\n" in sums
        assert "the compression policy's int8 units" in card
    else:
        assert not (out / "best" / "model.int8.onnx").exists() and "every unit fp32" in card
    # search.repair: dominated (the default): every candidate the search evaluated is one the repair leaves alone
    from nas.checks import load_run
    from nas.context import RunContext

    ctx = RunContext(load_run(out / "recipe.yaml").recipe, out)   # the run's own predictor, not calibrated again
    for arch in archs:
        assert ctx.repair(arch) == arch
    # a candidate the repair changed names the proposal it answers; best.json counts them
    changed = table[table.proposed.notna()]
    assert all(ctx.repair(space.decode(p)) == space.decode(a) != space.decode(p)
               for p, a in zip(changed.proposed, changed.arch))
    assert json.loads((out / "best.json").read_text())["repaired"] == len(changed)


def _space_of(run_dir) -> PolicySpace:
    spec = json.loads((run_dir / "best" / "space.json").read_text())
    return get_space(spec["name"], spec["options"], num_classes=spec["num_classes"])


def _fpga_macro() -> PolicySpace:
    return get_space("macro", {"resolution": 32, "compression": {"precisions": ["int8", "int4"]}}, num_classes=10)


def test_int4_units_run_faster_for_less_energy_on_the_fpga_simulator():
    from hardware_profiles import get_profile
    from predictors.transfer import ANALYTIC, analytic_terms

    space, profile = _fpga_macro(), get_profile("fpga-zc706-int8")
    int8 = space.decode("12121212@" + ",".join(["int8"] * 10))
    int4 = space.decode("12121212@int8," + ",".join(["int4"] * 8) + ",int8")
    assert space.decode(space.to_string(int4)) == int4
    assert [lc.key.precision for lc in space.layer_costs(int4)] == ["int8"] + ["int4"] * 8 + ["int8"] * 2
    assert all(parse_cost_key(str(lc.key)) == lc.key for lc in space.layer_costs(int4))
    a, b = profile.latency(space, int8), profile.latency(space, int4)
    assert b.median_ms < a.median_ms and b.energy_mj < a.energy_mj
    # the 4-bit twin of the board runs an int8 unit at 8 bits: a policy's precision is the layer's
    assert get_profile("fpga-zc706-int4").latency(space, int8).median_ms == pytest.approx(a.median_ms)
    col = {name: i for i, name in enumerate(ANALYTIC)}
    terms = sum(analytic_terms(lc) for lc in space.layer_costs(int4)[1:9])
    assert terms[col["int4_dense_macs"]] > 0 and terms[col["int8_dense_macs"]] == terms[col["dense_macs"]] == 0


@pytest.mark.parametrize("make", [_nb201, _muffnet])
def test_int4_stages_of_cell_and_shuffle_networks_run_faster_for_less_energy_on_the_fpga_simulator(make):
    from hardware_profiles import get_profile

    space, profile = make(("int8", "int4")), get_profile("fpga-zc706-int8")
    base = space.base.sample(np.random.default_rng(5))
    int8, int4 = space._arch(base, ("int8",) * 5), space._arch(base, ("int8", "int4", "int4", "int4", "int8"))
    assert space.decode(space.to_string(int4)) == int4
    a, b = profile.latency(space, int8), profile.latency(space, int4)
    assert b.median_ms < a.median_ms and b.energy_mj < a.energy_mj


def test_a_trained_network_is_marked_with_another_policy_as_build_marks_its_own():
    space = _fpga_macro()
    arch = space.decode("12121212@int8,int4,int8,int8,int8,int8,int8,int8,int8,int8")
    torch.manual_seed(0)
    trained = space.base.build(arch.base)
    weights = {k: v.clone() for k, v in trained.state_dict().items()}
    marked = space.mark(trained, arch)
    built = space.build(arch)
    assert marked is trained and marked.int4_modules == built.int4_modules == ("blocks.0",)
    assert marked.int8_modules == built.int8_modules and marked.fp32_modules == built.fp32_modules
    assert all(torch.equal(weights[k], v) for k, v in marked.state_dict().items())   # the weights untouched
    everywhere = space.decode("12121212@" + ",".join([space.most_compressed] * len(space.units)))
    assert set(space.mark(trained, everywhere).int4_modules) == set(space.int8_modules(everywhere))


def test_int4_units_are_scored_with_4_bit_weights_and_refused_by_the_cpu_engine(tmp_path):
    from core.errors import InputError
    from core.quantize import round_weights
    from hardware_profiles.backends import OnnxCpuBackend
    from nas.compression import onnx_logits, quantize_int8

    space = _fpga_macro()
    arch = space.decode("12121212@int8,int4,int8,int8,int8,int8,int8,int8,int8,int8")
    torch.manual_seed(0)
    model = space.build(arch).eval()
    assert model.int8_modules == space.int8_modules(arch) and model.int4_modules == ("blocks.0",)
    rounded = round_weights(model, model.int4_modules)
    for name, sub in rounded.named_modules():
        if isinstance(sub, torch.nn.Conv2d) and sub.weight[0].numel() > 15:   # not a 3x3 depthwise conv
            levels = max(len(torch.unique(row)) for row in sub.weight.detach().flatten(1))
            assert (levels <= 15) == name.startswith("blocks.0."), name   # 4 bits: 15 values per channel
    assert max(len(torch.unique(row)) for row in model.blocks[0].body[0].weight.detach().flatten(1)) > 15
    # scored with 4-bit weights: further from the fp32 logits than the same network int8 (a small trained-scale
    # network, whose logits are not the near-constant ones of a deep random one)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(16, 4)).eval()
    net.int8_modules, net.int4_modules = ("",), ("0",)
    images = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    data = torch.utils.data.TensorDataset(images, torch.zeros(64, dtype=torch.long))
    reference = net(images).detach().numpy()
    errors = {}
    for name, plan in (("int4", net), ("int8", _without_int4(net))):
        _, int8 = quantize_int8(plan, data, (1, 3, 8, 8), tmp_path / name)
        errors[name] = np.abs(onnx_logits(int8, images.numpy()) - reference).mean()
    assert errors["int4"] > 2 * errors["int8"] > 0
    with pytest.raises(InputError, match="^onnxruntime-cpu has no 4-bit convolution kernels to time"):
        OnnxCpuBackend(1, 1, 3).export(model, (1, 3, 32, 32), tmp_path / "m.onnx")


def _without_int4(model):
    import copy

    out = copy.deepcopy(model)
    out.int4_modules = ()
    return out


def test_engine_selection_refuses_a_network_whose_policy_quantizes_units(tmp_path):
    from core.errors import InputError
    from hardware_profiles.select import SelectSettings, load_network

    options = tmp_path / "space.yaml"
    options.write_text("{resolution: 32, compression: {}}\n")
    settings = dict(space="macro", space_options=str(options), num_classes=10)
    with pytest.raises(InputError, match="^--arch: the network's compression policy quantizes blocks.0"):
        load_network(SelectSettings(arch="00120201@fp32,int8," + ",".join(["fp32"] * 8), **settings))
    fp32 = load_network(SelectSettings(arch="00120201@" + ",".join(["fp32"] * 10), **settings))
    assert fp32.recipe["arch"].endswith("@" + ",".join(["fp32"] * 10))


def test_a_table_measured_with_a_policy_prices_a_policy_search(tmp_path, monkeypatch):
    """A device's tables measured with the policy in the space options (every block in each precision, networks
    with mixed policies) price a `compression: search` like any table: its predictor is trained from them."""
    import yaml

    from hardware_profiles import get_profile
    from hardware_profiles.measure import MeasureSettings, measure_profile
    from nas.checks import load_run
    from nas.context import RunContext
    from nas.recipe import RecipeError
    from nas.trial import evaluate_candidate

    monkeypatch.setenv("HWNAS_PROFILE_PATH", str(tmp_path))
    options = tmp_path / "policy.yaml"
    options.write_text("resolution: 16\ncompression: {precisions: [fp32, int8]}\n")
    report = measure_profile(MeasureSettings(profile="tiny-policy", space="macro", space_options=str(options),
                                             num_classes=10, networks=30, warmup=1, repeats=3, attempts=1,
                                             root=str(tmp_path)))
    assert report["complete"] and report["networks"] == 30
    keys = get_profile("tiny-policy").table("blocks")["key"]
    assert keys.str.contains("_int8_").sum() * 2 == len(keys) == report["blocks"]   # each layer in each precision
    archs = get_profile("tiny-policy").read_networks()["arch"]
    assert archs.str.contains("@").all() and archs.str.contains("int8").any()
    manifest = yaml.safe_load((tmp_path / "tiny-policy" / "1" / "manifest.yaml").read_text())
    assert manifest["space_options"]["compression"]["precisions"] == ["fp32", "int8"]

    sets = ["compression=search", "space={name: macro, options: {resolution: 16, compression: {precisions: "
            "[fp32, int8]}}}", "constraints.max_flops=null", "constraints.latency=[{profile: tiny-policy, max_ms: 50}]"]
    ctx = RunContext(load_run(ASSETS / "tiny.yaml", sets).recipe, tmp_path / "run")
    assert "trained on tiny-policy@1 tables" in ctx.latency["tiny-policy"].how
    cheap, dear = (ctx.space.decode(f"22120201@{p}" + f",{p}" * 9) for p in ("int8", "fp32"))
    a, b = (ctx.latency["tiny-policy"].latency(ctx.space, arch) for arch in (cheap, dear))
    assert a > 0 and b > 0 and a != b   # the policy changes the price
    row = evaluate_candidate(ctx, ctx.space.to_string(cheap))
    assert row["status"] == "ok" and row["latency_tiny-policy"] == pytest.approx(a)
    with pytest.raises(RecipeError, match=r"tiny-policy \(constraints.latency\[0\]\) has no int4 layers"):
        load_run(ASSETS / "tiny.yaml", [*sets, "space.options.compression.precisions=[int8, int4]"])
    with pytest.raises(RecipeError, match=r"tiny-policy \(constraints.latency\[0\]\) has no layers pruned to 0.5"):
        load_run(ASSETS / "tiny.yaml", [*sets, "space.options.compression.keep=[1, 0.5]"])


def test_the_shipped_mobilenet_policy_table_prices_a_policy_search(tmp_path):
    """`x86-ort-policy-t1` (the default space's blocks in fp32 and int8 at three keep ratios, networks with mixed
    policies) is accepted for a policy search, and its predictor prices a policy apart from its architecture."""
    from nas.checks import load_run
    from nas.context import RunContext

    sets = ["compression=search", "space={name: mobilenet, options: {compression: {precisions: [fp32, int8], "
            "keep: [1, 0.75, 0.5]}}}", "constraints.max_flops=null",
            "constraints.latency=[{profile: x86-ort-policy-t1, max_ms: 50}]"]
    ctx = RunContext(load_run(ASSETS / "tiny.yaml", sets).recipe, tmp_path / "run")
    assert "trained on x86-ort-policy-t1@1 tables" in ctx.latency["x86-ort-policy-t1"].how
    arch = ctx.space.sample(np.random.default_rng(0))
    body = ctx.space.to_string(arch).split("@")[0]
    units = len(ctx.space.to_string(arch).split("@")[1].split(","))
    prices = [ctx.latency["x86-ort-policy-t1"].latency(ctx.space, ctx.space.decode(f"{body}@" + ",".join([p] * units)))
              for p in ("fp32", "int8")]
    assert all(p > 0 for p in prices) and prices[0] != prices[1]
