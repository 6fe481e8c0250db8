"""One whole search: set up from the recipe, run the trials, then report and export the best network."""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from core.errors import InputError
from core.io import atomic_write_json, atomic_write_text, write_sha256sums
from nas.context import RunContext
from nas.latency_sources import profile_file_name
from nas.objectives import (energy_column, implementation_column, latency_column, memory_columns,
                            profile_budget_columns, profile_memory_column, shrunk_batch, train_memory)
from nas.recipe import Recipe
from nas.results import RunLog
from nas.tracking import ExportedModel, make_tracker
from nas.trial import held_out_of, model_with_weights, run_files, trial_evaluator, weights_path
from nas.verify import verify_best


class Progress:
    """A live line: trials done / budget and the best feasible so far."""

    def __init__(self, recipe: Recipe, log: RunLog):
        from tqdm import tqdm

        self.recipe, self.log = recipe, log
        self.bar = tqdm(total=recipe.search.budget, initial=log.n_evaluated(), desc="trials", unit="trial",
                        file=sys.stderr, dynamic_ncols=True, mininterval=0)
        self._describe()

    def _describe(self) -> None:
        best = self.log.best_feasible()
        if best is None:
            self.bar.set_postfix_str("best feasible: none yet")
            return
        lats = [f"{best.get(latency_column(p.profile), float('nan')):.2f}ms"
                for p in self.recipe.constraints.latency]
        self.bar.set_postfix_str(f"best feasible: acc {best['accuracy']:.4f} {best['flops'] / 1e6:.1f}MFLOPs "
                                 + " ".join(lats))

    def update(self, row: dict[str, Any]) -> None:
        self.bar.update(1)
        self._describe()

    def close(self) -> None:
        self.bar.close()


class ResumeError(InputError):
    """A saved run that this version cannot continue; one line naming the file and field."""


def _open_log(recipe: Recipe, run_dir: Path, resume: bool) -> RunLog:
    """The run's ledger (loaded on resume, its journal folded into a fresh snapshot), with the recipe saved beside
    it; a budget raised with --set on resume is saved too, so the next resume keeps it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "recipe.yaml", yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    if resume:
        log = RunLog.load(run_dir)
    else:
        from nas.context import result_metrics

        log = RunLog(run_dir, recipe.profiles, result_metrics(recipe), tuple(recipe.implementation_profiles))
    log.save()
    return log


def run_search(recipe: Recipe, run_dir: Path, resume: bool = False, ctx: RunContext | None = None) -> dict[str, Any]:
    """Search, report and export; returns the summary also written to `best.json`.

    Args:
        recipe: the validated recipe.
        run_dir: the run directory (created; on resume it must hold `state.json`).
        resume: continue the run saved in `run_dir`.
        ctx: the recipe's run context, as the checks built it (`nas.checks.load_run`); built here if not given.
    """
    start = time.perf_counter()
    run_dir = Path(run_dir)
    storage = _storage(recipe, run_dir)
    from nas.search import join_cluster

    join_cluster(recipe, run_dir)
    log = _open_log(recipe, run_dir, resume)
    t_ctx = time.perf_counter()
    ctx = (ctx or RunContext(recipe)).open(run_dir)   # builds the latency predictors (calibration) before any trial
    setup_seconds = time.perf_counter() - t_ctx
    if storage is not None:
        storage.put_files(run_files(run_dir))
        storage.snapshot(run_dir, log.seq)
        log.mirror = storage
    controller = _restored_controller(ctx, log, run_dir)
    requeue = [a for a in log.pending if log.get(a) is None]
    prescreen = _prescreen(recipe, run_dir, ctx, controller, log)
    if prescreen is not None:   # the best estimates go first (those already evaluated or in flight excepted)
        requeue += [a for a in prescreen["top_k"] if log.get(a) is None and a not in requeue]
    tracker, timings = _tracked_trials(ctx, controller, log, requeue)
    t_fin = time.perf_counter()
    summary = finish(recipe, run_dir, ctx, log, tracker)
    summary["timings"] = {**timings, "finish_seconds": time.perf_counter() - t_fin, "setup_seconds": setup_seconds,
                          "tracking_finish_seconds": summary.pop("tracking_finish_seconds"),
                          "evaluation_seconds": sum(r.get("eval_seconds") or 0 for r in log.rows)}
    if prescreen is not None:
        summary["prescreen"] = {k: v for k, v in prescreen.items() if k != "top_k"}
    summary["wall_seconds"] = time.perf_counter() - start
    atomic_write_json(run_dir / "best.json", summary)
    return summary


def _storage(recipe: Recipe, run_dir: Path):
    """The run's folder on `cluster.storage` (checked writable before anything is written), or None."""
    if not recipe.cluster.storage:
        return None
    from nas.storage import RunStorage

    storage = RunStorage(recipe.cluster.storage, run_dir.resolve().name)
    storage.check_writable()
    return storage


