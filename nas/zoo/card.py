"""A released network's card: `card.json` (machine-readable) and `MODEL_CARD.md` (the same figures, for people).

The card carries the network's full provenance (project version and git commit, the recipe and its hash, the
dataset and its content hash, the search space and its options, controller, budget, training settings), its
accuracy with the split it was measured on, FLOPs, params, and its latency per hardware profile: measured where
the releasing machine could (live CPU, a table profile's own runtime, the FPGA simulator, CUDA on a GPU), the
search's figure otherwise, each labelled with how it was obtained, the runtime and its version, the device,
threads/batch/precision, the profile's recorded noise and the predicted-vs-measured difference.

No absolute path of the releasing machine may appear in a card (`scrub_paths`): the folders a run knows (run
directory, zoo, repository, home) become placeholders and any other absolute path keeps only its last part.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from nas.export import format_figure

CARD_FORMAT = "hwnas-card/1"
ROUNDS = 5
"""Interleaved rounds a release and `verify` time a network in (the figure: the smallest round median). On the
2-core development VM a 0.1 ms network timed 4 times in one process gave 0.102-0.117 ms with 2 rounds, 0.103-0.111
ms with 5 and 0.099-0.109 ms with 8."""
LIVE_NOISE = 0.20
"""Relative tolerance of a live CPU measurement against the card's (a live profile records no noise): on the same
VM, the same 0.1 ms network timed by `verify` in three separate processes read 0.093-0.121 ms (2 rounds)."""
TABLE_FLOOR = 0.10
"""Smallest tolerance of a table profile's re-measurement: a table's recorded noise is the spread within one
process; on the H200 the same network timed with CUDA graphs in a second process read 5.6 % lower (its table's
spread: 0.3 %)."""
_ABS_PATH = re.compile(r"(?<![\w.)\]}>~-])(?:/[\w.~+-]+){2,}/?")


def scrub_paths(value: Any, roots: dict[str, str]) -> Any:
    """`value` (str, list, dict, nested) with absolute paths replaced: each of `roots` (placeholder -> folder) by
    its placeholder, any other absolute path by ``<...>/`` and its last part."""
    if isinstance(value, dict):
        return {k: scrub_paths(v, roots) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_paths(v, roots) for v in value]
    if not isinstance(value, str):
        return value
    for placeholder, folder in sorted(roots.items(), key=lambda kv: -len(kv[1])):
        if folder and folder != "/":
            value = value.replace(folder, placeholder)
    return _ABS_PATH.sub(lambda m: "<...>/" + m.group(0).rstrip("/").rsplit("/", 1)[-1], value)


def project_record() -> dict[str, Any]:
    """The project's version and, where this copy is a git checkout, its commit and whether it had local edits."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("hwnas")
    except PackageNotFoundError:
        ver = "unknown"
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"name": "hwnas", "version": ver, "git_commit": commit,
            "git_dirty": None if commit is None or dirty is None else bool(dirty)}


def profile_facts(profile) -> dict[str, Any]:
    """How a profile's figures are obtained: its reference, kind, runtime and version, device, threads, batch,
    precision and the relative noise it recorded (None where it recorded none)."""
    manifest = getattr(profile, "manifest", None)
    if manifest is not None:
        noise = manifest.noise.get("median_relative_spread_networks", manifest.noise.get(
            "median_relative_spread_blocks"))
        return {"profile": manifest.ref, "kind": manifest.kind, "runtime": manifest.runtime,
                "runtime_version": manifest.runtime_version or None, "device": manifest.device,
                "threads": manifest.threads or None, "batch": manifest.batch, "precision": manifest.precision,
                "noise": 0.0 if manifest.kind == "simulated" else noise}
    from hardware_profiles.backends import machine_info

    info = machine_info("onnxruntime-cpu")
    return {"profile": profile.name, "kind": "live", "runtime": "onnxruntime", "runtime_version": info["onnxruntime"],
            "device": f"{info.get('cpu', 'CPU')} ({info['cpus']} cores, {info['arch']})",
            "threads": getattr(profile, "threads", None), "batch": 1, "precision": "fp32", "noise": None}


def latency_entry(source, space, arch: Any, search_ms: float | None) -> dict[str, Any]:
    """One profile's latency on the card: the search's figure (a predictor's, a table's or the profile's own),
    the exported network measured here where this machine can, which of the two the card shows and why."""
    measured, how_measured = source.measure_exported(space, arch, ROUNDS)
    facts = profile_facts(source.profile) if source.profile is not None else {
        "profile": source.constraint.profile, "kind": "metric table", "runtime": None, "runtime_version": None,
        "device": None, "threads": None, "batch": None, "precision": None, "noise": None}
    kind = {"predictor": "predicted", "table": "metric table"}.get(source.constraint.source, "profile figure")
    if search_ms is None:
        kind = "not searched on"
    if measured is not None:
        obtained = "simulated" if facts["kind"] == "simulated" else "measured"
    else:
        obtained = kind
    diff = None if measured is None or search_ms is None else search_ms / measured - 1
    return {**facts, "ms": measured if measured is not None else search_ms, "obtained": obtained,
            "search_ms": search_ms, "search_source": kind, "search_how": source.how,
            "measured_ms": measured, "measured_how": how_measured, "search_vs_measured": diff,
            "measured_on": measured_on(source.profile) if obtained == "measured" else None}


def measured_on(profile) -> str:
    """The machine a figure was measured on: this one (its CPU, or its GPU for a CUDA profile), which for a table
    profile need not be the device its table was measured on (the card's ``device``)."""
    from hardware_profiles.backends import machine_info

    backend = getattr(getattr(profile, "manifest", None), "backend", "onnxruntime-cpu")
    info = machine_info(backend)
    return info.get("gpu") or f"{info.get('cpu', 'CPU')} ({info['cpus']} cores, {info['arch']})"


