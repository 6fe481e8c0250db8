"""Release a finished run's networks into a zoo: ``python -m nas.zoo release RUN_DIR --zoo ZOO_DIR --version V``.

Which networks: the `--top K` best feasible rows of the run's ledger (default 1), or with `--pareto PROFILE ...`
the feasible rows on the accuracy-vs-latency front of each profile named (``flops`` for FLOPs), together; ranked by
the search's accuracy, or with `--rank final` among the final-trained networks by their final accuracy (a search's
short proxy does not always rank them as final training does). Each
card has the latency of every profile of the run's recipe; `--measure PROFILE` adds profiles the search did not
use, measured at release (a GPU profile on a GPU machine, another thread count, an FPGA simulator). The networks
released are logged as W&B model artifacts of a ``release`` run linked to their search run (`log_release`; as the
search was tracked, or `--tracking wandb|none`).

Which weights, in order: the network's final training (``RUN_DIR/final/<name>/``, `python -m nas.train`; its
accuracy then is the final one), else the weights the search trained, else (a trial trained on a node whose files
are gone) the search's seeded training run again, else, for an evaluator that reads accuracy from a table,
the seeded initial weights, labelled untrained. The card says which.

A run whose latency constraint chose an engine (``implementation:``, `nas.latency_sources`) ships each network
with its deployment plan, ``plan_<profile>/`` (`nas.pipeline.deployment_plans`: the engines selected again at
release, on these weights, where this machine is the profile's device; the artifact and ``run_plan.py`` of the
winner), listed in the card's files and ``SHA256SUMS``.

Each network goes to ``ZOO_DIR/V/<name>/`` (`nas.zoo.folder`): it is written into a hidden temporary folder and
renamed into place once complete and its ONNX graph matches PyTorch, so a release killed half-way leaves no
half-written network. A network already released in V from the same run, arch and weights is skipped (releasing
again is idempotent); a different one under the same name and version is refused: a version is never overwritten.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.errors import sha256_file
from core.io import atomic_write_json, atomic_write_text, write_sha256sums
from nas.export import onnx_parity, save_weights
from nas.objectives import latency_column, pareto_mask
from nas.results import RunLog, score_of
from nas.trial import held_out_of, model_with_weights, trial_evaluator, weights_path
from nas.zoo.card import (CARD_FORMAT, latency_entry, project_record, render_card, scrub_paths)
from nas.zoo.folder import ZooError, read_card, write_index

VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
PARITY_TOLERANCE = 1e-4
"""Largest absolute difference between the ONNX graph's and PyTorch's outputs that a release accepts."""


@dataclass
class ReleaseSettings:
    """What `python -m nas.zoo release` does (its flags)."""

    run_dir: str = ""
    zoo: str = ""
    version: str = ""
    top: int | None = None
    pareto: list[str] = field(default_factory=list)
    measure: list[str] = field(default_factory=list)
    tracking: str = "auto"
    rank: str = "search"


@dataclass
class Weights:
    """Where a released network's weights and accuracy come from."""

    path: Path | None           # a weights file to copy; None: train (retrained) or build (untrained) here
    kind: str                   # final training / search proxy training / ...
    accuracy: float
    metrics: dict[str, Any]
    training: dict[str, Any]
    extra_files: list[Path] = field(default_factory=list)

    def fingerprint(self, seed: int) -> str:
        return sha256_file(self.path) if self.path is not None else f"{self.kind}, seed {seed}"


def release_name(recipe_name: str, arch: str) -> str:
    """A network's zoo name: the recipe's name and a short hash of the arch (lower case, ``[a-z0-9_]``: a valid
    timm model name, ``hwnas_<name>``)."""
    slug = re.sub(r"[^a-z0-9]+", "_", recipe_name.lower()).strip("_") or "net"
    return f"{slug}_{hashlib.sha1(arch.encode()).hexdigest()[:6]}"


def open_run(run_dir: Path):
    """The run's context (latency sources loaded from its folder), its ledger and its summary.

    Raises:
        ZooError: not a run directory, a search that has not finished, a run whose plug-ins or predictors cannot
            be loaded here.
    """
    from nas.context import RunContext, validate_plugins
    from nas.recipe import RecipeError, read_recipe

    for name in ("recipe.yaml", "state.json"):
        if not (run_dir / name).is_file():
            raise ZooError(f"{run_dir}: not a run directory of a search ({name} missing)")
    if not (run_dir / "best.json").is_file():
        raise ZooError(f"{run_dir / 'best.json'}: missing: the search has not finished; finish it with "
                       f"python -m nas.run RECIPE --output {run_dir} --resume")
    try:
        recipe = read_recipe(run_dir / "recipe.yaml", [])
        validate_plugins(str(run_dir / "recipe.yaml"), recipe)
        ctx = RunContext(recipe).open(run_dir, log=lambda *a, **k: None)
    except (RecipeError, ValueError) as err:
        raise ZooError(f"{run_dir / 'recipe.yaml'}: {err}") from None
    return ctx, RunLog.load(run_dir)