def _restored_controller(ctx: RunContext, log: RunLog, run_dir: Path):
    """The run's controller, with the state a resumed run saved (`ResumeError` if this version cannot take it)."""
    controller = ctx.controller
    if log.controller_state:
        try:
            controller.load_state_dict(log.controller_state)
        except (KeyError, TypeError, ValueError) as err:
            raise ResumeError(f"{run_dir / 'state.json'}: controller: the saved {ctx.recipe.controller.name!r} "
                              f"state does not fit this version's controller ({type(err).__name__}: {err}); resume "
                              "it with the version that started it, or start a new run") from err
    return controller


def _tracked_trials(ctx: RunContext, controller, log: RunLog, requeue: list[str]) -> tuple[Any, dict[str, float]]:
    """Run the trials the budget has left (`nas.search.run_trials`) with a progress bar and every row sent to the
    tracker; returns the tracker (still open) and the timings, the tracker's own included."""
    from nas.search import run_trials

    recipe, run_dir = ctx.recipe, ctx.run_dir
    remaining = recipe.search.budget - log.n_evaluated()
    t_track = time.perf_counter()
    tracker = make_tracker(recipe, run_dir)
    timings: dict[str, float] = {"tracking_init_seconds": time.perf_counter() - t_track, "tracking_log_seconds": 0.0}
    progress = Progress(recipe, log)

    def track(row: dict[str, Any]) -> None:
        t = time.perf_counter()
        tracker.log_trial(row)
        timings["tracking_log_seconds"] += time.perf_counter() - t

    log.listeners += [progress.update, track]
    try:
        if remaining > 0:
            timings.update(run_trials(recipe, run_dir, ctx, controller, log, requeue, remaining))
    except BaseException:
        tracker.abort()   # the ledger already holds every finished trial: --resume continues from it
        raise
    finally:
        progress.close()
    return tracker, timings


def _prescreen(recipe: Recipe, run_dir: Path, ctx: RunContext, controller, log: RunLog) -> dict[str, Any] | None:
    """Run the in-process prescreen once per run (`nas.prescreen`); a resumed run reuses its result."""
    if recipe.search.prescreen is None:
        return None
    from nas.prescreen import load_prescreen, run_prescreen

    done = load_prescreen(run_dir)
    if done is not None:
        return done
    summary = run_prescreen(recipe, run_dir, ctx, controller)
    rate = summary["candidates_per_second"] or 0
    print(f"prescreen: {summary['candidates']} candidates estimated in {summary['seconds']:.1f} s "
          f"({rate:,.0f}/s, {summary['rejected']} proposals rejected free); best {len(summary['top_k'])} go to "
          "full evaluation")
    log.save(controller.state_dict(), summary["top_k"])
    return summary


