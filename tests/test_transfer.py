"""Few-shot transfer of latency predictors to a new device (`--init-from ... --samples N`)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from predictors.evaluate import main as evaluate_main
from predictors.io import load
from predictors.models import LGBMLatencyPredictor
from predictors.train import main as train_main
from predictors.transfer import ANALYTIC, analytic_terms, few_shot
from search_spaces import get_space

SPACE = get_space("fbnet", num_classes=100)


def devices(n: int, seed: int = 0) -> pd.DataFrame:
    """Networks timed on three synthetic additive devices: `src` (a random cost per block), `noise` (unrelated
    random costs) and `tgt` (1.7x `src`'s block costs plus another offset: a faster/slower sibling of `src`)."""
    rng = np.random.default_rng(seed)
    blocks = [str(lc.key) for lc in SPACE.enumerate_layers()[0]]
    src, noise = (dict(zip(blocks, rng.uniform(0.05, 1.0, len(blocks)))) for _ in range(2))
    archs = [SPACE.sample(rng) for _ in range(n)]
    sums = {name: np.array([sum(cost[k] for k in SPACE.cost_keys(a)) for a in archs])
            for name, cost in (("src", src), ("noise", noise))}
    return pd.DataFrame({"arch": [SPACE.to_string(a) for a in archs], "src_ms": 0.4 + sums["src"],
                         "noise_ms": 0.4 + sums["noise"], "tgt_ms": 0.9 + 1.7 * sums["src"]})


@pytest.fixture(scope="module")
def table():
    return devices(700)


@pytest.fixture(scope="module")
def sources(table):
    tr = table.iloc[:400]
    return [LGBMLatencyPredictor("fbnet", num_classes=100, correction=False).fit(tr.arch.tolist(), tr[c])
            for c in ("noise_ms", "src_ms")]


def test_ten_samples_recover_a_sibling_device_and_ignore_an_unrelated_one(table, sources):
    few, rest = table.iloc[400:410], table.iloc[410:]
    model, fit = few_shot(sources, few.arch.tolist(), few.tgt_ms, source_names=["noise", "src"])
    assert fit.sources == ["src"]
    pred = model.predict(rest.arch.tolist())
    assert spearmanr(pred, rest.tgt_ms)[0] > 0.99
    assert np.median(np.abs(pred / rest.tgt_ms - 1)) < 0.02


def test_analytic_prior_alone_fits_a_macs_bound_device(sources):
    rng = np.random.default_rng(3)
    archs = [SPACE.to_string(SPACE.sample(rng)) for _ in range(300)]
    y = np.array([0.2 + 3e-7 * SPACE.flops(SPACE.decode(a)) for a in archs])
    model, fit = few_shot(sources, archs[:10], y[:10])
    assert fit.sources == []                       # the random source devices explain nothing here
    assert spearmanr(model.predict(archs[10:]), y[10:])[0] > 0.99


def _fake_loo(monkeypatch, errors: dict[tuple[int, ...], float]) -> None:
    """Make each candidate's LOO predictions miss by exp(sqrt(error)) (a given mean squared log error); row 0 of the
    basis matrix names the columns."""
    import predictors.transfer as transfer

    monkeypatch.setattr(transfer, "_loo_predictions",
                        lambda X, y: y * np.exp(np.sqrt(errors[tuple(int(c) for c in X[0])])))


def test_round_off_level_gains_do_not_pick_a_source(monkeypatch):
    # the candidates fit exactly, so every LOO error is floating-point noise; which one "wins" then depends on the
    # BLAS build (a source joined on one machine and not on another). Below the floor, they share the weight.
    import predictors.transfer as transfer

    _fake_loo(monkeypatch, {(0, 1): 7.9e-32, (0, 1, 2): 3.1e-32, (0, 1, 3): 9.9e-32})
    X = np.tile(np.arange(4.0), (10, 1)) + 1.0 * (np.arange(10)[:, None] > 0)   # row 0 names the columns
    *_, share = transfer.mix(X, np.ones(10), [[0, 1], [0, 1, 2], [0, 1, 3]])
    assert np.allclose(share, 1 / 3)


def test_a_real_gain_takes_the_weight(monkeypatch):
    import predictors.transfer as transfer

    _fake_loo(monkeypatch, {(0, 1): 0.04, (0, 1, 2): 0.01, (0, 1, 3): 0.012})
    X = np.tile(np.arange(4.0), (10, 1)) + 1.0 * (np.arange(10)[:, None] > 0)
    *_, share = transfer.mix(X, np.ones(10), [[0, 1], [0, 1, 2], [0, 1, 3]])
    assert share[0] == 0                              # 4x the error of the best: (1/4)^5 < MIN_SHARE, dropped
    assert share[1] > share[2] > 0.2                  # 1.2x: (1/1.2)^5 = 0.40 of the best's weight
    assert share[1] + share[2] == pytest.approx(1.0)


def test_few_shot_fits_degenerate_targets():
    rng = np.random.default_rng(4)
    archs = list(dict.fromkeys(SPACE.to_string(SPACE.sample(rng)) for _ in range(40)))
    spec = ("fbnet", None, 100)
    model, fit = few_shot([], archs[:4], [0.7] * 4, space=spec)   # constant: no block gets a cost
    assert max(model.lookup_.costs_.values()) < 1e-9
    assert np.allclose(model.predict(archs[4:]), 0.7, rtol=1e-3)
    model.lookup_.costs_ = dict.fromkeys(model.lookup_.costs_, 0.0)   # no positive cost at all (crashed LightGBM)
    model.fit_block_model()
    assert np.all(model._fallback(list(model.lookup_.costs_)[:3]) < 1e-5)
    model, fit = few_shot([], archs[:3], [0.5, 0.6, 0.55], space=spec)   # the fewest rows allowed
    assert np.all(np.isfinite(model.predict(archs[3:]))) and np.all(model.predict(archs[3:]) > 0)


@pytest.mark.parametrize("y, message", [
    ([1.0], "at least 3"),
    ([1.0, float("nan"), 2.0], "latency nan of .* is not a positive number"),
    ([1.0, -2.0, 2.0], "latency -2.0 of .* is not a positive number"),
    ([1.0, 2.0], "3 archs but 2 latencies"),
])
def test_few_shot_refuses_degenerate_input(y, message):
    from core.errors import InputError

    archs = [SPACE.to_string(SPACE.sample(np.random.default_rng(i))) for i in range(len(y) if len(y) != 2 else 3)]
    with pytest.raises(InputError, match=message):
        few_shot([], archs, y, space=("fbnet", None, 100))


def test_analytic_terms_count_depthwise_and_dense_macs_apart():
    layers = SPACE.layer_costs(SPACE.decode(" ".join(["3"] * 22)))
    terms = sum(analytic_terms(lc) for lc in layers)
    assert terms[0] + terms[1] == sum(lc.macs for lc in layers)
    assert terms[1] > 0 and terms[ANALYTIC.index("convs")] == sum(len(lc.convs) for lc in layers)


def test_ragged_depthwise_convs_are_a_term_of_their_own():
    from search_spaces.costs import ConvSpec, CostKey, LayerCost

    def dw(channels):
        return LayerCost.of(CostKey("dw", (channels, 8, 8), (channels, 8, 8)),
                            [ConvSpec(channels, channels, 5, 1, 8, 8, groups=channels)])
    ragged, even = ANALYTIC.index("ragged_depthwise_macs"), ANALYTIC.index("depthwise_macs")
    assert analytic_terms(dw(58))[ragged] == dw(58).macs and analytic_terms(dw(58))[even] == 0
    assert analytic_terms(dw(60))[even] == dw(60).macs and analytic_terms(dw(60))[ragged] == 0


def test_calibration_learns_a_device_where_ragged_channel_counts_are_slow():
    # onnxruntime's CPU depthwise conv is ~15x slower per MAC when the channels are not a multiple of 4; muffnet's
    # widths give such counts in some archs and not in others at about the same FLOPs
    space = get_space("muffnet", {"preset": "150m", "resolution": 128}, num_classes=10)

    def device_ms(arch):
        terms = sum(analytic_terms(lc) for lc in space.layer_costs(space.decode(arch)))
        return 0.2 + 1e-8 * terms[0] + 1e-8 * terms[1] + 1.5e-7 * terms[ANALYTIC.index("ragged_depthwise_macs")]

    rng = np.random.default_rng(0)
    archs = list(dict.fromkeys(space.to_string(space.sample(rng)) for _ in range(200)))
    y = np.array([device_ms(a) for a in archs])
    spec = (space.name, space.options.model_dump(mode="json"), space.num_classes)
    model, fit = few_shot([], archs[:12], y[:12], space=spec)
    assert "ragged_depthwise_macs" in fit.basis
    assert np.abs(np.log(model.predict(archs[12:]) / y[12:])).max() < 0.05
    flops = np.array([space.flops(space.decode(a)) for a in archs])
    assert spearmanr(flops, y)[0] < 0.8, "the device must not be FLOPs-bound, or the test shows nothing"


def test_few_shot_refuses_bad_input(sources):
    archs = [SPACE.to_string(SPACE.sample(np.random.default_rng(i))) for i in range(5)]
    with pytest.raises(ValueError, match="at least 3"):
        few_shot(sources, archs[:2], [1.0, 2.0])
    with pytest.raises(ValueError, match="at least one source predictor or the space"):
        few_shot([], archs, np.ones(5))
    mobile = LGBMLatencyPredictor("mobilenet")
    with pytest.raises(ValueError, match="different spaces"):
        few_shot([sources[0], mobile], archs, np.ones(5))


def test_train_transfer_and_evaluate_commands(tmp_path, table, capsys):
    src_csv, tgt_csv = tmp_path / "src.csv", tmp_path / "tgt.csv"
    table.iloc[:400].to_csv(src_csv, index=False)
    table.iloc[400:].to_csv(tgt_csv, index=False)
    for col in ("noise_ms", "src_ms"):
        assert train_main(["--space", "fbnet", "--num-classes", "100", "--table", str(src_csv), "--target", col,
                           "--out", str(tmp_path / col)]) == 0
    out = tmp_path / "few"
    assert train_main(["--init-from", f"{tmp_path / 'noise_ms'},{tmp_path / 'src_ms'}", "--samples", "12",
                       "--table", str(tgt_csv), "--target", "tgt_ms", "--out", str(out)]) == 0
    model, meta = load(out)
    assert meta["transfer"]["samples"] == 12 and meta["transfer"]["sources"] == ["src_ms"]
    assert len(meta["train_archs"]) == 12 and not model.correction
    capsys.readouterr()
    assert evaluate_main(["--model", str(out), "--table", str(tgt_csv), "--target", "tgt_ms", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["training_rows_skipped"] == 12 and rep["rows"] == 300 - 12
    assert rep["predictor"]["within_5pct"] > 0.95


@pytest.mark.parametrize("argv, message", [
    (["--samples", "10"], "needs --table, --target and --samples"),
    (["--samples", "5000", "--table", "{tgt}", "--target", "tgt_ms"], "has only"),
    (["--samples", "10", "--table", "{tgt}", "--target", "nope_ms"], "no column 'nope_ms'"),
])
def test_transfer_errors_are_one_line(tmp_path, table, capsys, argv, message):
    tgt = tmp_path / "tgt.csv"
    table.to_csv(tgt, index=False)
    src = tmp_path / "src"
    train_main(["--space", "fbnet", "--num-classes", "100", "--table", str(tgt), "--target", "src_ms",
                "--max-rows", "200", "--out", str(src)])
    argv = [a.format(tgt=tgt) for a in argv]
    capsys.readouterr()
    for args, words in (([str(src), *argv], message),
                        ([str(tmp_path / "missing"), "--samples", "10", "--table", str(tgt), "--target", "tgt_ms"],
                         "not a predictor folder")):
        assert train_main(["--init-from", *args, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error: ") and re.search(words, err), err
        assert not (tmp_path / "o").exists()


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "fbnet-latency" / "fbnet_latency.csv"


NB201 = get_space("nb201", num_classes=10)


def nb201_devices(n: int, seed: int = 0) -> pd.DataFrame:
    """Distinct NB201 cells timed on two synthetic devices: `cpu` (MACs-bound; pooling costs its window reads) and
    `gpu`, a batch-1 GPU whose time is mostly kernel launches (3 per convolution edge: ReLU, conv, BN; 1 per pooling
    or zeroing edge; none for a skip) plus a little compute, and a non-additive term: 3 % more per cell node that
    sums several non-zero inputs (streams that must join). FLOPs rank the `gpu` device poorly."""
    from search_spaces.nb201 import arch_string

    rng = np.random.default_rng(seed)
    ops = np.unique(rng.integers(5, size=(3 * n, 6)), axis=0)[:n]   # op indices: none, skip, conv1, conv3, pool
    rng.shuffle(ops)
    kernels = np.array([1, 0, 3, 3, 1])[ops].sum(1) * 15            # 15 cells
    joins = sum((ops[:, list(e)] != 0).sum(1) > 1 for e in ((1, 2), (3, 4, 5)))   # nodes 2 and 3
    archs = [arch_string(o) for o in ops.tolist()]
    macs = np.array([NB201.flops(NB201.decode(a)) for a in archs], float)
    cpu = 0.5 + 2e-8 * macs + 0.06 * (ops == 4).sum(1) + 0.01 * (ops == 0).sum(1)
    gpu = (1.0 + 0.008 * kernels + 1e-9 * macs) * (1 + 0.03 * joins)
    return pd.DataFrame({"arch": archs, "cpu_ms": cpu, "gpu_ms": gpu})


def test_nb201_kernel_bound_gpu_from_ten_cells_and_a_cpu(tmp_path):
    from predictors.io import save

    table = nb201_devices(400)
    tr, few, rest = table.iloc[:200], table.iloc[200:210], table.iloc[210:]
    cpu = LGBMLatencyPredictor("nb201", None, 10).fit(tr.arch.tolist(), tr.cpu_ms)
    model, fit = few_shot([cpu], few.arch.tolist(), few.gpu_ms.to_numpy(), source_names=["cpu"])
    pred = model.predict(rest.arch.tolist())
    flops = np.array([NB201.flops(NB201.decode(a)) for a in rest.arch])
    ours, by_flops, by_cpu = (spearmanr(v, rest.gpu_ms)[0] for v in (pred, flops, cpu.predict(rest.arch.tolist())))
    assert by_flops < 0.85 and by_cpu < 0.85, "the target must be neither FLOPs- nor CPU-like, or this shows nothing"
    assert ours > 0.95 and ours > by_flops + 0.15 and ours > by_cpu + 0.15
    assert {"convs", "other_ops"} & set(fit.basis)      # kernel counts, which neither FLOPs nor the CPU see
    assert np.median(np.abs(pred / rest.gpu_ms - 1)) < 0.03
    save(model, tmp_path / "m", archs=few.arch.tolist(), y=few.gpu_ms.to_numpy(), target="gpu_ms",
         extra={"transfer": fit.as_dict()})
    loaded, meta = load(tmp_path / "m")
    assert np.array_equal(loaded.predict(rest.arch.tolist()), pred) and meta["transfer"]["basis"] == fit.basis


def test_other_ops_and_pool_macs_tell_nb201_edges_apart():
    from search_spaces.nb201 import EDGE_OPS

    table = NB201.positional_layers().table[0]           # the five ops of the first edge of the first cell
    terms = {op.name: analytic_terms(lc) for op, lc in zip(EDGE_OPS, table)}
    other, pool = ANALYTIC.index("other_ops"), ANALYTIC.index("pool_macs")
    assert terms["skip_connect"].sum() == 0                                # an identity costs nothing
    assert terms["none"][other] == terms["avg_pool_3x3"][other] == 1       # both run a kernel
    assert terms["avg_pool_3x3"][pool] == 9 * 16 * 32 * 32 and terms["none"][pool] == 0
    assert terms["nor_conv_1x1"][ANALYTIC.index("convs")] == 1 and terms["nor_conv_1x1"][other] == 0


@pytest.mark.skipif(not SHARED.exists(), reason="shared FBNet latency data not beside the checkout")
def test_real_gpu_from_ten_samples_and_another_gpu():
    df = pd.read_csv(SHARED)
    src = LGBMLatencyPredictor("fbnet", num_classes=100, correction=False).fit(
        df.arch[:500].tolist(), df["2080ti_1_ms"][:500])
    model, _ = few_shot([src], df.arch[500:510].tolist(), df.titan_rtx_1_ms[500:510])
    rest = df.iloc[510:1500]
    assert spearmanr(model.predict(rest.arch.tolist()), rest.titan_rtx_1_ms)[0] > 0.95