def measured_over(run_dir: Path) -> set[str]:
    """Archs the run's check before export measured over a latency limit (``verification.csv``)."""
    from nas.verify import records

    rows = records(run_dir)
    return set(rows.loc[~rows["within"].astype(bool), "arch"]) if "within" in rows else set()


def select_rows(settings: ReleaseSettings, ctx, log: RunLog) -> list[dict[str, Any]]:
    """The rows to release: the best feasible (`--top`) or the union of the fronts (`--pareto`), best first;
    without the candidates the run's check measured over a latency limit (`nas.verify`, ``verification.csv``)."""
    over = measured_over(Path(settings.run_dir))
    ok = sorted((r for r in log.rows if score_of(r) is not None and r["arch"] not in over),
                key=lambda r: (-score_of(r), r["flops"]))
    if not ok:
        raise ZooError(f"{Path(settings.run_dir) / 'results.csv'}: the run has no feasible network to release"
                       + (f" ({len(over)} measured over a latency limit: verification.csv)" if over else ""))
    if settings.rank == "final":
        ok = final_ranked(Path(settings.run_dir), ok)
    if not settings.pareto:
        top = 1 if settings.top is None else settings.top
        if top < 1:
            raise ZooError(f"--top: must be at least 1, got {top}")
        return ok[:top]
    chosen: dict[str, dict[str, Any]] = {}
    for profile in settings.pareto:
        col = "flops" if profile == "flops" else latency_column(profile)
        if profile != "flops" and profile not in ctx.recipe.profiles:
            raise ZooError(f"--pareto {profile}: not a latency profile of the run; expected flops or one of: "
                           f"{', '.join(ctx.recipe.profiles) or 'none'}")
        rows = [r for r in ok if r.get(col) is not None]
        mask = pareto_mask([score_of(r) for r in rows], [r[col] for r in rows])
        chosen.update({r["arch"]: r for r, m in zip(rows, mask) if m})
    return sorted(chosen.values(), key=lambda r: (-score_of(r), r["flops"]))