def finish(recipe: Recipe, run_dir: Path, ctx: RunContext, log: RunLog, tracker) -> dict[str, Any]:
    """Write the plots (`nas.report`), export the best feasible network, close tracking (the plots, the
    predictors' error figures and the exported network as a model artifact); return the summary."""
    from nas.report import pareto_plot, run_plots

    log.save()
    table = log.table()
    pareto_plot(recipe, table, run_dir / "pareto.png")
    check = verify_best(ctx, log, run_dir, log_line=lambda line: print(line, file=sys.stderr))
    best = log.best_feasible() if check is None else check.best
    summary: dict[str, Any] = {
        "recipe": recipe.name, "budget": recipe.search.budget, "concurrency": recipe.search.concurrency,
        "evaluated": log.n_evaluated(),
        "rejected": sum(r["status"] == "rejected" for r in log.rows),
        "failed": sum(r["status"] == "failed" for r in log.rows),
        "repaired": sum(bool(r.get("proposed")) for r in log.rows),   # candidates search.repair changed
        "best": None if best is None else {k: best.get(k) for k in log.columns if k not in ("reason", "error")},
        "verification": None if check is None else check.summary(),
    }
    model = None
    if best is not None and recipe.output.export:
        summary["export"], card = export_best(recipe, run_dir, ctx, best,
                                              notes={} if check is None else {"verification": check.note})
        model = ExportedModel(run_dir / "best", {"arch": best["arch"], "recipe": recipe.name, **card,
                                                 "latency": summary["export"]["latency"],
                                                 "onnx_max_abs_diff": summary["export"]["onnx_max_abs_diff"]})
    plots, errors = run_plots(recipe, table, run_dir, ctx.latency, summary.get("export", {}).get("latency"))
    t_track = time.perf_counter()
    figures = {"best_" + k: v for k, v in (summary["best"] or {}).items() if isinstance(v, (int, float, str))}
    held = (summary.get("export") or {}).get("held_out")
    if held:
        figures.update({"best_accuracy_held_out": held["accuracy"],
                        "best_accuracy_fp32_held_out": held["accuracy_fp32"]})
    tracker.finish(table, plots, {**figures, **errors}, model)
    summary["tracking_finish_seconds"] = time.perf_counter() - t_track
    return summary


