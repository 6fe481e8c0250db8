"""Checks of a recipe that need the plug-ins: names and options, settings a run cannot honour, metric tables and
predictors that cannot serve, and constraints no architecture of the space can meet. Each failure is one
`RecipeError` line naming the file and the field. `load_run` reads a recipe (`nas.recipe.read_recipe`), builds its
run context (`nas.context.RunContext`) and runs the checks against it: what a run starts from.
"""
from __future__ import annotations

from pathlib import Path

from core.errors import InputError
from hardware_profiles import LiveOnnxCpuProfile, TableProfile, get_profile, has_profile, profile_names
from hardware_profiles.simulated import SimulatedProfile
from nas.context import Plugins, RunContext, validate_plugins
from nas.evaluation import EVALUATORS
from nas.evaluation.tabular import SurrogateOptions, TabularOptions, constraint_table
from nas.latency_sources import LatencySetupError, given_predictor, implementation_profiles, table_column
from nas.metric_tables import TableError, check_space, read_metric_table
from nas.objectives import static_figures
from nas.recipe import Recipe, RecipeError, read_recipe
from search_spaces import SPACES
from search_spaces.base import CompressionOptions
from search_spaces.policy import no_pruning, no_units, offers_pruning, offers_units


def load_run(path: str | Path, overrides: list[str] | None = None) -> RunContext:
    """Read, override and check a recipe; returns the run context the checks ran against (what the run uses).

    Args:
        path: the YAML file.
        overrides: `dotted.key=value` strings applied before validation.

    Raises:
        RecipeError: one-line message naming the file, the field and what was expected.
    """
    return check_recipe(str(path), read_recipe(path, overrides))


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """`load_run`'s recipe (its typed plug-in options kept in `Recipe.plugins`)."""
    return load_run(path, overrides).recipe


def check_recipe(source: str, recipe: Recipe) -> RunContext:
    """Check everything in `recipe` that could stop a run and build the run context on the way.

    Raises:
        RecipeError: the first problem, one line naming `source` and the field.
    """
    plugins = validate_plugins(source, recipe)
    _check_prescreen(source, recipe)
    _check_settings(source, recipe, plugins)
    try:
        ctx = RunContext(recipe)
    except TableError as err:
        raise RecipeError(f"{source}: {err}") from None
    _check_tables_match_space(source, recipe, ctx.space, {"evaluator.options.path": plugins.evaluator,
                                                          "search.prescreen.estimator.options.path": plugins.prescreen})
    try:
        ctx.controller   # noqa: B018 - made now, so a controller that cannot start is a recipe error
    except (ValueError, NotImplementedError) as err:   # e.g. the MnasNet reward without a latency target
        raise RecipeError(f"{source}: controller.options: {err}") from None
    for i, lat in enumerate(recipe.constraints.latency):
        _check_energy(source, i, lat)
        _check_memory(source, i, lat)
        if lat.source == "table":
            continue
        _check_coverage(source, i, lat.profile, ctx.space)
        _check_implementation(source, i, lat)
        if lat.predictor:
            try:
                given_predictor(i, lat, ctx.space)
            except LatencySetupError as err:
                raise RecipeError(f"{source}: {err}") from None
    _check_train_batch(source, recipe, plugins)
    _check_train_memory_profile(source, recipe, ctx.space)
    _check_smallest(source, recipe, ctx.space)
    return ctx


def _check_energy(source: str, index: int, lat) -> None:
    """``max_energy_mj`` needs a profile that models energy per inference (the FPGA simulators) or has an energy
    table (`hardware_profiles.energy`), and one engine's figure."""
    if lat.max_energy_mj is None:
        return
    profile = get_profile(lat.profile) if lat.source != "table" else None
    table = isinstance(profile, TableProfile) and getattr(profile.manifest.tables, "energy", None)
    if not (isinstance(profile, SimulatedProfile) or table):
        raise RecipeError(f"{source}: constraints.latency[{index}].max_energy_mj: {lat.profile} has no energy "
                          "model or table; energy is limited on the profiles that model it (the FPGA simulators, "
                          "e.g. fpga-zc706-int8) or were measured for it (python -m hardware_profiles.energy)")
    if lat.implementation != "default":
        raise RecipeError(f"{source}: constraints.latency[{index}].max_energy_mj: energy is known for the profile's "
                          "own engine only; leave implementation out")


