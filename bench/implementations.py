"""Per-network engine selection (issue 20): how much `hardware_profiles.select` gains over the default engine.

    python bench/implementations.py --device cpu --threads 1,2 --out bench/measured/implementations_cpu.json
    python bench/implementations.py --device cuda --out bench/measured/implementations_cuda.json
        [--implementations a,b[k=v,...]] [--compile timm|all|none | --no-compile] [--sampled 20] [--resolution 224]
        [--networks timm,zoo,sampled] [--rounds 5] [--warmup 10] [--repeats 30] [--margin 0.03] [--quick]

What it measures. For one device and each thread count of `--threads` (one CUDA run: threads mean nothing there),
side by side in one run, on these networks:

- timm: ten mobile models (`TIMM`) at `--resolution` (224), random weights (seed 0), nothing downloaded;
- zoo: every network of the shipped zoo (``zoo/*/*/card.json``) with its released weights and ONNX graph, the
  detector included (its first output, the class logits, is what the parity check compares);
- sampled: `--sampled` networks per search space of `SPACES` (every registered space that builds an image
  classifier), drawn with ``space.sample`` from one seeded generator: mobilenet and muffnet with their default
  options (224 px, 1000 classes; the quickstart's 32 px MobileNets are the zoo's), fbnet, nb201 and macro at their
  CIFAR-size default (32 px, 10 classes);

each network goes through `select` over every implementation of the device available here (`--implementations`
restricts them; ``torch.compile`` costs seconds to minutes per network and variant, so by default it is a
candidate for the timm networks only: ``--compile all|none``), which records every candidate's latency.

The honest ratio. A selection's own figures favour its winner: the chosen candidate is the minimum of several noisy
figures, so its lead over the default is biased upwards. After each selection a separate confirmation pass
(`Selection` on exactly these candidates, fresh preparation, fresh interleaved rounds of the same protocol) times
the chosen candidate, the device's default (onnxruntime-cpu opt_level=all sequential on a CPU, torch-cuda CUDA-graph
replay fp32 on a GPU), PyTorch eager's default (channels_last=False, fp32) and, where it differs, the fp32-only
choice: the best fp32 candidate of the same selection rounds, kept as the default unless it beats it by the margin
(`choose`), because bf16/fp16 change the numerics. The ratios reported (chosen / default, chosen / eager, fp32
choice / default) are from the confirmation pass; the selection's own chosen / default is printed beside them to
show the bias. A figure is a candidate's smallest round median, its spread the range of its round medians over it.
Noise: a ratio is beyond noise when it is off 1 by more than `NOISE_FACTOR` (2) times the larger confirmation spread
of its two candidates (twice the spread, the factor ``nas.zoo verify`` flags a moved latency by).

Goals (issue 20), per (device, threads): the selected implementation is never slower than the default beyond noise,
and it is faster beyond noise on at least a third of the networks.

Output: per network, the chosen implementation with its settings and the ratios; per (device, threads) a summary
(how often the choice differs from the default and is faster beyond noise, median and worst confirmed ratio, the
distinct winners and their counts, per-group figures, the goals) and the candidates that failed. `--out FILE.json`
holds every network's selection entries and confirmation, written atomically after each network; run the same
command again and the networks it holds for the same device, threads and protocol are not measured again.
`--quick` (3 timm networks, 3 per space, 2 rounds of 10 runs) is a smoke run.

It needs torch, timm, onnxruntime, numpy, pydantic and safetensors (OpenVINO where installed), not Ray, LightGBM,
W&B, scikit-learn or SciPy: zoo networks are built from their cards without `nas.zoo` (timm imports W&B only if
it is installed), so it runs as it is on a GPU machine.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.errors import InputError, sha256_file  # noqa: E402
from core.io import atomic_write_json  # noqa: E402
from hardware_profiles.implementations import (Candidate, ImplementationSpec, Network,  # noqa: E402
                                               get_implementation, implementations, parse_specs)
from hardware_profiles.select import Plan, SelectSettings, Selection, choose, load_network, select  # noqa: E402

FORMAT = "hwnas-bench-implementations/1"
TIMM = ("mobilenetv2_100", "mobilenetv3_large_100", "mnasnet_100", "efficientnet_lite0", "fbnetc_100", "lcnet_100",
        "mobilenetv2_050", "mobilenetv3_small_100", "tf_mobilenetv3_small_minimal_100", "ghostnet_100")
QUICK_TIMM = ("mobilenetv2_050", "mobilenetv3_small_100", "lcnet_100")
SPACES = {"mobilenet": ({}, 1000), "muffnet": ({}, 1000), "fbnet": ({}, 10), "nb201": ({}, 10), "macro": ({}, 10)}
"""Space name: (options, classes) of the sampled networks (the lrssd detector space is left out: not a classifier)."""
EAGER = {"cpu": "torch-cpu-eager", "cuda": "torch-cuda-eager"}
NOISE_FACTOR = 2.0


@dataclass
class Spec:
    """One network of the bench, built only when it is measured (one module in memory at a time)."""

    name: str
    group: str              # timm | zoo | the space's name
    recipe: dict[str, Any]
    build: Callable[[], Network]


def timm_specs(names: tuple[str, ...], resolution: int) -> list[Spec]:
    def build(name: str) -> Network:
        import torch

        torch.manual_seed(0)
        return load_network(SelectSettings(timm_model=f"{name}@{resolution}"))

    return [Spec(f"timm:{n}", "timm", {"timm_model": n, "resolution": resolution}, lambda n=n: build(n))
            for n in names]


def zoo_specs() -> list[Spec]:
    """The shipped zoo's networks, built from their cards with search_spaces and safetensors (not `nas.zoo`, which
    imports the search stack: scikit-learn, SciPy), the weights checked against the card's SHA-256."""
    specs = []
    for card_path in sorted((REPO / "zoo").glob("*/*/card.json")):
        card = json.loads(card_path.read_text(encoding="utf-8"))
        s = card["space"]
        recipe = {"space": s["name"], "options": s["options"], "num_classes": s["num_classes"], "arch": card["arch"],
                  "zoo": f"{card['name']}@{card['version']}"}
        specs.append(Spec(f"zoo:{card['name']}", "zoo", recipe,
                          lambda folder=card_path.parent, card=card, recipe=recipe: _zoo_network(folder, card, recipe)))
    return specs


