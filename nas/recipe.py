"""Recipes: YAML files validated once, at the edge, into typed models.

`read_recipe(path, overrides)` returns a `Recipe` or raises `RecipeError` whose message is one line naming the
file, the field and what was expected, e.g.::

    recipes/bad.yaml: space.name: unknown search space 'mobilnet'; expected one of: mobilenet

Plug-in options (`space.options`, `controller.options`, `evaluator.options`) are validated by the plug-in they
configure, so their unknown keys are rejected too: `nas.checks.load_recipe` reads a recipe and runs those checks,
which need the plug-in registries (and torch), so that importing this module stays light.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, PrivateAttr, ValidationError,
                      field_validator, model_validator)

from core.cli import read_yaml_mapping
from core.errors import InputError, format_validation_error
from core.registry import Registry


class RecipeError(InputError):
    """A recipe that cannot run; the message is one line a user can act on."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PluginConfig(_Strict):
    """A registered plug-in by name plus its own options."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)


class SpaceConfig(PluginConfig):
    name: str = "mobilenet"


class ControllerConfig(PluginConfig):
    name: str = "evolution"


class EvaluatorConfig(PluginConfig):
    name: str = "proxy"


class LatencyConstraint(_Strict):
    """Latency on one hardware profile; without `max_ms` it is reported but not constrained.

    `source` says where each candidate's figure comes from (see `nas.latency_sources`): ``predictor`` (default)
    asks a LightGBM latency predictor, so the limit is checked before a trial is spent; ``profile`` asks the
    profile itself for every candidate (live measurement, table sum or simulation); ``table`` reads `column` of a
    metric table (`table`, default: the ``tabular`` evaluator's), and `profile` is then just the figure's name.
    The exported best network is measured wherever the profile can be timed.
    """

    profile: str
    max_ms: PositiveFloat | None = None
    max_energy_mj: PositiveFloat | None = Field(None, description="energy per inference on the profile, mJ (profiles "
                                                "that model energy: the FPGA simulators); checked before a trial")
    max_memory_mb: PositiveFloat | None = Field(None, description="inference memory at batch 1 on the profile, MiB: "
                                                "parameters plus the activation peak, the walk corrected by the "
                                                "profile's memory table (hardware_profiles.memory); checked before "
                                                "a trial")
    source: Literal["predictor", "profile", "table"] = "predictor"
    predictor: str | None = Field(None, description="predictor folder (predictors.train --out) for this profile; "
                                  "default: trained from the profile's tables, or calibrated on it")
    calibration: PositiveInt | None = Field(None, description="networks timed to calibrate a predictor for a "
                                            "profile without tables (default 24 live, 200 simulated)")
    column: str | None = Field(None, description="source: table: the metric table's latency column (ms)")
    table: str | None = Field(None, description="source: table: metric table file (default: the tabular "
                              "evaluator's path)")
    implementation: str = Field("default", description="the engine the network will run on: 'default' (the "
                                "profile's own), a registered implementation (hardware_profiles.implementations; "
                                "live profiles), or 'best': the fastest of `implementations` per candidate")
    implementations: list[str] | None = Field(None, description="implementation: best: what is compared, each a "
                                              "registered implementation (live profiles; default: every CPU one "
                                              "installed that does not compile per network) or a profile measured "
                                              "with another engine on the same device (table profiles)")

    @model_validator(mode="after")
    def _column_with_table(self) -> LatencyConstraint:
        if self.source == "table" and not self.column:
            raise ValueError("source 'table' needs column: the metric table's latency column")
        if self.source != "table" and (self.column or self.table):
            raise ValueError(f"column/table apply to source 'table', not {self.source!r}")
        if self.source == "table" and self.implementation != "default":
            raise ValueError("implementation applies to hardware profiles, not to source 'table'")
        if self.implementations is not None and self.implementation != "best":
            raise ValueError("implementations lists what implementation: best compares; set implementation: best")
        if self.implementations is not None and not self.implementations:
            raise ValueError("implementations: give at least one, or leave it out for the default set")
        return self


class Constraints(_Strict):
    """Hard limits; FLOPs are multiply-accumulates at batch 1 (MobileNetV2-1.0 = 300e6)."""

    max_flops: PositiveFloat | None = None
    max_params: PositiveFloat | None = None
    max_memory_mb: PositiveFloat | None = Field(None, description="inference memory at batch 1, MiB: parameters "
                                                "plus the peak of activations alive at once (predictors.memory)")
    memory_engine: Literal["fused", "eager", "onnxruntime"] = Field(
        "fused", description="max_memory_mb: how the deployed engine keeps tensors: fused (BatchNorm folded, "
        "activations in place: onnxruntime, TensorRT), eager (PyTorch eager mode, CUDA graphs of it) or "
        "onnxruntime (the graph its CPU provider runs, with its allocation planner; predictors.ort_memory)")
    memory_channel_block: PositiveInt | None = Field(None, description="channels per block of the layout "
                                                     "max_memory_mb is walked with: onnxruntime's NCHWc block "
                                                     "(default with memory_engine onnxruntime: this machine's, 16 "
                                                     "with AVX-512 and 8 with AVX2; 1 where it has none, as on "
                                                     "ARM); the other engines round channels up to it (default 1)")
    max_train_memory_gb: PositiveFloat | None = Field(None, description="memory of a training step at "
                                                      "train_batch, GiB: weights, gradients, optimizer state, "
                                                      "saved activations (predictors.memory)")
    train_batch: PositiveInt | None = Field(None, description="max_train_memory_gb: the batch size it is "
                                            "predicted at (default: the evaluator's batch_size)")
    on_train_memory: Literal["refuse", "shrink"] = Field("refuse", description="a candidate whose training step at "
                                                         "train_batch breaks max_train_memory_gb: refuse it, or "
                                                         "shrink: train it at the largest batch size that fits "
                                                         "(column train_batch), refused only below min_train_batch")
    train_memory_profile: str | None = Field(None, description="max_train_memory_gb and cluster.trial_memory: "
                                             "predicted: a GPU profile whose workspace table measured each "
                                             "layer's cuDNN workspace in training (python -m "
                                             "hardware_profiles.memory --workspace); the prediction adds it "
                                             "where the backward pass reaches that layer (default: none)")
    min_train_batch: PositiveInt = Field(8, description="on_train_memory: shrink: the smallest batch size a trial "
                                         "may train at (BatchNorm's batch statistics get noisy below it)")
    latency: list[LatencyConstraint] = Field(default_factory=list)
    verify: int = Field(20, ge=0, description="before export, measure up to this many of the most accurate feasible "
                        "candidates on the live profiles whose limits a predictor checked, and export the first "
                        "measured within every limit (nas.verify); 0: the search's best, unchecked")

    def memory_block(self) -> int:
        """The channel block `predictors.memory.inference_memory` walks max_memory_mb with: memory_channel_block,
        else this machine's onnxruntime NCHWc block for the onnxruntime engine, else 1."""
        if self.memory_channel_block is not None:
            return self.memory_channel_block
        if self.memory_engine != "onnxruntime":
            return 1
        from hardware_profiles.memory import ort_channel_block

        return ort_channel_block()


class PrescreenConfig(_Strict):
    """In-process search on cheap estimates before any Tune trial (`nas.prescreen`).

    The controller evaluates `candidates` architectures in this process with an accuracy `estimator` that needs
    no training (an evaluator whose `trains` is False, e.g. ``tabular``) and the latency predictors; the best
    `top_k` feasible ones then go through Ray Tune with the recipe's evaluator.
    """

    candidates: PositiveInt = Field(10_000, description="architectures estimated in-process")
    top_k: PositiveInt | None = Field(None, description="best estimates sent to full evaluation (default: budget)")
    estimator: EvaluatorConfig = Field(description="accuracy estimate that needs no training, e.g. tabular")


class SearchConfig(_Strict):
    budget: PositiveInt = Field(description="architectures evaluated (trials); rejected candidates are free")
    prescreen: PrescreenConfig | None = Field(None, description="estimate many candidates in-process first; only "
                                              "the top_k go through Tune")
    concurrency: PositiveInt | Literal["auto"] = Field(1, description="trials run at once; 'auto': as many as the "
                                                       "cluster's resources hold, following nodes that join or leave")
    seed: int = 0
    trial_timeout: PositiveFloat | None = Field(None, description="seconds a trial may run; past it, it is stopped "
                                                "and recorded as failed, and the search goes on")
    train_infeasible: bool = Field(False, description="also train candidates whose measured latency is too high")
    max_rejections: PositiveInt = Field(10_000, description="consecutive rejected proposals before giving up")
    repair: Literal["dominated", "fit", "none"] = Field(
        "dominated", description="compression: search: dominated (default) proposes a unit uncompressed where the "
                                 "search's cheap figures price the compression at no gain (latency, energy and "
                                 "memory no higher on every profile); fit also compresses a proposal over a limit "
                                 "until it meets it; none: as drawn (nas.compression.repaired)")


class OutputConfig(_Strict):
    dir: str = Field("runs/{name}", description="run directory; {name} is replaced by the recipe's name")
    export: bool = True

    @field_validator("dir")
    @classmethod
    def _only_name_placeholder(cls, v: str) -> str:
        try:
            v.format(name="x")
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(f"the only placeholder allowed is {{name}} ({type(err).__name__}: {err})") from None
        return v


class TrackingConfig(_Strict):
    backend: Literal["wandb", "none"] = "wandb"
    project: str = "hwnas"
    mode: Literal["offline", "disabled"] = "offline"


class ClusterConfig(_Strict):
    """Where trials run: a local Ray instance, or a running Ray cluster (`nas.search`; README "On a cluster")."""

    address: str | None = Field(None, description="Ray address of a running cluster: 'auto' or 'HOST:PORT' (run "
                                "the command on a machine of the cluster); None = a local Ray instance")
    num_cpus: PositiveInt | None = Field(None, description="CPUs of the local Ray instance (default: all)")
    cpus_per_trial: PositiveFloat = 1.0
    gpus_per_trial: float = Field(0.0, ge=0, description="GPUs Ray reserves per trial (fractions share one GPU); "
                                  "evaluators that train use the GPU when they get one")
    accelerator_type: str | None = Field(None, description="run trials only on nodes with this accelerator "
                                         "(Ray's accelerator_type:<X> resource, e.g. H100)")
    resources: dict[str, PositiveFloat] = Field(default_factory=dict, description="custom Ray resources each trial "
                                                "reserves, e.g. {fpga_board: 1}")
    storage: str | None = Field(None, description="shared storage for Tune's experiment and a copy of the run's "
                                "ledger: a path every machine mounts, or a URI pyarrow opens (s3://, gs://, "
                                "file://); --resume on another machine fetches the ledger from it")
    max_retries: int = Field(2, ge=0, description="times a trial whose worker process or node died is run again")
    connect_timeout: PositiveFloat = Field(30.0, description="seconds to reach the cluster before giving up")
    trial_memory: Literal["none", "predicted"] = Field("none", description="'predicted': each trial reserves Ray's "
                                                       "`memory` resource for its candidate's predicted training "
                                                       "memory at constraints.train_batch plus "
                                                       "trial_memory_overhead_gb (predictors.memory)")
    trial_memory_overhead_gb: float = Field(1.0, ge=0, description="trial_memory: predicted: what a trial's worker "
                                            "process holds beside the training step (Python, PyTorch, data)")
    gpu_memory_gb: PositiveFloat | None = Field(None, description="trial_memory: predicted with gpus_per_trial: the "
                                                "memory of one of the nodes' GPUs, GiB; a trial then reserves the "
                                                "share of a GPU its candidate's training step needs (at most "
                                                "gpus_per_trial), so small candidates share a GPU, and Ray's "
                                                "`memory` for the worker only")

    @model_validator(mode="after")
    def _gpu_share(self) -> ClusterConfig:
        if self.gpu_memory_gb is not None and (self.trial_memory != "predicted" or not self.gpus_per_trial):
            raise ValueError("gpu_memory_gb sizes each trial's GPU share from its predicted training step: it needs "
                             "trial_memory: predicted and gpus_per_trial above 0")
        return self

    def trial_resources(self) -> dict[str, float]:
        """What Ray reserves for one trial (Tune's `with_resources` form)."""
        custom = dict(self.resources)
        if self.accelerator_type:
            custom[f"accelerator_type:{self.accelerator_type}"] = 0.001   # Ray's convention: a sliver of the marker
        return {"cpu": self.cpus_per_trial, "gpu": self.gpus_per_trial, **custom}


class Recipe(_Strict):
    """One whole search."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    space: SpaceConfig = Field(default_factory=SpaceConfig)
    controller: ControllerConfig = Field(default_factory=ControllerConfig)
    evaluator: EvaluatorConfig = Field(default_factory=EvaluatorConfig)
    constraints: Constraints = Field(default_factory=Constraints)
    compression: Literal["none", "int8", "search"] = Field(
        "none", description="how every candidate is scored: none (fp32), int8 (trained, then quantized with "
                            "onnxruntime and scored quantized: nas.compression) or search (a precision per unit in "
                            "the genotype, space.options.compression: search_spaces.policy)")
    quantizer: Literal["onnxruntime", "pt2e"] = Field(
        "onnxruntime", description="how compression: int8 quantizes and scores a candidate: onnxruntime (static "
                                   "QDQ, for targets that run onnxruntime) or pt2e (PyTorch's PT2E flow with "
                                   "torchao's X86InductorQuantizer, for targets that run PyTorch; the torchao "
                                   "extra)")
    search: SearchConfig
    output: OutputConfig = Field(default_factory=OutputConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    _plugins: Any = PrivateAttr(None)

    @property
    def plugins(self) -> Any:
        """The plug-ins' typed options (`nas.context.Plugins`) once validated (`nas.context.validate_plugins`,
        run by `nas.checks.load_recipe`); None before, and None again once a plug-in's name or options change."""
        if self._plugins is None or self._plugins[0] != self._plugin_key():
            return None
        return self._plugins[1]

    def keep_plugins(self, plugins: Any) -> None:
        """Keep the validated plug-in options (they travel with the recipe to trial workers)."""
        self._plugins = (self._plugin_key(), plugins)

    def _plugin_key(self) -> str:
        pre = self.search.prescreen
        return "|".join(c.model_dump_json() for c in (self.space, self.controller, self.evaluator,
                                                       *([pre.estimator] if pre else [])))

    @field_validator("tracking", mode="before")
    @classmethod
    def _tracking_shorthand(cls, v: Any) -> Any:
        # `tracking: none` / `tracking: wandb` are accepted as shorthands
        if v is None or isinstance(v, bool) and not v:
            return {"backend": "none"}
        return {"backend": v} if isinstance(v, str) else v

    def output_dir(self) -> Path:
        return Path(self.output.dir.format(name=self.name))

    @property
    def profiles(self) -> list[str]:
        """Hardware profiles named by the latency constraints, in recipe order."""
        return [lat.profile for lat in self.constraints.latency]

    @property
    def implementation_profiles(self) -> list[str]:
        """Profiles whose constraint names an implementation (or the best one): each gets an
        ``implementation_<profile>`` column."""
        return [lat.profile for lat in self.constraints.latency if lat.implementation != "default"]


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], YAML-parsed value)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or any(not p for p in key.strip().split(".")):
        raise RecipeError(f"--set {text!r}: expected dotted.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each `dotted.key=value` in `data` (creating mappings on the way); a numeric key indexes a list, as in
    ``constraints.latency.0.max_ms=5``."""
    for text in overrides:
        keys, value = parse_override(text)
        node: Any = data
        for depth, k in enumerate(keys):
            last = depth == len(keys) - 1
            if isinstance(node, list):
                if not k.isdigit() or int(k) >= len(node):
                    raise RecipeError(f"--set {text!r}: {'.'.join(keys[:depth]) or '(top level)'} is a list of "
                                      f"{len(node)}; expected an index 0..{len(node) - 1}, got {k!r}")
                k = int(k)
            elif not isinstance(node, dict):
                raise RecipeError(f"--set {text!r}: {'.'.join(keys[:depth])} is not a mapping or a list")
            if last:
                node[k] = value
            elif isinstance(node, dict):
                node = node.setdefault(k, {})
            else:
                node = node[k]
    return data


def read_yaml(path: Path) -> dict[str, Any]:
    """The mapping in a YAML file, or `RecipeError` naming the file and the problem."""
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    return read_yaml_mapping(path, "recipe sections", RecipeError)


def validate_plugin(source: str, field: str, registry: Registry, config: PluginConfig) -> BaseModel:
    """The plug-in's validated options; `RecipeError` for an unknown name or bad options."""
    try:
        return registry.options(config.name, config.options)
    except ValidationError as err:
        raise RecipeError(format_validation_error(source, err, prefix=f"{field}.options")) from None
    except ValueError as err:   # an unknown name
        raise RecipeError(f"{source}: {field}.name: {err}") from None


def read_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe against the schema (`nas.checks.load_recipe` also checks the plug-in
    names and options against their registries).

    Args:
        path: the YAML file.
        overrides: `dotted.key=value` strings applied before validation.

    Raises:
        RecipeError: one-line message naming the file, the field and what was expected.
    """
    path = Path(path)
    data = apply_overrides(read_yaml(path), overrides or [])
    try:
        return Recipe(**data)
    except ValidationError as err:
        raise RecipeError(format_validation_error(str(path), err)) from None
