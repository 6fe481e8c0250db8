"""Command line: run one whole search from a recipe.

    python -m nas.run RECIPE [--set dotted.key=value ...] [--output DIR] [--resume]

A bad recipe, or a damaged run folder on --resume, exits with status 2 and one line naming the file, the field
and what was expected (`core.errors`); an unexpected failure inside the project keeps its traceback.
The run directory receives: `recipe.yaml` (as resolved), `state.json` and `journal.jsonl` (the ledger and the
controller state: `nas.results`), `results.csv`, `verification.csv` (`nas.verify`), `pareto.png`, `best.json` and
`best/` (weights.safetensors, model.onnx, arch.txt, MODEL_CARD.md). With `cluster.storage`, `--resume` on a machine
whose run directory lacks the ledger fetches it from the storage (`nas.storage`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from core.cli import ArgParser, read_yaml_mapping
from core.errors import cli_entry
from nas.checks import load_run
from nas.context import RunContext
from nas.recipe import RecipeError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgParser(prog="python -m nas.run", description="Hardware-aware NAS from a YAML recipe.")
    p.add_argument("recipe", help="recipe YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set search.budget=50 (repeatable)")
    p.add_argument("--output", help="run directory (default: the recipe's output.dir)")
    p.add_argument("--resume", action="store_true", help="continue the run in the run directory")
    return p.parse_args(argv)


# what may change on --resume: the budget, the candidates checked before export (`nas.verify`), the folder's name
RESUMABLE = ("search.budget", "constraints.verify", "output.dir")


def _differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}")
    return out


def prepare(args: argparse.Namespace) -> tuple[RunContext, Path]:
    """The checked run context (`nas.checks.load_run`) and the run directory; `RecipeError` for anything that
    cannot run."""
    ctx = load_run(args.recipe, args.overrides)
    recipe = ctx.recipe
    run_dir = Path(args.output) if args.output else recipe.output_dir()
    if run_dir.exists() and not run_dir.is_dir():
        raise RecipeError(f"{run_dir}: the run directory is a file; pass another --output")
    saved = run_dir / "recipe.yaml"
    if args.resume:
        if not (run_dir / "state.json").is_file() and recipe.cluster.storage:   # driven from another machine
            from nas.storage import RunStorage, StorageError

            try:
                RunStorage(recipe.cluster.storage, run_dir.resolve().name).fetch_run(run_dir)
            except (StorageError, OSError) as err:
                raise RecipeError(f"{args.recipe}: {err}") from None
        if not (run_dir / "state.json").is_file():
            raise RecipeError(f"{run_dir}: no run to resume here (state.json missing); drop --resume to start one")
        from nas.results import RunLog

        RunLog.load(run_dir)   # a damaged ledger is refused here, in one line naming it
        before = read_yaml_mapping(saved, "saved recipe", RecipeError)
        try:   # fields added since the run started take their defaults, as the run had them
            before = type(recipe).model_validate(before).model_dump(mode="json")
        except ValueError:
            pass   # compared as saved: the difference names the field
        now = recipe.model_dump(mode="json")
        diff = [d for d in _differences(before, now)
                if d not in RESUMABLE and not d.startswith("cluster.")]
        if diff:
            raise RecipeError(f"{args.recipe}: {diff[0]}: differs from the recipe the run in {run_dir} started "
                              "with; only search.budget, constraints.verify and where trials run (cluster) may "
                              "change on --resume")
    elif (run_dir / "state.json").is_file():
        raise RecipeError(f"{run_dir}: already holds a run; add --resume to continue it or pass another --output")
    return ctx, run_dir


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ctx, run_dir = prepare(args)
    from nas.latency_sources import LatencySetupError
    from nas.pipeline import SLOWER, run_search
    from nas.prescreen import PrescreenError
    from nas.search import ClusterError
    from nas.storage import StorageError

    try:
        summary = run_search(ctx.recipe, run_dir, resume=args.resume, ctx=ctx)
    except (LatencySetupError, PrescreenError, ClusterError, StorageError) as err:   # they name the field, not the file
        raise RecipeError(f"{args.recipe}: {err}") from None
    best = summary.get("best")
    if best is None:
        print(f"no feasible architecture found; see {run_dir / 'results.csv'}")
        return 1
    lat = "  ".join(f"{k}={v:.3f}ms" for k, v in best.items() if k.startswith("latency_") and v is not None)
    print(f"best feasible: {best['arch']}\n  accuracy={best['accuracy']:.4f}  flops={best['flops'] / 1e6:.2f}M  "
          f"params={best['params'] / 1e6:.3f}M  {lat}\nrun directory: {run_dir}  "
          f"({summary['wall_seconds']:.0f} s)")
    held = (summary.get("export") or {}).get("held_out")
    if held:
        print(f"  held out: accuracy={held['accuracy']:.4f} on {held['images']:,} images no trial trained or "
              "validated on (the accuracy above picked this network, so it flatters it)")
    for name, lat in (summary.get("export") or {}).get("latency", {}).items():
        measured = "not measured" if lat["measured_ms"] is None else f"measured {lat['measured_ms']:.3f}ms"
        print(f"  exported on {name}: search figure {lat['search_ms']:.3f}ms ({lat['source']}), {measured}")
    slower = (summary.get("export") or {}).get("int8_over_fp32")
    if slower is not None and slower > SLOWER:
        print(f"  note: model.int8.onnx runs x{slower:.2f} the fp32 network's time on this CPU; model.onnx is the "
              "faster one here (see the model card)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