def _zoo_network(folder: Path, card: dict[str, Any], recipe: dict[str, Any]) -> Network:
    from safetensors.torch import load_file

    from search_spaces import make_space

    weights = folder / "weights.safetensors"
    if sha256_file(weights) != card["source"]["weights_sha256"]:
        raise ValueError(f"{weights}: differs from the weights its card.json records")
    space = make_space(recipe["space"], recipe["options"], recipe["num_classes"])
    arch = space.decode(card["arch"])
    module = space.build(arch)
    module.load_state_dict(load_file(str(weights)), strict=True)
    onnx = folder / "model.onnx"
    return Network(tuple(space.input_shape(arch)), recipe, module=module.eval(),
                   onnx_path=onnx if onnx.is_file() else None)


def sampled_specs(per_space: int, seed: int) -> list[Spec]:
    """`per_space` distinct architectures per space of `SPACES`, drawn in order from one generator per space (so a
    smaller count gives the first networks of a larger one)."""
    from search_spaces import make_space

    specs = []
    for name, (options, classes) in SPACES.items():
        space = make_space(name, options, classes)
        rng, seen = np.random.default_rng(seed), {}
        for _ in range(per_space * 20):
            if len(seen) == per_space:
                break
            arch = space.sample(rng)
            seen.setdefault(space.to_string(arch), arch)
        for i, (text, arch) in enumerate(seen.items()):
            recipe = {"space": name, "options": space.options.model_dump(mode="json"), "num_classes": classes,
                      "arch": text}
            specs.append(Spec(f"{name}:{i:02d}", name, recipe,
                              lambda space=space, arch=arch, recipe=recipe: _space_network(space, arch, recipe)))
    return specs


def _space_network(space, arch, recipe: dict[str, Any]) -> Network:
    import torch

    torch.manual_seed(0)
    return Network(tuple(space.input_shape(arch)), recipe, module=space.build(arch).eval())


def candidate_names(device: str, only: str | None, compile_for: str, group: str, threads: int = 1) -> str:
    """The implementations a network of `group` is selected among (``torch.compile`` only where `compile_for`
    asks), as `SelectSettings.implementations` takes them (settings filters checked for `threads`)."""
    specs = parse_specs(only, threads=threads) if only else [ImplementationSpec(i) for i in implementations(device)]
    compiles = compile_for == "all" or (compile_for == "timm" and group == "timm")
    return ",".join(s.text() for s in specs if compiles or getattr(s.implementation, "mode", "") != "compile")