def final_ranked(run_dir: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`--rank final`: the rows whose network was final-trained (`python -m nas.train`), by final accuracy.

    Raises:
        ZooError: none of the run's feasible networks was final-trained.
    """
    from nas.train import network_name, read_record

    scored = []
    for r in rows:
        path = run_dir / "final" / network_name(r["arch"]) / "metrics.json"
        if path.is_file():
            scored.append((-float(read_record(path)["accuracy"]), r["flops"], len(scored), r))
    if not scored:
        raise ZooError(f"--rank final: no network of {run_dir} was final-trained (python -m nas.train {run_dir} "
                       "--top K)")
    return [r for *_, r in sorted(scored)]


def measured_sources(profiles: list[str], ctx) -> dict[str, Any]:
    """`--measure`: profiles outside the recipe to time the released networks on, as latency sources of the
    profile's own figure (a live profile, a table profile whose runtime is here, e.g. a GPU profile on a GPU
    machine, a simulator).

    Raises:
        ZooError: an unknown profile, one already in the recipe, or one this machine cannot measure.
    """
    from core.errors import InputError
    from hardware_profiles import get_profile
    from hardware_profiles.backends import unavailable
    from nas.latency_sources import ProfileSource
    from nas.recipe import LatencyConstraint

    out = {}
    for name in profiles:
        if name in ctx.recipe.profiles:
            raise ZooError(f"--measure {name}: already a latency profile of the run (its card entry is made anyway)")
        try:
            profile = get_profile(name)
        except InputError as err:
            raise ZooError(f"--measure {name}: {err}") from None
        manifest = getattr(profile, "manifest", None)
        if manifest is not None and manifest.kind != "simulated":
            why = unavailable(manifest.backend)
            if why:
                raise ZooError(f"--measure {name}: this machine cannot measure it ({why})")
        out[name] = ProfileSource(LatencyConstraint(profile=name, source="profile"), profile,
                                  f"not searched on: measured at release (--measure {name})")
    return out


def choose_weights(run_dir: Path, ctx, row: dict[str, Any]) -> Weights:
    """The weights and accuracy a network is released with (see the module docstring)."""
    from nas.train import network_name, read_record

    arch = row["arch"]
    options = ctx.plugins.evaluator.model_dump(mode="json")
    metrics = {m: row.get(m) for m in ctx.metrics if row.get(m) is not None}
    base = {"evaluator": ctx.recipe.evaluator.name, "options": options, "seed": ctx.recipe.search.seed}
    final = run_dir / "final" / network_name(arch)
    if (final / "metrics.json").is_file() and (final / "weights.safetensors").is_file():
        record = read_record(final / "metrics.json")
        settings = record.get("settings") or {}
        return Weights(final / "weights.safetensors", "final training", float(record["accuracy"]),
                       {m: record[m] for m in ctx.evaluator.metrics if record.get(m) is not None},
                       {**base, **settings, "kind": "final training (python -m nas.train)",
                        "steps": record.get("steps"), "device": (settings.get("options") or {}).get("device")},
                       [p for p in (final / "curve.csv", final / "curve.png") if p.is_file()])
    if weights_path(run_dir, arch).is_file():
        return Weights(weights_path(run_dir, arch), "search proxy training", float(row["accuracy"]), metrics,
                       {**base, "kind": "the search's proxy training (not final-trained)"})
    if ctx.evaluator.trains:
        return Weights(None, "search proxy training (repeated at release)", float(row["accuracy"]), metrics,
                       {**base, "kind": "the search's seeded proxy training, repeated at release (its weights "
                                        "file was not in the run folder)"})
    return Weights(None, "untrained", float(row["accuracy"]), metrics,
                   {**base, "kind": "untrained: seeded initial weights; the accuracy was read from a metric table "
                                    "for this architecture trained elsewhere"})


def build_model(ctx, arch: str, weights: Weights):
    """The network with the weights `weights` names (trained here when it names none and the evaluator trains)."""
    genotype = ctx.space.decode(arch)
    return model_with_weights(ctx.space, trial_evaluator(ctx, genotype), genotype, ctx.recipe.search.seed,
                              weights.path)


def make_card(run_dir: Path, ctx, log: RunLog, row: dict[str, Any], weights: Weights, *, name: str,
              version: str, model, files: dict[str, str], extra: dict[str, Any]) -> dict[str, Any]:
    """The card of one network (`nas.zoo.card`), before its paths are scrubbed."""
    r, space, arch = ctx.recipe, ctx.space, row["arch"]
    genotype = space.decode(arch)
    dataset = ctx.evaluator.dataset_record()
    wandb_id = run_dir / "wandb_id.txt"
    notes, _ = ctx.evaluator.export_extras(model)
    net = space.to_network(genotype) if hasattr(space, "to_network") else None
    if net is not None:
        notes["timm block strings"] = str([list(s) for s in net.arch_def])
    detection = hasattr(model, "anchors")
    held = held_out_of(ctx, model, genotype)
    return {
        "format": CARD_FORMAT, "name": name, "version": version, "arch": arch, "task":
            "detection" if detection else "classification",
        "title": f"{r.name}: searched {'detector' if detection else 'classifier'} ({r.space.name} space, "
                 f"{weights.kind})",
        "released": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "space": {"name": r.space.name, "options": ctx.plugins.space.model_dump(mode="json"),
                  "num_classes": space.num_classes, "input_shape": list(space.input_shape(genotype))},
        "accuracy": {"value": weights.accuracy,
                     "metric": getattr(ctx.plugins.evaluator, "metric", "top-1") if detection else "top-1",
                     "split": dataset["split"], "weights": weights.kind, "search_value": row.get("accuracy"),
                     "held_out": None if held is None else {"value": held["accuracy"], "images": held["images"],
                                                            "split": ctx.evaluator.held_out_record()}},
        "metrics": weights.metrics, "flops": row["flops"], "params": row["params"],
        "latency": {p: latency_entry(src, space, genotype, row.get(latency_column(p)))
                    for p, src in {**ctx.latency, **extra}.items()},
        "onnx": {"max_abs_diff": None},
        "provenance": {
            "project": project_record(), "dataset": dataset, "training": weights.training,
            "recipe": {"name": r.name, "sha256": None, "run_recipe_sha256": sha256_file(run_dir / "recipe.yaml")},
            "search": {"space": r.space.name, "space_options": r.space.options, "controller": r.controller.name,
                       "controller_options": r.controller.options, "budget": r.search.budget,
                       "evaluated": log.n_evaluated(), "seed": r.search.seed,
                       "constraints": r.constraints.model_dump(mode="json", exclude_none=True)},
            "run": {"name": r.name, "wandb_id": wandb_id.read_text().strip() if wandb_id.is_file() else None}},
        "notes": notes, "files": files,
    }


def write_network(folder: Path, run_dir: Path, ctx, log: RunLog, row: dict[str, Any], weights: Weights,
                  roots: dict[str, str], extra: dict[str, Any]) -> dict[str, Any]:
    """Write one network into a temporary folder beside `folder`, check it, rename it into place; its card."""
    from core.timing import export_onnx
    from nas.pipeline import deployment_plans

    arch = row["arch"]
    tmp = folder.parent / f".tmp-{folder.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        model = build_model(ctx, arch, weights)
        if weights.path is not None:
            shutil.copyfile(weights.path, tmp / "weights.safetensors")
        else:
            save_weights(model, tmp / "weights.safetensors", {"arch": arch})
        shape = ctx.space.input_shape(ctx.space.decode(arch))
        export_onnx(model, shape, tmp / "model.onnx")
        plans = deployment_plans(ctx, model, row, tmp)   # an engine chosen by the search: selected now, these weights
        atomic_write_text(tmp / "arch.txt", arch + "\n")
        atomic_write_text(tmp / "recipe.yaml", scrub_paths((run_dir / "recipe.yaml").read_text(), roots))
        for path in weights.extra_files:
            shutil.copyfile(path, tmp / path.name)
        _, extra_json = ctx.evaluator.export_extras(model)
        for file_name, payload in extra_json.items():
            atomic_write_json(tmp / file_name, payload)
        files = {"weights": "weights.safetensors", "onnx": "model.onnx", "arch": "arch.txt", "recipe": "recipe.yaml",
                 **{Path(p).stem: Path(p).name for p in [*extra_json, *(p.name for p in weights.extra_files)]},
                 **{f"plan {p}": Path(e["plan"]).relative_to(tmp).as_posix() for p, e in plans.items() if "plan" in e},
                 "card": "card.json", "model_card": "MODEL_CARD.md", "sha256sums": "SHA256SUMS"}
        card = make_card(run_dir, ctx, log, row, weights, name=folder.name, version=folder.parent.name, model=model,
                         files=files, extra=extra)
        card["notes"].update({f"deployment plan {p}": e["note"] for p, e in plans.items()})
        card["onnx"]["max_abs_diff"] = onnx_parity(model, tmp / "model.onnx", shape)
        if card["onnx"]["max_abs_diff"] > PARITY_TOLERANCE:
            raise ZooError(f"{folder.name}: the exported ONNX graph differs from PyTorch by "
                           f"{card['onnx']['max_abs_diff']:.2e} (> {PARITY_TOLERANCE:g}); not released")
        card["provenance"]["recipe"]["sha256"] = sha256_file(tmp / "recipe.yaml")
        card["source"] = {"arch": arch, "weights_sha256": sha256_file(tmp / "weights.safetensors"),
                          "fingerprint": fingerprint(card["provenance"]["recipe"]["run_recipe_sha256"], arch,
                                                     weights.fingerprint(ctx.recipe.search.seed))}
        card = scrub_paths(card, roots)
        atomic_write_json(tmp / "card.json", card)
        atomic_write_text(tmp / "MODEL_CARD.md", render_card(card))
        write_sha256sums(tmp)   # last: covers every file of the network
        os.rename(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return card


def fingerprint(run_recipe_sha256: str, arch: str, weights: str) -> str:
    """What makes two releases of a network the same: the run's recipe, the arch and the weights' source."""
    return hashlib.sha256(f"{run_recipe_sha256}\n{arch}\n{weights}".encode()).hexdigest()


def path_roots(run_dir: Path, zoo: Path) -> dict[str, str]:
    """Folders of the releasing machine a card names by placeholder (`nas.zoo.card.scrub_paths`)."""
    return {"RUN_DIR": str(run_dir.resolve()), "ZOO_DIR": str(zoo.resolve()),
            "REPO": str(Path(__file__).resolve().parents[2]), "CWD": str(Path.cwd()), "~": str(Path.home())}


def check_zoo_folder(zoo: Path) -> None:
    """A zoo folder is new, empty or a zoo already (`zoo.json`); anything else is refused."""
    if zoo.exists() and not zoo.is_dir():
        raise ZooError(f"--zoo {zoo}: is a file, not a zoo folder")
    if zoo.is_dir() and not (zoo / "zoo.json").is_file() and any(not p.name.startswith(".") for p in zoo.iterdir()):
        raise ZooError(f"--zoo {zoo}: not a zoo (no zoo.json) and not empty; pass a new or empty folder")


def log_release(run_dir: Path, ctx, zoo: Path, version: str, cards: list[dict[str, Any]], mode: str) -> str:
    """Log the networks just released as W&B model artifacts of one ``release`` run (offline unless the recipe
    says otherwise; written under ``ZOO_DIR/wandb/``), each linked to the search run it came from
    (`nas.tracking.search_run_ref`, in its metadata); returns the release run's id."""
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_DISABLE_GIT", "true")
    import wandb

    from nas.tracking import log_model_artifact, search_run_ref

    ref = search_run_ref(run_dir)
    run = wandb.init(project=ctx.recipe.tracking.project, name=f"release {version}: {ctx.recipe.name}",
                     job_type="release", dir=str(zoo), mode=mode, config={"version": version, "run": ctx.recipe.name,
                                                                         "networks": [c["name"] for c in cards]},
                     settings=wandb.Settings(console="off", x_disable_stats=True))
    for card in cards:
        metadata = {"name": card["name"], "version": version, "arch": card["arch"], "accuracy": card["accuracy"],
                    "flops": card["flops"], "params": card["params"],
                    "latency_ms": {p: e["ms"] for p, e in card["latency"].items()},
                    "latency_obtained": {p: e["obtained"] for p, e in card["latency"].items()},
                    "search_run": None if ref is None else ref.as_dict()}
        log_model_artifact(run, zoo / version / card["name"], card["name"], metadata, aliases=(version,))
    run.finish()
    return run.id


