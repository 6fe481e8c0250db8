"""Checks of a recipe that need the plug-in registries: names, plug-in options, and constraints no architecture
of the space can meet. Each failure is one `RecipeError` line naming the file and the field. `load_recipe` reads
a recipe (`nas.recipe.read_recipe`) and runs them: what a run starts from.
"""
from __future__ import annotations

from pathlib import Path

from nas.recipe import Recipe, RecipeError, read_recipe, validate_plugin


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe, plug-in names and options included.

    Args:
        path: the YAML file.
        overrides: `dotted.key=value` strings applied before validation.

    Raises:
        RecipeError: one-line message naming the file, the field and what was expected.
    """
    recipe = read_recipe(path, overrides)
    check_recipe(str(path), recipe)
    return recipe


def check_recipe(source: str, recipe: Recipe) -> None:
    """Raise `RecipeError` for anything in `recipe` that cannot run."""
    from hardware_profiles import has_profile, profile_names
    from nas.controllers import CONTROLLERS
    from nas.evaluation import EVALUATORS, make_evaluator
    from nas.objectives import static_check
    from search_spaces import SPACES, get_space

    space_opts = validate_plugin(source, "space", SPACES, recipe.space)
    validate_plugin(source, "controller", CONTROLLERS, recipe.controller)
    eval_opts = validate_plugin(source, "evaluator", EVALUATORS, recipe.evaluator)
    pre = recipe.search.prescreen
    pre_opts = None
    if pre is not None:
        pre_opts = validate_plugin(source, "search.prescreen.estimator", EVALUATORS, pre.estimator)
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
    for i, lat in enumerate(recipe.constraints.latency):
        if lat.source == "table":
            _check_table_column(source, i, recipe)
        elif not has_profile(lat.profile):
            raise RecipeError(f"{source}: constraints.latency[{i}].profile: unknown hardware profile "
                              f"{lat.profile!r}; expected one of: {', '.join(profile_names())}")
    names = recipe.profiles
    if len(set(names)) != len(names):
        raise RecipeError(f"{source}: constraints.latency: each profile may appear once, got {names}")
    if recipe.search.concurrency > recipe.search.budget:
        raise RecipeError(f"{source}: search.concurrency: must not exceed search.budget "
                          f"({recipe.search.concurrency} > {recipe.search.budget})")
    cl = recipe.cluster
    if cl.address is None and cl.num_cpus is not None and cl.cpus_per_trial > cl.num_cpus:
        raise RecipeError(f"{source}: cluster.cpus_per_trial: {cl.cpus_per_trial:g} exceeds cluster.num_cpus "
                          f"({cl.num_cpus}); no trial could ever start")
    threads = getattr(eval_opts, "threads", None)
    if threads is not None and threads > cl.cpus_per_trial:
        # Ray reserves cpus_per_trial cores for a trial; more threads than that spin against other trials or
        # programs, and a synchronising thread pool then runs many times slower (see bench/quickstart.py --busy)
        raise RecipeError(f"{source}: evaluator.options.threads: {threads} exceeds cluster.cpus_per_trial "
                          f"({cl.cpus_per_trial:g}); a trial may use only the CPUs Ray gives it")
    from nas.metric_tables import TableError

    try:
        num_classes = make_evaluator(recipe.evaluator.name, eval_opts).num_classes()
    except TableError as err:
        raise RecipeError(f"{source}: {err}") from None
    space = get_space(recipe.space.name, space_opts, num_classes=num_classes)
    _check_tables_match_space(source, recipe, space, {"evaluator.options.path": eval_opts,
                                                      "search.prescreen.estimator.options.path": pre_opts})
    _check_controller(source, recipe, space)
    smallest = space.smallest()
    for i, lat in enumerate(recipe.constraints.latency):
        if lat.source == "table":
            continue
        _check_coverage(source, i, lat.profile, space)
        if lat.predictor:
            _check_predictor(source, i, lat.predictor, lat.profile, space)
    flops, params, _ = static_check(space, recipe.constraints, smallest)
    c = recipe.constraints
    for field, limit, value in (("max_flops", c.max_flops, flops), ("max_params", c.max_params, params)):
        if limit is not None and value > limit:
            raise RecipeError(f"{source}: constraints.{field}: {limit:g} is below the smallest architecture of "
                              f"the space ({value:,} for {space.to_string(smallest)}); no candidate can be feasible")


def _check_controller(source: str, recipe: Recipe, space) -> None:
    """A controller that cannot start with this space and these objectives (e.g. the MnasNet reward without a
    latency target) is a recipe error, before the run directory is written."""
    from nas.controllers import make_controller
    from nas.controllers.base import SearchObjectives

    try:
        make_controller(recipe.controller.name, space, recipe.controller.options, recipe.search.seed,
                        SearchObjectives.from_constraints(recipe.constraints))
    except (ValueError, NotImplementedError) as err:
        raise RecipeError(f"{source}: controller.options: {err}") from None


def _check_tables_match_space(source: str, recipe: Recipe, space, estimators: dict) -> None:
    """Every metric table the run reads (the evaluator's, the prescreen estimator's, ``source: table``
    constraints') must hold architectures of the recipe's space; otherwise every trial would fail its lookup.

    Args:
        estimators: recipe field of the table path -> the validated options of the evaluator reading it (or None).
    """
    from nas.evaluation.tabular import SurrogateOptions, TabularOptions, constraint_table
    from nas.metric_tables import TableError, check_space, read_metric_table

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


def _check_table_column(source: str, index: int, recipe: Recipe) -> None:
    """A ``source: table`` constraint needs a readable metric table holding its latency column."""
    from nas.evaluation.tabular import constraint_table
    from nas.metric_tables import TableError, metric_column, read_metric_table

    field = f"constraints.latency[{index}]"
    try:
        path = constraint_table(recipe, recipe.constraints.latency[index])
        if path is None:
            raise RecipeError(f"{source}: {field}.table: source 'table' needs a metric table: set table, or use "
                              "the tabular evaluator")
        metric_column(read_metric_table(path), path, recipe.constraints.latency[index].column, f"{field}.column")
    except TableError as err:
        raise RecipeError(f"{source}: {err}") from None


def _check_coverage(source: str, index: int, ref: str, space) -> None:
    """A lookup-table profile must hold every layer the space can produce (when the space can list them)."""
    from hardware_profiles import get_profile
    from hardware_profiles.lookup import TableProfile

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


def _check_predictor(source: str, index: int, folder: str, profile: str, space) -> None:
    """A given predictor folder must load, be for the profile if it names one, and cost the recipe's space."""
    from pathlib import Path

    from nas.latency_sources import LatencySetupError, checked_predictor
    from predictors.io import PredictorFileError, load

    field = f"constraints.latency[{index}].predictor"
    try:
        model, meta = load(Path(folder))
    except PredictorFileError as err:
        raise RecipeError(f"{source}: {field}: {err}") from None
    trained_for = (meta.get("profile") or {}).get("name")
    if trained_for and trained_for != profile.partition("@")[0]:
        raise RecipeError(f"{source}: {field}: {folder} was trained for profile {trained_for}, not {profile}")
    try:
        checked_predictor(field, model, space)
    except LatencySetupError as err:
        raise RecipeError(f"{source}: {err}") from None