def export_best(recipe: Recipe, run_dir: Path, ctx: RunContext, best: dict[str, Any],
                notes: dict[str, str] | None = None) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Export the best feasible network (its trained weights; retrained with the run's seed if missing); `notes`
    are extra lines for the model card (e.g. the verification's, `nas.verify`).

    Returns:
        The export's summary (files, ONNX parity, latency per profile: `exported_latency`), and what the model
        card shows (``{"figures": ..., "notes": ...}``), for the model artifact's metadata.
    """
    from nas.export import export_network, onnx_parity

    arch = ctx.space.decode(best["arch"])
    wpath = weights_path(run_dir, best["arch"])
    model = model_with_weights(ctx.space, trial_evaluator(ctx, arch), arch, recipe.search.seed,
                               wpath if wpath.is_file() else None)
    shape = ctx.space.input_shape(arch)
    figures: dict[str, object] = {"accuracy": best["accuracy"]}
    figures.update({m: best[m] for m in ctx.metrics if best.get(m) is not None and m not in
                    memory_columns(recipe.constraints) + profile_budget_columns(recipe.constraints)})   # given below
    figures.update({"FLOPs (MACs)": best["flops"], "params": best["params"]})
    figures.update(memory_figures(ctx, arch))
    extra = {"search space": recipe.space.name, "controller": recipe.controller.name,
             "evaluator": f"{recipe.evaluator.name} {recipe.evaluator.options}", "run": recipe.name, **(notes or {})}
    evaluator_notes, extra_files = ctx.evaluator.export_extras(model)   # e.g. a detector's anchors
    extra.update(evaluator_notes)
    if not ctx.evaluator.trains:
        extra["weights"] = "untrained (initial weights): the accuracy was read from a metric table; train it first"
    latency = exported_latency(ctx, arch, best)
    for p, lat in latency.items():
        kind = "predicted" if lat["source"] == "predictor" else "search figure"
        figures[f"latency {p} (ms, {kind})"] = lat["search_ms"]
        figures[f"latency {p} (ms, measured)"] = lat["measured_ms"] if lat["measured_ms"] is not None else "-"
        if lat["error"] is not None:
            figures[f"latency {p}: {kind} vs measured"] = f"{lat['error']:+.1%}"
        extra[f"latency {p}"] = f"search: {lat['search_how']}; exported network: {lat['measured_how']}"
        if best.get(energy_column(p)) is not None:
            figures[f"energy {p} (mJ per inference, modelled)"] = best[energy_column(p)]
        if best.get(profile_memory_column(p)) is not None:
            figures[f"memory {p} (MiB at batch 1, predicted from its memory table)"] = best[profile_memory_column(p)]
    shipped = shipped_latency(ctx, arch, latency)
    if shipped is not None:
        name, ms, how = shipped
        figures[f"latency {name} (ms, measured)"] = ms if ms is not None else "-"
        extra[f"latency {name}"] = how
    slowdown = int8_over_fp32(ctx, arch, latency, shipped)
    if slowdown is not None:
        figures["int8 / fp32 latency on this CPU (measured)"] = f"x{slowdown[0]:.2f}"
        if slowdown[1]:
            extra["int8 on this CPU"] = slowdown[1]
    for p, plan in deployment_plans(ctx, model, best, run_dir / "best").items():
        figures[f"implementation {p}"] = plan["implementation"]
        extra[f"deployment plan {p}"] = plan["note"]
    net = ctx.space.to_network(arch) if hasattr(ctx.space, "to_network") else None
    if net is not None:
        extra["timm block strings"] = str([list(s) for s in net.arch_def])
    space_code = (f"from search_spaces import get_space; space = get_space({recipe.space.name!r}, "
                  f"{recipe.space.options!r}, num_classes={ctx.space.num_classes})")
    held = held_out_figures(ctx, model, arch, figures, extra)
    int8 = None
    if recipe.compression != "none":   # shipped in the form it was scored in, beside the fp32 graph
        from nas.compression import export_int8

        int8, extra["compression"] = export_int8(model, ctx.evaluator, tuple(shape), run_dir / "best",
                                                 recipe.quantizer)
    files = export_network(model, shape, run_dir / "best", arch=best["arch"], figures=figures,
                           title=f"{recipe.name}: best feasible network", extra=extra, space_code=space_code)
    for name, payload in extra_files.items():
        files[Path(name).stem] = atomic_write_json(run_dir / "best" / name, payload)
    if int8 is not None:   # model.int8.onnx, or a PT2E network's quantization-aware weights
        files["onnx_int8" if int8.suffix == ".onnx" else "qat_weights"] = int8
    # the space the arch belongs to, for tools below the run layer (hardware_profiles.select --run)
    files["space"] = atomic_write_json(run_dir / "best" / "space.json", {
        "name": ctx.space.name, "options": ctx.space.options.model_dump(mode="json"),
        "num_classes": ctx.space.num_classes})
    files["sha256sums"] = write_sha256sums(run_dir / "best")   # written last: covers every file of best/
    diff = onnx_parity(model, files["onnx"], shape)
    return ({"files": {k: str(v) for k, v in files.items()}, "onnx_max_abs_diff": diff, "latency": latency,
             "held_out": held, "int8_over_fp32": None if slowdown is None else slowdown[0]},
            {"figures": figures, "notes": extra})


def held_out_figures(ctx: RunContext, model, arch: Any, figures: dict[str, object],
                     extra: dict[str, str]) -> dict[str, Any] | None:
    """The exported network scored on the evaluator's held-out images (`nas.trial.held_out_of`: none of them
    trained or validated any trial), added to the model card's `figures` and `extra`; None where the evaluator has
    none. The run's ``accuracy`` picked the winner, so it flatters it; this figure is the one to quote."""
    held = held_out_of(ctx, model, arch)
    if held is None:
        return None
    figures["accuracy (held out)"] = held["accuracy"]
    if ctx.recipe.compression != "none":
        figures["accuracy_fp32 (held out)"] = held["accuracy_fp32"]
    extra["held out"] = (f"{held['images']:,} images, {ctx.evaluator.held_out_record()}. The accuracy above them "
                         "picked this network among the trials, so it flatters it; the held-out one does not")
    return held


def memory_figures(ctx: RunContext, arch: Any) -> dict[str, str]:
    """The model card's memory figures, predicted from the layer shapes (`predictors.memory`): inference at batch 1
    and, where the evaluator trains at a known batch size, a training step at it (the smaller one it was trained at
    under ``constraints.on_train_memory: shrink``)."""
    from predictors.memory import MIB, inference_memory

    c = ctx.recipe.constraints
    inf = inference_memory(ctx.space, arch, channel_block=c.memory_block(), engine=c.memory_engine)
    out = {"memory at batch 1 (MiB, predicted)": f"{inf.total_mb:.3f} ({inf.param_bytes / MIB:.3f} parameters, "
                                                  f"{inf.activation_bytes / MIB:.3f} activation peak, "
                                                  f"{inf.engine} engine)"}
    batch = shrunk_batch(ctx.space, c, arch) or c.train_batch or getattr(ctx.evaluator.options, "batch_size", None)
    if isinstance(batch, int) and ctx.evaluator.trains:
        gb = train_memory(ctx.space, c, arch, batch).total_gb
        out[f"training memory at batch {batch} (GiB, predicted)"] = f"{gb:.4f}"
    return out


def deployment_plans(ctx: RunContext, model, best: dict[str, Any], folder: Path) -> dict[str, dict[str, Any]]:
    """For each constraint that chose an implementation: the one the search recorded for the best network and, where
    this machine runs the profile (a live one), its deployment plan (`hardware_profiles.select` over the
    constraint's implementations, fp32) in ``best/plan_<profile>/`` with the winner's artifact and snippet."""
    from hardware_profiles import LiveOnnxCpuProfile
    from hardware_profiles.implementations import Network
    from hardware_profiles.select import SelectSettings, select

    out = {}
    for lat in ctx.recipe.constraints.latency:
        if lat.implementation == "default":
            continue
        src, chosen = ctx.latency[lat.profile], best.get(implementation_column(lat.profile))
        entry = {"implementation": chosen, "note": f"the search's choice: {chosen}; no plan (the profile is not "
                 "this machine's)"}
        if isinstance(src.profile, LiveOnnxCpuProfile):
            arch = ctx.space.decode(best["arch"])
            net = Network(tuple(ctx.space.input_shape(arch)), {
                "space": ctx.space.name, "options": ctx.space.options.model_dump(mode="json"),
                "num_classes": ctx.space.num_classes, "arch": best["arch"]}, module=model)
            settings = SelectSettings(implementations=",".join(src.parts), threads=src.profile.threads,
                                      precision="fp32", rounds=3, repeats=20)
            plan_dir = folder / f"plan_{profile_file_name(lat.profile)}"
            shutil.rmtree(plan_dir, ignore_errors=True)   # measured afresh: the network may differ from last time's
            plan = select(net, settings, plan_dir, log=lambda line: None)
            entry["plan"] = str(plan_dir / "plan.json")
            entry["note"] = (f"the search's choice: {chosen}; measured now: {plan.chosen} ({plan.why}); "
                             f"plan_{profile_file_name(lat.profile)}/plan.json, its artifact and run_plan.py")
        out[lat.profile] = entry
    return out


def shipped_latency(ctx: RunContext, arch: Any, latency: dict[str, dict[str, Any]]
                    ) -> tuple[str, float | None, str] | None:
    """A compressed network as it ships (``compression: int8``, or a policy's int8 units; onnxruntime), measured on
    this CPU when no constraint's profile has measured it so (not for policies with 4-bit or 16-bit float units):
    (profile, ms or None, how), or None. `local-cpu-int8` times a whole-network int8 graph, `local-cpu` a policy's
    (its backend quantizes exactly the int8 units); both with the timing protocol of the profiles, 1 thread."""
    from hardware_profiles import LiveOnnxCpuProfile, get_profile

    recipe = ctx.recipe
    policy = getattr(ctx.space.options, "compression", None)
    if recipe.compression == "none" or recipe.quantizer != "onnxruntime" or (
            policy is not None and set(policy.precisions) - {"fp32", "int8"}):   # an FPGA's or a GPU's policy
        return None
    name = "local-cpu-int8" if recipe.compression == "int8" else "local-cpu"
    live = {n: lat for n, lat in latency.items() if lat["measured_ms"] is not None and isinstance(
        getattr(ctx.latency[n], "profile", None), LiveOnnxCpuProfile)}
    if name in live or (recipe.compression == "search" and live):   # a policy: any live CPU profile times it so
        return None
    ms, how = get_profile(name).measure_exported(ctx.space, arch)
    return name, ms, f"the network as it ships (int8 on this CPU), not a constraint: {how}"


# int8 measured this much slower than fp32 is reported as slower (two timings of the same protocol differ by a few
# percent from run to run)
SLOWER = 1.05


def int8_over_fp32(ctx: RunContext, arch: Any, latency: dict[str, dict[str, Any]],
                   shipped: tuple[str, float | None, str] | None) -> tuple[float, str] | None:
    """A whole-network int8 export (``compression: int8``, onnxruntime) against its fp32 network, both measured on
    this CPU with one thread: (int8 ms / fp32 ms, a note when int8 is the slower one, else ""), or None where
    either was not measured. The int8 figure is `shipped_latency`'s or a ``local-cpu-int8`` constraint's; the fp32
    one a ``local-cpu`` constraint's, else measured now. int8 is not always faster on a CPU: on small networks
    the quantize and dequantize steps cost more than the int8 arithmetic saves (the quickstart's networks run at
    about x1.4-x1.8 of fp32 on an AVX-512 VM: README, issue 21), and a user shipping ``model.int8.onnx`` there
    should know it."""
    from hardware_profiles import get_profile

    if ctx.recipe.compression != "int8" or ctx.recipe.quantizer != "onnxruntime":
        return None
    int8 = shipped[1] if shipped is not None and shipped[0] == "local-cpu-int8" else (
        latency.get("local-cpu-int8") or {}).get("measured_ms")
    fp32 = (latency.get("local-cpu") or {}).get("measured_ms")
    if int8 is None:
        return None
    if fp32 is None:
        fp32 = get_profile("local-cpu").measure_exported(ctx.space, arch)[0]
    if not fp32:
        return None
    ratio = int8 / fp32
    note = "" if ratio <= SLOWER else (
        f"model.int8.onnx runs x{ratio:.2f} the time of model.onnx (fp32) on this CPU, one thread: here the quantize "
        "and dequantize steps cost more than the int8 arithmetic saves, so the fp32 graph is the faster one to ship; "
        "`compression: search` prices each unit's precision by its measured latency and keeps fp32 where int8 does "
        "not pay")
    return ratio, note


def exported_latency(ctx: RunContext, arch: Any, best: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per profile: the figure the search used for the best network and that network measured on the profile
    (wherever this machine can; `LatencySource.measure_exported`)."""
    out = {}
    for name, src in ctx.latency.items():
        searched = best.get(latency_column(name))
        measured, how = src.measure_exported(ctx.space, arch)
        error = None if measured is None or searched is None else searched / measured - 1
        out[name] = {"source": src.constraint.source, "search_ms": searched, "search_how": src.how,
                     "measured_ms": measured, "measured_how": how, "error": error,
                     "implementation": best.get(implementation_column(name))}
    return out
