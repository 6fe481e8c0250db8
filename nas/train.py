"""Final training: train a run's chosen networks properly, after the search scored them with a short proxy.

    python -m nas.train RUN_DIR (--top K | --arch ARCH [--arch ARCH ...]) [--epochs N]
                        [--set evaluator.options.KEY=VALUE ...] [--out DIR]

A search ranks candidates by a short, cheap training run; the networks worth keeping are then trained with a
final budget. Each chosen architecture (the K best feasible rows of the run's ledger, or arch strings given with
`--arch`) is built from the same seeded initial weights as in the search and trained by the run's own evaluator
(`nas.trial.train_candidate`: a network a compression policy prunes is trained dense, pruned and fine-tuned, as in
the search) with its options changed only where asked: `--epochs N` sets ``evaluator.options.epochs``, `--set` any
other evaluator option, `--device` (default ``auto``: the GPU when there is one) where the evaluator trains. Accuracy is measured on the evaluator's validation split, as in the search.

Each network gets a folder ``DIR/<name>/`` (default DIR: ``RUN_DIR/final``; the name is the one the search gives
its weights): ``arch.txt``, ``weights.safetensors``, ``curve.csv`` (the training loss of every step), ``curve.png``
and, written last, ``metrics.json`` (accuracy and the evaluator's other figures, ``accuracy_held_out`` on the
images no trial trained or validated on where the evaluator has them (`nas.trial.held_out_of`), the
search's accuracy, steps, seconds and the training settings). A network whose ``metrics.json`` exists is not
trained again, so a killed job resumes network by network; one trained with other settings is refused rather than
mixed in. ``DIR/final.json`` lists every network trained so far, best first.

Bad input (a folder without a finished search, an arch of another space, an evaluator that does not train, a
`--set` outside the evaluator's options) is one ``error:`` line and exit status 2.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.cli import ArgParser
from core.errors import InputError, cli_entry
from core.io import atomic_write, atomic_write_json, atomic_write_text
from nas.context import RunContext, validate_plugins
from nas.evaluation import EVALUATORS
from nas.export import save_weights
from nas.recipe import RecipeError, read_recipe
from nas.results import RunLog, score_of
from nas.trial import held_out_of, train_candidate, trial_evaluator, weights_path


class FinalTrainingError(InputError):
    """A run or a request final training cannot serve; one line naming the file or the flag."""


@dataclass
class TrainSettings:
    """What `python -m nas.train` does (its flags)."""

    run_dir: str = ""
    top: int | None = None
    arch: list[str] = field(default_factory=list)
    epochs: float | None = None
    device: str = "auto"
    overrides: list[str] = field(default_factory=list)
    out: str | None = None


def parse_args(argv: list[str] | None = None) -> TrainSettings:
    """The command line (usage errors are `InputError`s)."""
    p = ArgParser(prog="python -m nas.train", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="run directory of a finished search (holds recipe.yaml and state.json)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--top", metavar="K", type=int, help="train the K best feasible networks of the run")
    which.add_argument("--arch", action="append", default=[], metavar="ARCH",
                       help="train this architecture (an arch string of the run's space; repeatable)")
    p.add_argument("--epochs", metavar="N", type=float, help="final-training epochs (sets evaluator.options.epochs)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to train (sets evaluator.options.device; default auto: the GPU when there is one)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change an evaluator option for final training, e.g. --set evaluator.options.lr=0.02 "
                        "(repeatable)")
    p.add_argument("--out", metavar="DIR", help="where the trained networks go (default RUN_DIR/final)")
    return p.parse_into(TrainSettings, argv)


def network_name(arch: str) -> str:
    """The folder name of a network: the stem the search gives its weights (`nas.trial.weights_path`)."""
    return weights_path(Path("."), arch).stem


def load_run_for_training(settings: TrainSettings):
    """The run's context with the final-training evaluator options, and its ledger. Only what training needs is
    checked and built (the plug-ins, the evaluator, the space): the latency setup of the search plays no part.

    Raises:
        FinalTrainingError: not a finished run, a `--set` outside ``evaluator.options``, options the evaluator
            refuses, an evaluator that does not train; the evaluator's own `InputError` for data it cannot read.
    """
    run_dir = Path(settings.run_dir)
    for name in ("recipe.yaml", "state.json"):
        if not (run_dir / name).is_file():
            raise FinalTrainingError(f"{run_dir}: not a run directory of a search ({name} missing)")
    for text in settings.overrides:
        if not text.startswith("evaluator.options."):
            raise FinalTrainingError(f"--set {text!r}: final training changes evaluator options only "
                                     "(evaluator.options.KEY=VALUE)")
    overrides = [*([f"evaluator.options.epochs={settings.epochs!r}"] if settings.epochs is not None else []),
                 *settings.overrides]
    path = run_dir / "recipe.yaml"
    try:   # only what training needs: the plug-ins and the space (a moved predictor folder does not matter here)
        recipe = read_recipe(path, overrides)
        _set_device(recipe, settings)
        validate_plugins(str(path), recipe)
        ctx = RunContext(recipe)
    except RecipeError as err:
        raise FinalTrainingError(str(err)) from None
    if not ctx.evaluator.trains:
        raise FinalTrainingError(f"{run_dir / 'recipe.yaml'}: evaluator.name: {ctx.recipe.evaluator.name!r} does not "
                                 "train networks (it reads accuracy from a table); final training needs a training "
                                 "evaluator such as proxy or detection")
    return ctx, RunLog.load(run_dir)


def _set_device(recipe, settings: TrainSettings) -> None:
    """``--device`` into the evaluator's options when it has a ``device`` option (proxy, detection) and `--set`
    did not name one; an evaluator without the option trains where it must."""
    name, options = recipe.evaluator.name, recipe.evaluator.options
    if name in EVALUATORS and "device" in EVALUATORS.get(name).Options.model_fields and \
            not any(o.startswith("evaluator.options.device=") for o in settings.overrides):
        options["device"] = settings.device


def chosen_archs(settings: TrainSettings, ctx, log: RunLog) -> list[str]:
    """The canonical arch strings to train: the `--top` best feasible rows (ties: fewer FLOPs) or the `--arch`
    strings, checked against the run's space."""
    if settings.top is not None:
        if settings.top < 1:
            raise FinalTrainingError(f"--top: must be at least 1, got {settings.top}")
        ok = sorted((r for r in log.rows if score_of(r) is not None), key=lambda r: (-score_of(r), r["flops"]))
        if not ok:
            raise FinalTrainingError(f"{Path(settings.run_dir) / 'results.csv'}: no feasible network to train")
        return [r["arch"] for r in ok[:settings.top]]
    out = []
    for text in settings.arch:
        try:
            out.append(ctx.space.to_string(ctx.space.decode(text)))
        except ValueError as err:
            raise FinalTrainingError(f"--arch: {err}") from None
    return list(dict.fromkeys(out))