def _check_memory(source: str, index: int, lat) -> None:
    """A latency entry's ``max_memory_mb`` needs a profile with a memory or workspace table
    (`hardware_profiles.memory`)."""
    if lat.max_memory_mb is None:
        return
    profile = get_profile(lat.profile) if lat.source != "table" else None
    if not (isinstance(profile, TableProfile) and (getattr(profile.manifest.tables, "memory", None)
                                                   or getattr(profile.manifest.tables, "workspace", None))):
        raise RecipeError(f"{source}: constraints.latency[{index}].max_memory_mb: {lat.profile} has no memory table; "
                          f"measure one (python -m hardware_profiles.memory --profile {lat.profile}, with --workspace "
                          "on a GPU profile) or limit the walk's figure with constraints.max_memory_mb")
    if lat.implementation != "default":
        raise RecipeError(f"{source}: constraints.latency[{index}].max_memory_mb: memory is known for the profile's "
                          "own engine only; leave implementation out")


def _check_train_batch(source: str, recipe: Recipe, plugins) -> None:
    """``max_train_memory_gb`` (and ``cluster.trial_memory: predicted``) is predicted at
    ``constraints.train_batch``, by default the evaluator's ``batch_size`` (filled in here, so every trial predicts
    at the batch it trains at)."""
    c = recipe.constraints
    if c.on_train_memory == "shrink" and c.max_train_memory_gb is None:
        raise RecipeError(f"{source}: constraints.on_train_memory: shrink needs constraints.max_train_memory_gb, the "
                          "budget a candidate's training step is shrunk to fit")
    needs = "max_train_memory_gb" if c.max_train_memory_gb is not None else \
        "cluster.trial_memory: predicted" if recipe.cluster.trial_memory == "predicted" else None
    if needs is None or c.train_batch is not None:
        return
    batch = getattr(plugins.evaluator, "batch_size", None)
    if not isinstance(batch, int) or batch <= 0:
        raise RecipeError(f"{source}: constraints.train_batch: {needs} needs the batch size a trial trains at, and "
                          f"evaluator {recipe.evaluator.name!r} has no batch_size; set it")
    c.train_batch = batch


def _check_train_memory_profile(source: str, recipe: Recipe, space) -> None:
    """``constraints.train_memory_profile``: a profile whose workspace table measured training workspace for layers
    of the recipe's space, and a training memory figure that uses it."""
    c = recipe.constraints
    if c.train_memory_profile is None:
        return
    field = f"{source}: constraints.train_memory_profile"
    if c.max_train_memory_gb is None and recipe.cluster.trial_memory != "predicted":
        raise RecipeError(f"{field}: nothing predicts training memory; set constraints.max_train_memory_gb or "
                          "cluster.trial_memory: predicted")
    from nas.objectives import train_workspace_model

    try:
        model = train_workspace_model(c.train_memory_profile, space)
    except (InputError, ValueError) as err:
        raise RecipeError(f"{field}: {err}") from None
    if not model.train:
        raise RecipeError(f"{field}: {c.train_memory_profile}'s workspace table has no training workspace; "
                          f"measure it (python -m hardware_profiles.memory --profile {c.train_memory_profile} "
                          "--workspace)")