def short(key: str | None) -> str:
    """A candidate key without its thread count (the table's column says it), e.g. ``onnxruntime-cpu[...]``."""
    if key is None:
        return "-"
    name, _, rest = key.partition("[")
    parts = [p for p in rest.rstrip("]").split(",") if p and not p.startswith("threads=")]
    return f"{name}[{','.join(parts)}]" if parts else name


def _compare(confirmed: dict[str, dict[str, Any]], a: str | None, b: str | None) -> tuple[float | None, float | None]:
    """(latency of `a` / latency of `b`, noise: `NOISE_FACTOR` x the larger spread), from the confirmation pass."""
    ea, eb = confirmed.get(a or ""), confirmed.get(b or "")
    if not ea or not eb or ea["latency_ms"] is None or eb["latency_ms"] is None:
        return None, None
    return ea["latency_ms"] / eb["latency_ms"], NOISE_FACTOR * max(ea["spread"], eb["spread"])


def confirm(network: Network, roles: dict[str, Candidate], settings: SelectSettings, log) -> dict[str, Any]:
    """Time the candidates of `roles` (chosen, default, eager, fp32) afresh in interleaved rounds; the ratios of the
    chosen and the fp32 choice to the default and of the chosen to eager, with their noise."""
    unique = list({c.key: c for c in roles.values()}.values())
    sel = Selection(network, unique, settings, out=None, log=log)
    with tempfile.TemporaryDirectory(prefix="bench-impl-") as tmp:
        try:
            sel.prepare(Path(tmp))
            sel.measure()
        finally:
            sel.close()
    for e in sel.entries.values():
        e.summarise()
    confirmed = {k: asdict(e) for k, e in sel.entries.items()}
    keys = {role: c.key for role, c in roles.items()}
    ratio, noise = _compare(confirmed, keys["chosen"], keys["default"])
    eager, _ = _compare(confirmed, keys["chosen"], keys["eager"])
    fp32, fp32_noise = _compare(confirmed, keys.get("fp32"), keys["default"])
    return {"roles": keys, "ratio_default": ratio, "noise": noise, "ratio_eager": eager,
            "fp32_ratio_default": fp32, "fp32_noise": fp32_noise, "entries": list(confirmed.values())}


def measure_network(spec: Spec, settings: SelectSettings, log) -> dict[str, Any]:
    """Select an implementation for one network, then confirm the chosen one against the default and eager."""
    start = time.perf_counter()
    network = spec.build()
    plan = select(network, settings, log=log)
    fp32_key, fp32_why = choose([e for e in plan.entries if e.precision == "fp32"], plan.default, settings.margin)
    record = {"name": spec.name, "group": spec.group, "recipe": spec.recipe, "input_shape": list(network.input_shape),
              "implementations": settings.implementations, "chosen": plan.chosen, "default": plan.default,
              "why": plan.why, "fp32_chosen": fp32_key, "fp32_why": fp32_why,
              "selection_ratio_default": _selection_ratio(plan), "entries": [asdict(e) for e in plan.entries]}
    if plan.chosen is not None:
        roles = {"chosen": _candidate(plan, plan.chosen), "default": _default_candidate(settings),
                 "eager": get_implementation(EAGER[settings.device]).default(settings.threads)}
        if fp32_key is not None:
            roles["fp32"] = _candidate(plan, fp32_key)
        record["confirmation"] = confirm(network, roles, settings, log)
    record["seconds"] = round(time.perf_counter() - start, 1)
    return record


def _candidate(plan: Plan, key: str | None) -> Candidate:
    e = plan.entry(key)
    return Candidate(e.implementation, e.settings)


def _default_candidate(settings: SelectSettings) -> Candidate:
    """The device's default engine with its default settings (what `select` compares with, installed or not)."""
    impl = next(i for i in implementations(settings.device) if i.default_for_device)
    return impl.default(settings.threads)


def _selection_ratio(plan: Plan) -> float | None:
    """Chosen / default from the selection's own rounds (biased in the chosen one's favour)."""
    best, base = plan.best, plan.entry(plan.default)
    if best is None or base is None or base.latency_ms is None:
        return None
    return best.latency_ms / base.latency_ms


def verdict(ratio: float | None, noise: float | None) -> str:
    """faster / slower beyond noise, same within it, or ``-`` when unconfirmed."""
    if ratio is None:
        return "-"
    return "faster" if ratio < 1 - noise else "slower" if ratio > 1 + noise else "same"