def train_network(ctx, arch: str, folder: Path, settings_record: dict[str, Any],
                  search_row: dict[str, Any] | None) -> dict[str, Any]:
    """Train one network into `folder` (see the module); returns its metrics record."""
    space = ctx.space
    genotype = space.decode(arch)
    model, metrics = train_candidate(space, trial_evaluator(ctx, genotype), genotype, ctx.recipe.search.seed)
    losses = [float(v) for v in metrics.pop("losses", [])]
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "arch.txt", arch + "\n")
    save_weights(model, folder / "weights.safetensors", {"arch": arch})
    curve = pd.DataFrame({"step": np.arange(1, len(losses) + 1), "loss": losses})
    atomic_write(folder / "curve.csv", lambda tmp: curve.to_csv(tmp, index=False))
    if losses:
        _plot_curve(curve, folder / "curve.png", arch)
    held = held_out_of(ctx, model, genotype)
    record = {"name": folder.name, "arch": arch,
              **{k: (float(v) if isinstance(v, (int, float, np.floating)) else v) for k, v in metrics.items()},
              **({} if held is None else {"accuracy_held_out": held["accuracy"], "held_out_images": held["images"]}),
              "search_accuracy": None if search_row is None else score_of(search_row),
              "steps": len(losses) or metrics.get("steps"), "settings": settings_record}
    atomic_write_json(folder / "metrics.json", record)   # last: the network counts as trained from here on
    return record