def _check_implementation(source: str, index: int, lat) -> None:
    """A constraint's ``implementation``: registered, installed, for the profile's device (or, on a table profile,
    other profiles of its device), and not with one given predictor for several engines."""
    if lat.implementation == "default":
        return
    if lat.predictor:
        raise RecipeError(f"{source}: constraints.latency[{index}].predictor: a given predictor answers for one "
                          "engine; leave it out with implementation (one is built per implementation)")
    try:
        implementation_profiles(index, lat, get_profile(lat.profile))
    except InputError as err:
        raise RecipeError(f"{source}: {err}") from None


def _check_prescreen(source: str, recipe: Recipe) -> None:
    pre = recipe.search.prescreen
    if pre is None:
        return
    if EVALUATORS.get(pre.estimator.name).trains:
        raise RecipeError(f"{source}: search.prescreen.estimator.name: {pre.estimator.name!r} trains networks; "
                          "prescreening needs an estimate without training (e.g. tabular)")
    if (pre.top_k or 0) > recipe.search.budget:
        raise RecipeError(f"{source}: search.prescreen.top_k: must not exceed search.budget "
                          f"({pre.top_k} > {recipe.search.budget})")
    for i, lat in enumerate(recipe.constraints.latency):
        if lat.source == "profile":
            raise RecipeError(f"{source}: constraints.latency[{i}].source: prescreening needs latency without "
                              "a measurement per candidate; use source: predictor or table")


def _check_settings(source: str, recipe: Recipe, plugins: Plugins) -> None:
    """Latency constraints that name what exists, once each; concurrency and CPUs a run can honour."""
    for i, lat in enumerate(recipe.constraints.latency):
        if lat.source == "table":
            try:
                table_column(i, lat, constraint_table(recipe, lat))
            except (LatencySetupError, TableError) as err:
                raise RecipeError(f"{source}: {err}") from None
        elif not has_profile(lat.profile):
            raise RecipeError(f"{source}: constraints.latency[{i}].profile: unknown hardware profile "
                              f"{lat.profile!r}; expected one of: {', '.join(profile_names())}")
    names = recipe.profiles
    if len(set(names)) != len(names):
        raise RecipeError(f"{source}: constraints.latency: each profile may appear once, got {names}")
    if recipe.search.concurrency != "auto" and recipe.search.concurrency > recipe.search.budget:
        raise RecipeError(f"{source}: search.concurrency: must not exceed search.budget "
                          f"({recipe.search.concurrency} > {recipe.search.budget})")
    cl = recipe.cluster
    if cl.address is None and cl.num_cpus is not None and cl.cpus_per_trial > cl.num_cpus:
        raise RecipeError(f"{source}: cluster.cpus_per_trial: {cl.cpus_per_trial:g} exceeds cluster.num_cpus "
                          f"({cl.num_cpus}); no trial could ever start")
    _check_compression(source, recipe, plugins)
    if recipe.compression != "none" and not EVALUATORS.get(recipe.evaluator.name).quantizes:
        raise RecipeError(f"{source}: compression: {recipe.compression} needs an evaluator that trains networks "
                          f"and exposes its data (e.g. proxy); {recipe.evaluator.name!r} cannot score a quantized "
                          "network")
    threads = getattr(plugins.evaluator, "threads", None)
    if threads is not None and threads > cl.cpus_per_trial:
        # Ray reserves cpus_per_trial cores for a trial; more threads than that spin against other trials or
        # programs, and a synchronising thread pool then runs many times slower (see bench/quickstart.py --busy)
        raise RecipeError(f"{source}: evaluator.options.threads: {threads} exceeds cluster.cpus_per_trial "
                          f"({cl.cpus_per_trial:g}); a trial may use only the CPUs Ray gives it")