def tracking_mode(settings: ReleaseSettings, ctx) -> str | None:
    """The W&B mode a release logs in: ``--tracking`` (``wandb``: offline; ``none``), or with ``auto`` (the
    default) as the search was tracked (its recipe's mode), nothing for an untracked one."""
    t = ctx.recipe.tracking
    if settings.tracking == "none" or (settings.tracking == "auto" and (t.backend == "none" or t.mode == "disabled")):
        return None
    return "offline" if settings.tracking == "wandb" else t.mode


def release(settings: ReleaseSettings, log_line=print) -> dict[str, Any]:
    """Release the chosen networks of a finished run (see the module); returns a summary (released, skipped,
    the index)."""
    from tqdm import tqdm

    run_dir, zoo = Path(settings.run_dir), Path(settings.zoo)
    if not VERSION_PATTERN.match(settings.version) or settings.version in ("plots", "wandb"):
        raise ZooError(f"--version {settings.version!r}: use letters, digits, '_' and '-' (at most 40; not plots or "
                       "wandb, the zoo's own folders), e.g. v1")
    check_zoo_folder(zoo)
    ctx, log = open_run(run_dir)
    rows = select_rows(settings, ctx, log)
    extra = measured_sources(settings.measure, ctx)
    run_sha = sha256_file(run_dir / "recipe.yaml")
    todo, skipped = [], []
    for row in rows:
        weights = choose_weights(run_dir, ctx, row)
        folder = zoo / settings.version / release_name(ctx.recipe.name, row["arch"])
        wanted = fingerprint(run_sha, row["arch"], weights.fingerprint(ctx.recipe.search.seed))
        if folder.exists():
            if read_card(folder).get("source", {}).get("fingerprint") != wanted:
                raise ZooError(f"{folder}: version {settings.version} already holds another {folder.name} (other "
                               "weights, arch or run); a version is never overwritten: pass a new --version")
            skipped.append(folder.name)
            continue
        todo.append((row, weights, folder))
    if skipped:
        log_line(f"{len(skipped)} network(s) already released in {zoo / settings.version}: {', '.join(skipped)}")
    roots = path_roots(run_dir, zoo)
    released = []
    for row, weights, folder in tqdm(todo, desc=f"release {settings.version}", unit="net", file=sys.stderr,
                                     disable=not todo):
        card = write_network(folder, run_dir, ctx, log, row, weights, roots, extra)
        released.append(card)
    index = write_index(zoo)
    mode = tracking_mode(settings, ctx)
    wandb_id = log_release(run_dir, ctx, zoo, settings.version, released, mode) if released and mode else None
    return {"released": [c["name"] for c in released], "skipped": skipped, "zoo": str(zoo),
            "version": settings.version, "index": index, "wandb_id": wandb_id}