def _differences(before: Any, now: dict[str, Any]) -> str:
    """The settings that differ, as ``key: before -> now`` (evaluator options flattened)."""
    def flat(r: Any) -> dict[str, Any]:
        r = r if isinstance(r, dict) else {}
        return {**{k: v for k, v in r.items() if k != "options"}, **(r.get("options") or {})}

    a, b = flat(before), flat(now)
    return ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))


def read_record(path: Path) -> dict[str, Any]:
    """A trained network's ``metrics.json`` (`FinalTrainingError` naming it when it cannot be read)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise FinalTrainingError(f"{path}: cannot be read ({type(err).__name__}); delete its folder to train the "
                                 "network again") from None
    if not isinstance(record, dict):
        raise FinalTrainingError(f"{path}: not a network record; delete its folder to train the network again")
    return record


def _plot_curve(curve: pd.DataFrame, path: Path, arch: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(curve["step"], curve["loss"], lw=0.8, alpha=0.5 if len(curve) >= 40 else 1.0, label="loss per step")
    window = len(curve) // 20
    if window > 1:
        ax.plot(curve["step"], curve["loss"].rolling(window, min_periods=1).mean(), lw=1.5,
                label=f"mean of {window} steps")
    ax.set(xlabel="step", ylabel="training loss", title=f"final training: {arch}"[:90])
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def final_training(settings: TrainSettings, log_line=print) -> list[dict[str, Any]]:
    """Train the chosen networks of a run (skipping those already trained with the same settings); returns every
    network's record in the output folder, best first, also written to ``final.json``."""
    from tqdm import tqdm

    ctx, log = load_run_for_training(settings)
    archs = chosen_archs(settings, ctx, log)
    out = Path(settings.out) if settings.out else Path(settings.run_dir) / "final"
    record = {"evaluator": ctx.recipe.evaluator.name,
              "options": ctx.plugins.evaluator.model_dump(mode="json"), "seed": ctx.recipe.search.seed}
    todo = []
    for arch in archs:
        folder = out / network_name(arch)
        if (folder / "metrics.json").is_file():
            done = read_record(folder / "metrics.json")
            if done.get("settings") != record:
                raise FinalTrainingError(f"{folder / 'metrics.json'}: trained with other settings "
                                         f"({_differences(done.get('settings'), record)}); pass --out to train these "
                                         "elsewhere, or delete the folder to train it again")
            continue
        todo.append(arch)
    if len(todo) < len(archs):
        log_line(f"{len(archs) - len(todo)} of {len(archs)} network(s) already trained in {out}; skipping them")
    for arch in tqdm(todo, desc="final training", unit="net", file=sys.stderr, disable=not todo):
        train_network(ctx, arch, out / network_name(arch), record, log.get(arch))
    rows = [read_record(p) for p in sorted(out.glob("*/metrics.json"))]
    rows.sort(key=lambda r: -(r.get("accuracy") or 0.0))
    atomic_write_json(out / "final.json", {"run": str(Path(settings.run_dir).name), "networks": rows})
    return rows


@cli_entry
def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    rows = final_training(settings)
    for r in rows:
        search = "-" if r.get("search_accuracy") is None else f"{r['search_accuracy']:.4f}"
        held = "" if r.get("accuracy_held_out") is None else f", held out {r['accuracy_held_out']:.4f}"
        print(f"{r['name']}  accuracy {r['accuracy']:.4f} (search {search}{held})  {r['arch']}")
    print(f"trained networks: {Path(settings.out) if settings.out else Path(settings.run_dir) / 'final'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