def _check_compression(source: str, recipe: Recipe, plugins: Plugins) -> None:
    """``compression: search`` and the space's ``compression`` option go together; the space must have
    compression units, and every latency constraint a profile that can time int8 layers; quantization-aware
    fine-tuning (``evaluator.options.qat_epochs``) runs in the PT2E flow only."""
    if getattr(plugins.evaluator, "qat_epochs", None) is not None and (recipe.compression, recipe.quantizer) != (
            "int8", "pt2e"):
        raise RecipeError(f"{source}: evaluator.options.qat_epochs: quantization-aware fine-tuning runs in PyTorch's "
                          "PT2E flow, with compression: int8 and quantizer: pt2e (the recipe has compression: "
                          f"{recipe.compression}, quantizer: {recipe.quantizer})")
    if recipe.quantizer == "pt2e":
        if recipe.compression != "int8":
            raise RecipeError(f"{source}: quantizer: pt2e quantizes whole networks with compression: int8 (the "
                              f"recipe has compression: {recipe.compression}); a policy's int8 units are timed and "
                              "scored with onnxruntime")
        from core.quantize import pt2e_flow

        try:   # the modules the flow uses, not just the package: torchao follows torch's releases
            pt2e_flow()
        except ModuleNotFoundError as err:
            if err.name is not None and err.name.split(".")[0] != "torchao":
                raise RecipeError(f"{source}: quantizer: pt2e: torchao cannot be imported ({err})") from None
            raise RecipeError(f"{source}: quantizer: pt2e needs the torchao package: pip install -e \".[torchao]\""
                              ) from None
        except Exception as err:   # noqa: BLE001 - an installed torchao that does not work with this torch
            raise RecipeError(f"{source}: quantizer: pt2e: torchao cannot be imported with torch "
                              f"({type(err).__name__}: {err}); install a torchao release made for this torch") from None
    policy = getattr(plugins.space, "compression", None)
    if recipe.compression == "search" and policy is None:
        raise RecipeError(f"{source}: space.options.compression: compression: search needs the choices of the "
                          "policy, e.g. compression: {precisions: [fp32, int8]}")
    if policy is None:
        return
    if recipe.compression != "search":
        raise RecipeError(f"{source}: space.options.compression: a policy in the genotype is searched only with "
                          f"compression: search (the recipe has compression: {recipe.compression})")
    if not offers_units(SPACES.get(recipe.space.name)):
        raise RecipeError(f"{source}: space.options.compression: {no_units(recipe.space.name)}")
    if policy.prunes:
        if not offers_pruning(SPACES.get(recipe.space.name)):
            raise RecipeError(f"{source}: space.options.compression.keep: {no_pruning(recipe.space.name)}")
        if not EVALUATORS.get(recipe.evaluator.name).prunes:
            raise RecipeError(f"{source}: space.options.compression.keep: evaluator {recipe.evaluator.name!r} "
                              "cannot fine-tune a pruned network; keep ratios are searched with one that can "
                              "(e.g. proxy)")
    for i, lat in enumerate(recipe.constraints.latency):
        profile = get_profile(lat.profile) if lat.source != "table" else None
        cpu = isinstance(profile, LiveOnnxCpuProfile) and lat.implementation in ("default", "onnxruntime-cpu")
        table = table_policy(profile) if lat.implementation == "default" else None
        if not (cpu or table or isinstance(profile, SimulatedProfile)):
            raise RecipeError(f"{source}: constraints.latency[{i}]: {lat.profile} cannot time a compression "
                              "policy's units; compression: search runs on this CPU's onnxruntime profiles "
                              "(local-cpu, local-cpu-2t), the FPGA simulators and tables measured with a policy "
                              "(hardware_profiles.measure --space-options with a compression entry; GPU ones for "
                              "fp16/bf16 units)")
        if table:
            missing = [p for p in policy.precisions if p not in table.precisions]
            if missing:
                raise RecipeError(f"{source}: space.options.compression.precisions: {lat.profile} (constraints."
                                  f"latency[{i}]) has no {missing[0]} layers; its tables were measured with "
                                  f"precisions {table.precisions}")
            unmeasured = [k for k in policy.keep if k not in table.keep]
            if unmeasured:
                raise RecipeError(f"{source}: space.options.compression.keep: {lat.profile} (constraints.latency"
                                  f"[{i}]) has no layers pruned to {unmeasured[0]:g}; its tables were measured "
                                  f"with keep {[float(k) for k in table.keep]}")
            continue
        runs = ("fp32", "int8") if cpu else ("int8", "int4")
        bad = [p for p in policy.precisions if p not in runs]
        if bad:
            where = {"int4": "4-bit weights run on the FPGA profiles", "fp32": "an int8 accelerator runs int8 and "
                     "int4"}.get(bad[0], "16-bit float units run on GPU tables measured with a policy")
            raise RecipeError(f"{source}: space.options.compression.precisions: {lat.profile} (constraints.latency"
                              f"[{i}]) cannot run {bad[0]} units; {where}")