def tolerance(entry: dict[str, Any]) -> float:
    """Relative difference a re-measurement may show before `verify` flags it: the profile's recorded noise
    (doubled: two measurements, each noisy) with a `TABLE_FLOOR`; `LIVE_NOISE` for live profiles; none for a
    simulator."""
    if entry.get("kind") == "simulated":
        return 1e-6
    if entry.get("noise") is None:
        return LIVE_NOISE
    return max(TABLE_FLOOR, 2 * float(entry["noise"]))


def _latency_table(card: dict[str, Any]) -> list[str]:
    lines = ["| Profile | Latency (ms) | Obtained | Search figure (ms) | Measured here (ms) | Search vs measured | "
             "Runtime | Profile's device | Threads / batch / precision |", "|" + " --- |" * 9]
    for e in card["latency"].values():
        diff = "-" if e["search_vs_measured"] is None else f"{e['search_vs_measured']:+.1%}"
        runtime = " ".join(str(v) for v in (e["runtime"], e["runtime_version"]) if v) or "-"
        tbp = " / ".join(str(v) if v is not None else "-" for v in (e["threads"], e["batch"], e["precision"]))
        lines.append(f"| {e['profile']} | {format_figure(e['ms'])} | {e['obtained']} | "
                     f"{format_figure(e['search_ms']) if e['search_ms'] is not None else '-'} ({e['search_source']}) | "
                     f"{format_figure(e['measured_ms']) if e['measured_ms'] is not None else '-'} | {diff} | "
                     f"{runtime} | {e['device'] or '-'} | {tbp} |")
    lines += [""] + [f"- **{e['profile']}**: search figure: {e['search_how']}; measured: {e['measured_how']}"
                     + (f", on {e['measured_on']}" if e.get("measured_on") else "") for e in card["latency"].values()]
    return lines


def _provenance(card: dict[str, Any]) -> list[str]:
    p = card["provenance"]
    proj, rec, data, search, train = p["project"], p["recipe"], p["dataset"], p["search"], p["training"]
    commit = proj["git_commit"] or "not a git checkout"
    if proj.get("git_dirty"):
        commit += " (with local edits)"
    return [
        f"- **Project**: hwnas {proj['version']}, commit {commit}",
        f"- **Recipe**: `recipe.yaml` ({rec['name']}; SHA-256 {rec['sha256']}; as the run saved it: "
        f"{rec['run_recipe_sha256']})",
        f"- **Dataset**: {data['name']}; content SHA-256 {data['sha256'] or '-'}",
        f"- **Search**: space `{search['space']}` {search['space_options']}; controller `{search['controller']}` "
        f"{search['controller_options']}; budget {search['budget']} ({search['evaluated']} evaluated); seed "
        f"{search['seed']}; constraints {search['constraints']}",
        f"- **Training**: {train['kind']}; evaluator `{train['evaluator']}` {train['options']}"
        + (f"; {train['steps']} steps" if train.get("steps") else "") + (f" on {train['device']}" if train.get(
            "device") else ""),
        f"- **Run**: {p['run']['name']}" + (f" (W&B run {p['run']['wandb_id']})" if p["run"].get("wandb_id") else ""),
    ]


def render_card(card: dict[str, Any]) -> str:
    """`MODEL_CARD.md` text of a `card.json` dict (the same figures)."""
    acc = card["accuracy"]
    shape = "x".join(str(d) for d in card["space"]["input_shape"])
    lines = [f"# {card['name']} ({card['version']})", "", card["title"], "", "## Architecture", "", "```",
             card["arch"], "```", "", "## Figures", "", "| Figure | Value |", "| --- | --- |",
             f"| accuracy ({acc['metric']}) | {format_figure(acc['value'])} |"]
    held = acc.get("held_out")   # cards released before 2026-12-06 have none
    if held:
        lines += [f"| accuracy ({acc['metric']}, held out) | {format_figure(held['value'])} |"]
    lines += [f"| {k} | {format_figure(v)} |" for k, v in card["metrics"].items()]
    lines += [f"| FLOPs (multiply-accumulates) | {format_figure(card['flops'])} |",
              f"| params | {format_figure(card['params'])} |",
              f"| ONNX vs PyTorch, max abs difference | {card['onnx']['max_abs_diff']:.2e} |", "",
              f"Accuracy measured on: {card['provenance']['dataset']['name']}, {acc['split']}. Weights: "
              f"{acc['weights']}" + (f" (the search's proxy figure was {format_figure(acc['search_value'])})"
                                     if acc.get("search_value") is not None and acc['weights'].startswith("final")
                                     else "") + "." + (f" Held out: {held['images']:,} images, {held['split']}."
                                                       if held else ""), "",
              "## Latency", ""] + _latency_table(card)
    lines += ["", "## Provenance", ""] + _provenance(card)
    lines += ["", "## Loading", "", "```python", "import nas.zoo",
              f"model = nas.zoo.create_model({card['name']!r}, pretrained=True, zoo=\"ZOO_DIR\")   # or, once "
              "the zoo is registered:", f"# timm.create_model(\"hwnas_{card['name']}\", pretrained=True)", "```",
              "", f"Input: `float32` tensor of shape `{shape}` (N, C, H, W). `model.onnx` holds the same network "
              "for onnxruntime; `SHA256SUMS` covers every file (`sha256sum -c SHA256SUMS`)."]
    if card.get("notes"):
        lines += ["", "## Notes", ""] + [f"- **{k}**: {v}" for k, v in card["notes"].items()]
    return "\n".join(lines) + "\n"