def figures(records: list[dict[str, Any]], fp32: bool = False) -> dict[str, Any]:
    """The summary figures of some networks' confirmed choices (all precisions, or the fp32-only choice)."""
    chosen, ratio, noise = ("fp32_chosen", "fp32_ratio_default", "fp32_noise") if fp32 else \
        ("chosen", "ratio_default", "noise")
    rows = [r for r in records if (r.get("confirmation") or {}).get(ratio) is not None]
    ratios = np.array([r["confirmation"][ratio] for r in rows])
    verdicts = Counter(verdict(r["confirmation"][ratio], r["confirmation"][noise]) for r in rows)
    n = len(rows)
    out = {"networks": n, "unconfirmed": len(records) - n,
           "differs_from_default": sum(r[chosen] != r["default"] for r in rows),
           "faster_beyond_noise": verdicts["faster"], "slower_beyond_noise": verdicts["slower"],
           "share_faster": verdicts["faster"] / n if n else None,
           "median_ratio_default": float(np.median(ratios)) if n else None,
           "worst_ratio_default": float(ratios.max()) if n else None,
           "winners": dict(Counter(short(r[chosen]) for r in rows).most_common()),
           "winning_engines": dict(Counter(r[chosen].partition("[")[0] for r in rows).most_common())}
    out["goal_never_slower"] = n > 0 and verdicts["slower"] == 0
    out["goal_faster_third"] = n > 0 and verdicts["faster"] >= n / 3
    if not fp32:
        eager = [r["confirmation"]["ratio_eager"] for r in rows if r["confirmation"]["ratio_eager"] is not None]
        biased = [r["selection_ratio_default"] for r in rows if r["selection_ratio_default"] is not None]
        out["median_ratio_eager"] = float(np.median(eager)) if eager else None
        out["median_selection_ratio_default"] = float(np.median(biased)) if biased else None
    return out


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One (device, threads) run: figures over all networks, per group, fp32-only, and the candidates that failed."""
    groups = sorted({r["group"] for r in records}, key=lambda g: (g != "timm", g != "zoo", g))
    failed = sorted({(r["name"], e["implementation"], short(Candidate(e["implementation"], e["settings"]).key),
                      e["status"], e["reason"] or "")
                     for r in records for e in r["entries"] + (r.get("confirmation") or {}).get("entries", [])
                     if e["status"] in ("failed", "mismatch")})
    skipped = sorted({f"{e['implementation']}: {e['reason']}" for r in records for e in r["entries"]
                      if e["status"] == "skipped"})
    return {"all": figures(records), "fp32": figures(records, fp32=True),
            "groups": {g: figures([r for r in records if r["group"] == g]) for g in groups},
            "failed": [dict(zip(("network", "implementation", "candidate", "status", "reason"), f)) for f in failed],
            "skipped": skipped}


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def network_table(records: list[dict[str, Any]]) -> str:
    """Markdown: one row per network, the ratios from the confirmation pass (the selection's own beside them)."""
    lines = ["| network | input | chosen | sel. x default | x default | noise | verdict | x eager | fp32 choice | "
             "fp32 x default | fp32 verdict | s |", "|---" * 12 + "|"]
    for r in records:
        c = r.get("confirmation") or {}
        fp32 = "same" if r["fp32_chosen"] == r["chosen"] else short(r["fp32_chosen"])
        lines.append(f"| {r['name']} | {'x'.join(map(str, r['input_shape'][2:]))} | {short(r['chosen'])} | "
                     f"{_fmt(r['selection_ratio_default'])} | {_fmt(c.get('ratio_default'))} | "
                     f"{_fmt(c.get('noise'), '.1%')} | {verdict(c.get('ratio_default'), c.get('noise'))} | "
                     f"{_fmt(c.get('ratio_eager'))} | {fp32} | {_fmt(c.get('fp32_ratio_default'))} | "
                     f"{verdict(c.get('fp32_ratio_default'), c.get('fp32_noise'))} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def summary_table(summary: dict[str, Any]) -> str:
    """Markdown: the run's figures, all precisions against fp32 only, then per group."""
    a, f = summary["all"], summary["fp32"]

    def share(d: dict[str, Any], key: str) -> str:
        return f"{d[key]} / {d['networks']} ({d[key] / d['networks']:.0%})" if d["networks"] else "-"

    def winners(d: dict[str, Any]) -> str:
        return f"{len(d['winners'])}: " + ", ".join(f"{k} {v}" for k, v in d["winners"].items())

    rows = [("networks confirmed (unconfirmed)", f"{a['networks']} ({a['unconfirmed']})",
             f"{f['networks']} ({f['unconfirmed']})"),
            ("chosen differs from the default", share(a, "differs_from_default"), share(f, "differs_from_default")),
            ("faster than the default beyond noise", share(a, "faster_beyond_noise"), share(f, "faster_beyond_noise")),
            ("slower than the default beyond noise", share(a, "slower_beyond_noise"), share(f, "slower_beyond_noise")),
            ("median chosen / default (confirmed)", _fmt(a["median_ratio_default"]), _fmt(f["median_ratio_default"])),
            ("worst chosen / default (confirmed)", _fmt(a["worst_ratio_default"]), _fmt(f["worst_ratio_default"])),
            ("median chosen / default (selection's own, biased)", _fmt(a["median_selection_ratio_default"]), ""),
            ("median chosen / PyTorch eager (confirmed)", _fmt(a["median_ratio_eager"]), ""),
            ("distinct winners", winners(a), winners(f)),
            ("goal: never slower than the default within noise", _yes(a["goal_never_slower"]),
             _yes(f["goal_never_slower"])),
            ("goal: faster on at least a third of the networks", _yes(a["goal_faster_third"]),
             _yes(f["goal_faster_third"]))]
    lines = ["| | all precisions | fp32 only |", "|---|---|---|"] + [f"| {k} | {x} | {y} |" for k, x, y in rows]
    lines += ["", "| group | networks | faster beyond noise | slower | median x default | worst | winners |",
              "|---" * 7 + "|"]
    for g, d in summary["groups"].items():
        lines.append(f"| {g} | {d['networks']} | {d['faster_beyond_noise']} | {d['slower_beyond_noise']} | "
                     f"{_fmt(d['median_ratio_default'])} | {_fmt(d['worst_ratio_default'])} | "
                     f"{', '.join(f'{k} {v}' for k, v in d['winning_engines'].items())} |")
    lines += [f"- {x['network']}: {x['candidate']} {x['status']}: {x['reason']}" for x in summary["failed"]]
    lines += [f"- skipped: {x}" for x in summary["skipped"]]
    return "\n".join(lines)


def _yes(ok: bool) -> str:
    return "yes" if ok else "NO"


def network_specs(args: argparse.Namespace) -> list[Spec]:
    """The networks of this run: timm, the shipped zoo, then the sampled ones (`--networks` picks groups)."""
    groups = {g.strip() for g in args.networks.split(",")}
    specs = timm_specs(QUICK_TIMM if args.quick else TIMM, args.resolution) if "timm" in groups else []
    if "zoo" in groups:
        specs += zoo_specs()
    if "sampled" in groups:
        specs += sampled_specs(3 if args.quick else args.sampled, args.seed)
    return specs


def read_out(path: Path | None) -> dict[str, Any]:
    """The earlier results in `--out` to continue from (a fresh document when there are none)."""
    if path is None or not path.is_file():
        return {"format": FORMAT, "runs": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        sys.exit(f"error: --out: {path}: cannot continue from it ({err}); choose another file")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        sys.exit(f"error: --out: {path} is not this bench's output (format {FORMAT} expected); choose another file")
    return data


def run_threads(args: argparse.Namespace, threads: int, specs: list[Spec], data: dict[str, Any]) -> dict[str, Any]:
    """Measure every network at one thread count into `data` (saved to `--out` after each); those `data` holds for
    the same protocol, recipe and implementations are kept. Returns the run (its networks and summary)."""
    settings = SelectSettings(device=args.device, threads=threads, rounds=args.rounds, warmup=args.warmup,
                              repeats=args.repeats, margin=args.margin)
    protocol = {k: getattr(settings, k) for k in ("device", "threads", "rounds", "warmup", "repeats", "margin")}
    digest = hashlib.sha256(json.dumps(protocol, sort_keys=True).encode()).hexdigest()[:8]
    run = data["runs"].setdefault(f"{args.device}/t{threads}/{digest}", {"protocol": protocol, "networks": {}})

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    for i, spec in enumerate(specs, 1):
        names = candidate_names(args.device, args.implementations, args.compile, spec.group, threads)
        old = run["networks"].get(spec.name)
        head = f"[{args.device} t{threads}] {i}/{len(specs)} {spec.name}"
        if old and old["recipe"] == spec.recipe and old["implementations"] == names:
            log(f"{head}: kept from --out")
            continue
        try:
            record = measure_network(spec, replace(settings, implementations=names), log)
        except Exception as err:  # noqa: BLE001 - one network that cannot be built or timed is a note, not the end
            log(f"error: {head}: not measured ({type(err).__name__}: {err})")
            continue
        run["networks"][spec.name] = record | {"machine": data["machine"]}   # a continued run may move machines
        if args.out:
            atomic_write_json(args.out, data)
        c = record.get("confirmation") or {}
        log(f"{head}: {short(record['chosen'])}, x{_fmt(c.get('ratio_default'))} of the default "
            f"({verdict(c.get('ratio_default'), c.get('noise'))}), x{_fmt(c.get('ratio_eager'))} of eager, "
            f"{record['seconds']:.0f} s")
    run["summary"] = summarise([run["networks"][s.name] for s in specs if s.name in run["networks"]])
    if args.out:
        atomic_write_json(args.out, data)
    return run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", default="1", help="CPU thread counts, comma-separated (default 1; not for cuda)")
    p.add_argument("--implementations", metavar="A,B", help="only these implementations (default: all of --device)")
    p.add_argument("--compile", choices=("timm", "all", "none"), default="timm",
                   help="networks torch.compile is a candidate for (default timm: it costs seconds per network)")
    p.add_argument("--no-compile", dest="compile", action="store_const", const="none", help="= --compile none")
    p.add_argument("--networks", default="timm,zoo,sampled", help="groups to measure (default timm,zoo,sampled)")
    p.add_argument("--resolution", type=int, default=224, help="input size of the timm networks")
    p.add_argument("--sampled", type=int, default=20, help="networks sampled per search space")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled networks")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--margin", type=float, default=0.03, help="least gain over the default to leave it")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 timm networks, 3 per space, 2 rounds of 10")
    p.add_argument("--out", type=Path, metavar="FILE.json", help="results, written after each network; continued")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.repeats = 2, 10
    try:
        args.thread_counts = [1] if args.device == "cuda" else [int(t) for t in args.threads.split(",")]
    except ValueError:
        p.error(f"--threads: expected comma-separated integers, got {args.threads!r}")
    wrong = {g.strip() for g in args.networks.split(",")} - {"timm", "zoo", "sampled"}
    if wrong or min(args.thread_counts) < 1:
        p.error(f"--networks: unknown group(s) {sorted(wrong)}" if wrong else "--threads: at least 1")
    try:
        groups = [(g, t, candidate_names(args.device, args.implementations, args.compile, g, t))
                  for g in ("timm", "zoo") for t in args.thread_counts]
    except InputError as err:
        p.error(str(err))
    for group, t, names in groups:
        if not names or any(s.implementation.device != args.device for s in parse_specs(names, threads=t)):
            p.error(f"--implementations: none (or not all) run on --device {args.device} for {group} networks")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            sys.exit("error: --device cuda: no CUDA device is available here")
    from hardware_profiles.backends import machine_info

    specs = network_specs(args)
    data = read_out(args.out)
    data["machine"] = machine_info("torch-cuda" if args.device == "cuda" else "onnxruntime-cpu")
    counts = Counter(s.group for s in specs)
    compiled = {"timm": "the timm networks only", "all": "every network", "none": "no network"}[args.compile]
    groups = ", ".join(f"{g} {n}" for g, n in counts.items())
    print(f"# Engine selection on {args.device}: {len(specs)} networks ({groups}); "
          f"torch.compile a candidate for {compiled}; {args.rounds} interleaved rounds of {args.repeats} runs "
          f"(warm-up {args.warmup}), margin {args.margin:.0%}; ratios from a confirmation pass, noise = "
          f"{NOISE_FACTOR:g} x the larger spread\n")
    for threads in args.thread_counts:
        start = time.perf_counter()
        run = run_threads(args, threads, specs, data)
        records = [run["networks"][s.name] for s in specs if s.name in run["networks"]]
        print(f"## {args.device}, {threads} thread(s) ({time.perf_counter() - start:.0f} s)\n\n"
              f"{network_table(records)}\n\n{summary_table(run['summary'])}\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
