"""Structured pruning in a compression policy (``space.options.compression.keep``, `search_spaces.policy`): the
pruned block, costs that agree with the modules, strings and variation, the dense-prune-fine-tune flow of a
candidate, and the recipe checks."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from conftest import ASSETS
from search_spaces import get_space
from search_spaces.costs import parse_cost_key
from search_spaces.layers import ConvBlock, expansion_parts, kept_channels, prune_expansion
from search_spaces.policy import PolicySpace

KEEP = {"precisions": ["fp32", "int8"], "keep": [1.0, 0.75, 0.5]}


def _macro(compression=None) -> PolicySpace:
    return get_space("macro", {"resolution": 16, "compression": compression or KEEP}, num_classes=10)


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("mid, keep, kept", [(96, 0.75, 72), (96, 0.5, 48), (192, 0.75, 144), (20, 0.5, 8),
                                             (100, 0.33, 32), (8, 0.5, 8), (96, 1.0, 96), (24, 0.01, 8)])
def test_kept_channels_are_multiples_of_8_within_the_block(mid, keep, kept):
    assert kept_channels(mid, keep) == kept


def test_a_pruned_block_computes_what_its_kept_channels_computed_before():
    torch.manual_seed(0)
    block = ConvBlock(16, 24, 5, 6, 1, 1)
    for bn in (m for m in block.modules() if isinstance(m, torch.nn.BatchNorm2d)):   # trained-looking BN
        bn.weight.data.uniform_(-1, 1), bn.bias.data.normal_(), bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
    block.eval()
    x = torch.randn(2, 16, 8, 8)
    expand, _, _, dw, bn2, _, project, _ = block.body
    importance = bn2.weight.abs() * project.weight.abs().sum(dim=(0, 2, 3))
    kept = set(torch.topk(importance, 48).indices.tolist())
    masked = copy.deepcopy(block)
    dropped = [c for c in range(96) if c not in kept]
    masked.body[6].weight.data[:, dropped] = 0   # the dropped channels no longer reach the output
    prune_expansion(block, 0.5)
    assert block.body[0].out_channels == block.body[3].in_channels == block.body[6].in_channels == 48
    assert block.body[3].groups == 48 and block.body[4].num_features == 48
    torch.testing.assert_close(block(x), masked(x))
    grouped = ConvBlock(16, 16, 3, 1, 2, 1)
    assert expansion_parts(grouped) is None
    with pytest.raises(ValueError, match="cannot prune the expansion of a ConvBlock"):
        prune_expansion(grouped, 0.5)


def test_pruned_costs_agree_with_the_pruned_network_and_with_its_layers_alone():
    space = _macro()
    arch = space.decode("22120201@fp32,fp32:0.5,int8:0.75,fp32,int8,fp32,int8,fp32:0.5,int8,fp32")
    assert arch.keeps[1:3] == (0.5, 0.75) and arch.keeps[7] == 1.0   # layer 6 is an identity: nothing to prune
    layers = space.layer_costs(arch)
    model = space.build(arch)
    assert _params(model) == sum(lc.params for lc in layers)
    assert _params(model) < _params(space.build(space.dense(arch)))
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 10)
    # layer 0 is ir_5x5_t6 from 32 channels: 192 expansion channels, half kept = the key of an e3 block
    assert str(layers[1].key).startswith("ir_k5_s2_e3_relu")
    assert layers[2].key.expansion == 4.5 and layers[2].key.precision == "int8"
    for lc in layers[1:3]:   # a pruned key builds alone (tables measure it) with the parameters it counts
        key = parse_cost_key(str(lc.key))
        assert key == lc.key and _params(space.build_layer(key)) == lc.params
    keys = {str(lc.key) for lc in space.enumerate_layers()[0]}
    assert {str(lc.key) for lc in layers} <= keys
    flops_dense = sum(lc.macs for lc in space.layer_costs(space.dense(arch)))
    assert sum(lc.macs for lc in layers) < flops_dense


def test_the_mobilenet_space_prunes_timm_inverted_residuals_as_it_costs_them():
    from test_policy import TINY_MOBILENET

    space = get_space("mobilenet", {**TINY_MOBILENET, "compression": KEEP}, num_classes=10)
    rng = np.random.default_rng(1)
    pruned = 0
    for _ in range(20):
        arch = space.sample(rng)
        model = space.build(arch)
        assert _params(model) == sum(lc.params for lc in space.layer_costs(arch)), space.to_string(arch)
        assert model.eval()(torch.randn(1, 3, 16, 16)).shape == (1, 10)
        pruned += any(k < 1 for k in arch.keeps)
        for lc in space.layer_costs(arch):   # a pruned key builds alone with the parameters it counts
            key = parse_cost_key(str(lc.key))
            if key.expansion % 1 or any(k < 1 for k in arch.keeps):
                assert _params(space.build_layer(key)) == lc.params
    assert pruned
    # squeeze-excite follows the kept channels
    se_arch = space.decode("r16_w0.5|k5e6,k3e6s|k3e6@fp32,fp32:0.5,fp32,fp32")
    model = space.build(se_arch)
    assert _params(model) == sum(lc.params for lc in space.layer_costs(se_arch))
    assert model.blocks[1][1].se.conv_reduce.in_channels == model.blocks[1][1].conv_dw.out_channels == 24


def test_keep_ratios_round_trip_mutate_and_read_one_string_per_network():
    space = _macro()
    rng = np.random.default_rng(0)
    seen_keep_mutation = False
    for _ in range(60):
        arch = space.sample(rng)
        assert space.decode(space.to_string(arch)) == arch
        assert space.from_decisions(space.to_decisions(arch)) == arch
        assert len(space.decision_sizes()) == len(space.to_decisions(arch)) == 8 + 2 * 10
        child = space.mutate(arch, rng)
        assert space.decode(space.to_string(child)) == child
        seen_keep_mutation |= child.base == arch.base and child.keeps != arch.keeps
        for keep, live in zip(arch.keeps, space.prunable_units(arch.base)):
            assert live or keep == 1.0   # nothing to prune (stem, identities, head): keeps all
    assert seen_keep_mutation
    assert ":" not in space.to_string(space.dense(space.sample(rng)))
    assert space.encode([arch]).shape == (1, 8 * 3 + 20)
    # the stem cannot be pruned: a keep ratio there is read as 1, so the two strings are one network
    assert space.decode("22120201@fp32:0.5" + ",fp32" * 9) == space.decode("22120201@fp32" + ",fp32" * 9)


def test_half_the_sampled_policies_prune_nothing():
    """Drawn per unit alone, nine prunable units would leave a network whole 1 time in 3^9: a search would never
    see the dense networks its pruned ones compete with."""
    space, rng = _macro(), np.random.default_rng(1)
    samples = [space.sample(rng) for _ in range(400)]
    whole = sum(all(k == 1.0 for k in a.keeps) for a in samples)
    assert 160 <= whole <= 240
    pruned = [a for a in samples if any(k < 1 for k in a.keeps)]
    assert {k for a in pruned for k in a.keeps} == {1.0, 0.75, 0.5}   # the pruned ones draw every ratio
    # precisions are drawn alike in both halves
    assert {p for a in samples for p in a.precisions} == {"fp32", "int8"}


@pytest.mark.parametrize("text, message", [
    ("22120201@fp32,fp32:0.3,fp32,fp32,fp32,fp32,fp32,fp32,fp32,fp32", "keep ratio '0.3' is not in the space's"),
    ("22120201@fp32,fp32:x,fp32,fp32,fp32,fp32,fp32,fp32,fp32,fp32", "keep ratio 'x'"),
])
def test_a_bad_keep_ratio_in_a_string_is_named(text, message):
    with pytest.raises(ValueError, match=message):
        _macro().decode(text)


@pytest.mark.parametrize("keep, message", [([0.5], "must include 1"), ([1, 1.5], "not in (0, 1]"),
                                           ([1, 0.5, 0.5], "unique")])
def test_keep_choices_are_validated(keep, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _macro({"precisions": ["fp32"], "keep": keep})


def test_options_without_keep_dump_as_before():
    assert _macro({"precisions": ["fp32", "int8"]}).options.model_dump(mode="json")["compression"] == \
        {"precisions": ["fp32", "int8"]}
    assert _macro().options.model_dump(mode="json")["compression"]["keep"] == [1.0, 0.75, 0.5]


class _Recorder:
    """A test double of an evaluator: records what it is asked to train, moves the weights so training shows."""

    prunes = True

    def __init__(self):
        self.calls = []

    def _step(self, model, what):
        self.calls.append((what, sum(p.numel() for p in model.parameters())))
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01)

    def evaluate(self, model, resolution):
        self._step(model, "evaluate")
        return {"accuracy": 0.5, "train_seconds": 2.0}

    def train_dense(self, model, resolution):
        self._step(model, "dense")
        return {"accuracy": 0.5}

    def fine_tune_pruned(self, model, resolution, prune, dense):
        prune(model)
        self._step(model, "fine_tune")
        return {"accuracy": 0.4, "accuracy_unpruned": dense["accuracy"]}


def test_a_pruned_candidate_is_trained_dense_then_pruned_then_fine_tuned():
    from nas.trial import build_seeded, train_candidate

    space = _macro()
    arch = space.decode("22120201@fp32,fp32:0.5,fp32,fp32,fp32,fp32,fp32,fp32,fp32,fp32")
    evaluator = _Recorder()
    model, metrics = train_candidate(space, evaluator, arch, seed=3)
    dense_params, pruned_params = _params(space.build(space.dense(arch))), _params(space.build(arch))
    assert evaluator.calls == [("dense", dense_params), ("fine_tune", pruned_params)]
    assert metrics == {"accuracy": 0.4, "accuracy_unpruned": 0.5}
    # the pruned network loads into build(arch) (what export and the zoo build), and started from the dense
    # network's seeded weights: its stem is the dense stem plus the two training steps
    fresh = space.build(arch)
    fresh.load_state_dict(model.state_dict())
    dense = build_seeded(space, space.dense(arch), 3)
    torch.testing.assert_close(model.stem[0].weight, dense.stem[0].weight + 0.02)
    # a candidate that prunes nothing is trained once, as before
    evaluator.calls.clear()
    _, metrics = train_candidate(space, evaluator, space.dense(arch), seed=3)
    assert [c[0] for c in evaluator.calls] == ["evaluate"] and "accuracy_unpruned" not in metrics


def test_an_evaluator_with_only_the_one_step_pruning_hook_still_prunes(tmp_path):
    """A plug-in written before `train_dense`/`fine_tune_pruned` existed overrides `evaluate_pruned` alone: it is
    called as before (and nothing is shared through `TrainedNetworks`)."""
    from nas.evaluation.base import Evaluator
    from nas.trial import TrainedNetworks, train_candidate

    class OneStep(_Recorder):
        train_dense = fine_tune_pruned = Evaluator.train_dense

        def evaluate_pruned(self, model, resolution, prune):
            self._step(model, "dense")
            prune(model)
            self._step(model, "fine_tune")
            return {"accuracy": 0.3, "accuracy_unpruned": 0.5}

    from nas.evaluation import make_evaluator

    space, evaluator = _macro(), OneStep()
    evaluator.seed, evaluator.options = 0, make_evaluator("proxy", {}, seed=0).options
    arch = space.decode("22120201@fp32,fp32:0.5,fp32,fp32,fp32,fp32,fp32,fp32,fp32,fp32")
    model, metrics = train_candidate(space, evaluator, arch, 3, TrainedNetworks(tmp_path, evaluator, seed=3))
    assert metrics == {"accuracy": 0.3, "accuracy_unpruned": 0.5} and [c[0] for c in evaluator.calls] == \
        ["dense", "fine_tune"]
    assert _params(model) == _params(space.build(arch)) and not list(tmp_path.iterdir())


def test_the_policies_of_one_network_share_its_training(tmp_path):
    """`TrainedNetworks`: the fp32 network of an unpruned policy, and the dense phase of a pruned one, are trained
    once per network and loaded for its other policies, with the same weights and metrics."""
    from nas.evaluation import make_evaluator
    from nas.trial import TrainedNetworks, train_candidate

    space = _macro()
    evaluator = _Recorder()
    evaluator.seed, evaluator.options = 0, make_evaluator("proxy", {}, seed=0).options
    trained = TrainedNetworks(tmp_path, evaluator, seed=3)
    a, b = (space.decode(f"22120201@{p},fp32,fp32,fp32,fp32,fp32,fp32,fp32,fp32,fp32") for p in ("fp32", "int8"))
    first, m1 = train_candidate(space, evaluator, a, 3, trained)
    second, m2 = train_candidate(space, evaluator, b, 3, trained)   # another precision of the same network
    assert [c[0] for c in evaluator.calls] == ["evaluate"]
    assert m1 == {"accuracy": 0.5, "train_seconds": 2.0} and m2 == {"accuracy": 0.5, "train_seconds": 0.0}
    for x, y in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y)
    evaluator.calls.clear()
    p1, p2 = (space.decode(f"22120201@fp32,fp32:{k},fp32,fp32,fp32,fp32,fp32,fp32,fp32,fp32") for k in ("0.5", "0.75"))
    pruned1, _ = train_candidate(space, evaluator, p1, 3, trained)
    pruned2, m = train_candidate(space, evaluator, p2, 3, trained)   # another keep ratio: the dense phase is loaded
    assert [c[0] for c in evaluator.calls] == ["dense", "fine_tune", "fine_tune"] and m["accuracy_unpruned"] == 0.5
    assert _params(pruned1) == _params(space.build(p1)) and _params(pruned2) == _params(space.build(p2))
    assert len(list(tmp_path.glob("full-*.safetensors"))) == len(list(tmp_path.glob("dense-*.safetensors"))) == 1
    # another seed (other initial weights) or other training options: another network, trained anew
    evaluator.calls.clear()
    train_candidate(space, evaluator, a, 4, TrainedNetworks(tmp_path, evaluator, seed=4))
    evaluator.options = make_evaluator("proxy", {"epochs": 2}, seed=0).options
    train_candidate(space, evaluator, a, 3, TrainedNetworks(tmp_path, evaluator, seed=3))
    assert [c[0] for c in evaluator.calls] == ["evaluate", "evaluate"]


def test_a_pruned_candidate_row_has_the_accuracy_before_pruning(tmp_path):
    from nas.checks import load_run
    from nas.context import RunContext
    from nas.trial import evaluate_candidate

    sets = ["compression=search", "space={name: macro, options: {resolution: 16, compression: "
            "{precisions: [fp32], keep: [1, 0.5]}}}", "constraints.max_flops=null",
            "constraints.latency=[{profile: fpga-zc706-int8, max_ms: 100, source: profile}]",
            "space.options.compression.precisions=[int8]", "evaluator.options.limit=100",
            "evaluator.options.epochs=0.2"]
    ctx = RunContext(load_run(ASSETS / "tiny.yaml", sets).recipe, tmp_path)
    assert "accuracy_unpruned" in ctx.metrics
    space = ctx.space
    arch = "22120201@int8,int8:0.5,int8:0.5,int8,int8,int8,int8,int8,int8,int8"
    row = evaluate_candidate(ctx, arch)
    assert row["status"] == "ok", row.get("error")
    # another policy of the network: its dense phase is the one trained above (the run's trained/ folder)
    again = evaluate_candidate(ctx, "22120201@int8,int8:0.5,int8,int8,int8,int8,int8,int8,int8,int8")
    assert again["status"] == "ok" and again["accuracy_unpruned"] == row["accuracy_unpruned"]
    assert len(list((tmp_path / "trained").glob("dense-*.safetensors"))) == 1
    assert 0 <= row["accuracy_unpruned"] <= 1 and row["flops"] == sum(lc.macs for lc in
                                                                       space.layer_costs(space.decode(arch)))
    assert row["flops"] < sum(lc.macs for lc in space.layer_costs(space.dense(space.decode(arch))))


def test_a_keep_ratio_recipe_with_an_evaluator_that_cannot_prune_is_refused_in_one_line():
    from nas.checks import load_run
    from nas.recipe import RecipeError

    sets = ["compression=search", "space={name: macro, options: {compression: {precisions: [fp32], keep: [1, 0.5]}}}",
            "constraints.max_flops=null", "evaluator={name: fixed_cost}"]
    with pytest.raises(RecipeError) as err:
        load_run(ASSETS / "tiny.yaml", sets)
    assert "space.options.compression.keep: evaluator 'fixed_cost' cannot fine-tune a pruned network" in \
        str(err.value) and "\n" not in str(err.value)


def test_a_space_that_cannot_prune_refuses_keep_ratios():
    from search_spaces.base import SearchSpace
    from search_spaces.macro import MacroSpace
    from search_spaces.policy import offers_pruning

    class Unprunable(MacroSpace):
        pruned_cost = SearchSpace.pruned_cost

    assert not offers_pruning(Unprunable) and offers_pruning(MacroSpace)
    base = Unprunable(Unprunable.Options(compression={"precisions": ["fp32"], "keep": [1, 0.5]}), num_classes=10)
    with pytest.raises(ValueError, match="cannot prune its layers"):
        PolicySpace(base)
    assert PolicySpace(Unprunable(Unprunable.Options(compression={"precisions": ["fp32"]}), num_classes=10))


def test_the_proxy_prunes_and_fine_tunes_within_the_training_of_one_network():
    from nas.evaluation import make_evaluator
    from nas.trial import build_seeded

    space = _macro()
    arch = space.decode("22120201@fp32,fp32:0.5,fp32:0.5,fp32,fp32,fp32,fp32,fp32,fp32,fp32")
    evaluator = make_evaluator("proxy", {"limit": 200, "epochs": 1, "batch_size": 16, "fine_tune_epochs": 0.5},
                               seed=0)
    pruned = []
    model = build_seeded(space, space.dense(arch), 0)
    metrics = evaluator.evaluate_pruned(model, 16, lambda m: pruned.append(space.prune(m, arch)))
    plain = evaluator.evaluate(build_seeded(space, space.dense(arch), 0), 16)
    assert pruned and metrics["steps"] == len(metrics["losses"]) == plain["steps"] == 10
    assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["accuracy_unpruned"] <= 1
    assert _params(model) == _params(space.build(arch))
    with pytest.raises(ValueError, match="leaves no dense training"):
        make_evaluator("proxy", {"epochs": 1, "fine_tune_epochs": 1}, seed=0)


def test_every_policy_of_one_network_starts_from_that_networks_weights():
    from nas.trial import build_seeded

    space, plain = _macro(), get_space("macro", {"resolution": 16}, num_classes=10)
    a = space.decode("22120201@fp32,int8,int8,fp32,int8,fp32,int8,fp32,int8,fp32")
    b = space.decode("22120201@int8,fp32:0.5,int8,fp32,int8,fp32,int8,fp32,int8,int8")
    reference = build_seeded(plain, plain.decode("22120201"), 5).state_dict()
    for arch in (a, space.dense(b)):
        state = build_seeded(space, arch, 5).state_dict()
        assert state.keys() == reference.keys()
        assert all(torch.equal(state[k], reference[k]) for k in reference)
    other = build_seeded(space, space.decode("22120202@fp32,int8,int8,fp32,int8,fp32,int8,fp32,int8,fp32"), 5)
    assert not torch.equal(other.stem[0].weight, reference["stem.0.weight"])