def table_policy(profile) -> CompressionOptions | None:
    """The compression policy a table profile was measured with (its blocks in each precision and at each keep
    ratio, its networks with mixed policies: ``hardware_profiles.measure --space-options`` with a
    ``compression`` entry), else None."""
    if not isinstance(profile, TableProfile):
        return None
    policy = (profile.manifest.space_options or {}).get("compression")
    return None if policy is None else CompressionOptions.model_validate(policy)


def _check_smallest(source: str, recipe: Recipe, space) -> None:
    """FLOPs/params/memory limits below the space's smallest architecture leave no feasible candidate."""
    smallest = space.smallest()
    figures = static_figures(space, recipe.constraints, smallest)[0]
    c = recipe.constraints
    for field, limit, value in (("max_flops", c.max_flops, figures["flops"]),
                                ("max_params", c.max_params, figures["params"]),
                                ("max_memory_mb", c.max_memory_mb, figures.get("memory_mb")),
                                ("max_train_memory_gb", c.max_train_memory_gb, figures.get("train_memory_gb"))):
        if limit is not None and value > limit:
            shown = f"{value:,}" if isinstance(value, int) else f"{value:.4g}"
            raise RecipeError(f"{source}: constraints.{field}: {limit:g} is below the smallest architecture of "
                              f"the space ({shown} for {space.to_string(smallest)}); no candidate can be feasible")


def _check_tables_match_space(source: str, recipe: Recipe, space, estimators: dict) -> None:
    """Every metric table the run reads (the evaluator's, the prescreen estimator's, ``source: table``
    constraints') must hold architectures of the recipe's space; otherwise every trial would fail its lookup.

    Args:
        estimators: recipe field of the table path -> the validated options of the evaluator reading it (or None).
    """
    tables = [(field, opts.path, 10 if isinstance(opts, SurrogateOptions) else None)
              for field, opts in estimators.items() if isinstance(opts, TabularOptions)]
    for i, lat in enumerate(recipe.constraints.latency):
        if lat.source == "table" and (path := constraint_table(recipe, lat)) is not None:
            tables.append((f"constraints.latency[{i}].table", path, None))
    try:
        for field, path, min_rows in tables:
            check_space(read_metric_table(path), path, space, field, min_rows=min_rows)
    except TableError as err:
        raise RecipeError(f"{source}: {err}") from None


def _check_coverage(source: str, index: int, ref: str, space) -> None:
    """A lookup-table profile must hold every layer the space can produce (when the space can list them)."""
    profile = get_profile(ref)
    if not isinstance(profile, TableProfile):
        return
    layers, exact = space.enumerate_layers()
    missing = profile.missing(str(lc.key) for lc in layers) if exact else []
    if missing:
        raise RecipeError(f"{source}: constraints.latency[{index}].profile: {ref} has no measurement for "
                          f"{len(missing)} of the {len(layers)} layers this space can produce (e.g. {missing[0]}); "
                          f"measure them: python -m hardware_profiles.measure --profile {profile.manifest.name} "
                          f"--space {space.name} --space-options FILE")
