"""The typed run configuration: validated once at the edge, then passed down as plain typed values.

No torch import here: the CLI, suite expansion and config validation must start fast.

A run is (data, student, optional teacher, method, optimisation schedule, seed) plus engine settings that change
how it runs but not what it computes (device, AMP, compile, progress). The method is a discriminated union on its
`name`, built from the method registry (`sddkd.methods`), so a DKD knob cannot appear in a KD recipe.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, Union

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

# The preset-file functions are part of `sddkd.config`'s interface too (suite, config_tools and tests use them).
from sddkd.config.presets import (  # noqa: F401
    apply_override,
    list_presets,
    load_yaml,
    presets_root,
    resolve_preset,
    shipped_preset_name,
    swap_to_synthetic,
    yaml_problem,
)
from sddkd.datasets import DatasetName, DatasetSpec, SyntheticConfig, dataset_spec, synthetic_spec
from sddkd.errors import ConfigError
from sddkd.locations import default_data_root
from sddkd.methods import DistillConfig, StrictModel, config_class_by_name, config_classes, method_names
from sddkd.scales import Scales, parse_scales


class DataConfig(StrictModel):
    name: DatasetName
    # where `sddkd prepare-data` put the files ($SDDKD_DATA, else `data`); unused by synthetic
    root: str = Field(default_factory=default_data_root)
    synthetic: SyntheticConfig | None = None  # only for name == "synthetic"
    num_workers: int = Field(4, ge=0)  # decoding workers for ImageNet; array datasets live on the device

    @model_validator(mode="after")
    def _synthetic_options_only_for_synthetic(self) -> DataConfig:
        if self.name == "synthetic" and self.synthetic is None:
            return self.model_copy(update={"synthetic": SyntheticConfig()})
        if self.name != "synthetic" and self.synthetic is not None:
            raise ValueError(f"data.synthetic options apply only to the synthetic dataset, not {self.name}")
        return self

    @property
    def spec(self) -> DatasetSpec:
        """Classes, geometry, augmentation and what applies to this dataset (`sddkd.datasets`)."""
        return synthetic_spec(self.synthetic) if self.synthetic is not None else dataset_spec(self.name)

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes


class TeacherConfig(StrictModel):
    arch: str
    # A checkpoint file in the published format; None looks the teacher up in the store (`sddkd fetch-teachers`).
    checkpoint: str | None = None
    # The exact teacher-logit cache (sddkd.engine.teacher_cache): `auto` uses a valid cache when one exists and builds
    # one when the run alone does at least as many teacher passes as the build costs; `on` always builds or uses one;
    # `off` runs the teacher live. It changes how, not what, a run computes, so the config hash leaves it out.
    cache: Literal["auto", "on", "off"] = "auto"

    @field_validator("cache", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: Any) -> Any:
        return {False: "off", True: "on"}.get(value, value) if isinstance(value, bool) else value


# The method configs come from the registry (`sddkd.methods`): one class per base method, its `name` one of the
# base method's variants, so a DKD knob cannot appear in a KD recipe.
METHOD_NAMES = method_names()
if TYPE_CHECKING:  # the static view: a method config is vanilla's or a distillation one (narrow with isinstance)
    from sddkd.methods.ctkd import CTKDConfig as CTKDMethod
    from sddkd.methods.dkd import DKDConfig as DKDMethod
    from sddkd.methods.kd import KDConfig as KDMethod
    from sddkd.methods.mlkd import MLKDConfig as MLKDMethod
    from sddkd.methods.nkd import NKDConfig as NKDMethod
    from sddkd.methods.vanilla import VanillaConfig as VanillaMethod

    MethodConfig: TypeAlias = VanillaMethod | DistillConfig
else:
    _CLASSES = config_classes()
    VanillaMethod, KDMethod, DKDMethod = _CLASSES["vanilla"], _CLASSES["kd"], _CLASSES["dkd"]
    NKDMethod, CTKDMethod, MLKDMethod = _CLASSES["nkd"], _CLASSES["ctkd"], _CLASSES["mlkd"]
    MethodConfig = Annotated[Union[tuple(_CLASSES.values())], Field(discriminator="name")]  # noqa: UP007


class OptimConfig(StrictModel):
    """SGD with a step learning-rate schedule, applied per epoch."""

    lr: float = Field(gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    nesterov: bool = False
    batch_size: int = Field(64, ge=1)  # the global batch: split across ranks under torchrun
    epochs: int = Field(240, ge=1)
    lr_decay_epochs: tuple[int, ...] = (150, 180, 210)  # 1-based epochs at whose start the LR is multiplied
    lr_decay_rate: float = Field(0.1, gt=0)
    grad_clip: float | None = Field(None, gt=0)  # max global grad norm; None = no clipping
    max_steps: int | None = Field(None, ge=1)  # stop after this many optimizer steps (smoke tests, benchmarks)


class EngineConfig(StrictModel):
    """How a run executes; none of this changes the recipe, so it is left out of the config hash."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # auto: bf16 autocast where the device computes bf16 natively (CUDA sm80+, AVX512-BF16/AMX CPUs), else fp32;
    # bf16 forces it, off keeps fp32. Losses are float32 either way; result.json records what ran.
    amp: Literal["auto", "bf16", "off"] = "auto"
    channels_last: bool | None = None  # None: on (NHWC suits cuDNN and oneDNN)
    # auto: compiled (with CUDA graphs) on CUDA, eager on the CPU; true/false force it. If compiling fails the run
    # continues eagerly with one warning, and result.json's `execution.compile` says which ran.
    compile: bool | Literal["auto"] = "auto"
    nonfinite: Literal["fail", "skip"] = "fail"  # a step whose loss is NaN/inf: stop the run, or skip its update
    # under "skip": the run fails once an epoch skipped more than this fraction of its steps (a diverged run or a
    # broken input would otherwise "finish" at chance)
    nonfinite_skip_limit: float = Field(0.1, ge=0.0, le=1.0)
    eval_every: int = Field(1, ge=1)  # epochs between evaluations (the last epoch is always evaluated)
    progress: bool = True
    tensorboard: bool = False
    wandb: bool = False  # Weights & Biases: config and per-epoch metrics (extra `wandb`; WANDB_MODE=offline works)
    wandb_project: str = "sddkd"

    @field_validator("amp", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: Any) -> Any:
        # YAML reads `amp: off` as False and `amp: on` as True.
        return {False: "off", True: "bf16"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda", "mps") or (value.startswith("cuda:") and value[5:].isdigit()):
            return value
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, not {value!r}")


class RunConfig(StrictModel):
    """One fully resolved training run."""

    description: str = ""  # what the preset reproduces
    # The shipped preset this recipe derives from: run names list what differs from it (`sddkd.rundir.naming`).
    preset: str | None = None
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._,=+-]*$")  # the run directory; None: derived
    data: DataConfig
    student: str
    teacher: TeacherConfig | None = None
    method: MethodConfig
    optim: OptimConfig
    seed: int = 0
    engine: EngineConfig = EngineConfig()

    @model_validator(mode="after")
    def _teacher_matches_method(self) -> RunConfig:
        if self.method.name == "vanilla" and self.teacher is not None:
            raise ValueError("vanilla training takes no teacher; remove the teacher section or pick a KD method")
        if self.method.name != "vanilla" and self.teacher is None:
            raise ValueError(f"method {self.method.name} needs a teacher: add `teacher: {{arch: NAME}}`")
        return self

    @model_validator(mode="after")
    def _dataset_serves_the_methods_views(self) -> RunConfig:
        from sddkd.methods import method_of

        problem = self.data.spec.two_views_problem if "strong" in method_of(self.method.name).views else None  # MLKD
        if problem is not None:
            raise ValueError(problem)
        return self

    @property
    def scales(self) -> Scales:
        return self.method.scales if isinstance(self.method, DistillConfig) else (1,)


# What a run's identity leaves out: how and where it runs, and what it is called.
NOT_RECIPE: dict[str, Any] = {
    "engine": True, "description": True, "preset": True, "name": True, "data": {"root", "num_workers"},
}  # fmt: skip


def config_hash(cfg: RunConfig) -> str:
    """12 hex digits identifying the recipe: what is computed, not where or how fast.

    Left out: engine settings, the data root, the teacher checkpoint path (its checksum is recorded instead) and
    the teacher-logit cache setting.
    """
    recipe = cfg.model_dump(mode="json", exclude=NOT_RECIPE)
    if recipe.get("teacher"):
        recipe["teacher"].pop("checkpoint", None)
        recipe["teacher"].pop("cache", None)
    text = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def build_config(raw: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate a raw dict; a failure becomes one ConfigError line naming the key and what is allowed."""
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None


def load_config(
    preset: str,
    *,
    overrides: Sequence[str] = (),
    scales: Scales | str | None = None,
    dataset: str | None = None,
    name: str | None = None,
) -> RunConfig:
    """Preset → raw dict → CLI shortcuts and `--set` overrides → validated RunConfig.

    `scales` (`--M`) comes parsed from the command line and the suite planner; text (the Python API) is parsed here,
    once, and never turned back into text.

    A shipped preset records its name in `preset`, so the run name can say what the overrides changed.
    """
    path = resolve_preset(preset)
    raw = load_yaml(path)
    shipped = shipped_preset_name(path)
    if shipped is not None and "preset" not in raw:
        raw["preset"] = shipped
    if name is not None:
        raw["name"] = name
    if dataset == "synthetic":
        swap_to_synthetic(raw)
    elif dataset is not None and dataset != raw.get("data", {}).get("name"):
        raise ConfigError(
            f"--dataset {dataset} does not fit preset {preset} (dataset {raw.get('data', {}).get('name')}); "
            "pick a preset of that dataset, or use --dataset synthetic"
        )
    if scales is not None:
        if raw.get("method", {}).get("name") == "vanilla":
            raise ConfigError("--M applies to distillation methods; vanilla training has no scales")
        try:
            parsed = parse_scales(scales) if isinstance(scales, str) else scales
        except ValueError as exc:
            raise ConfigError(f"--M: {exc}") from None
        raw.setdefault("method", {})["scales"] = parsed
    for assignment in overrides:
        apply_override(raw, assignment)
    return build_config(raw, source=str(path.name if path.is_absolute() else path))


def _describe(exc: ValidationError) -> str:
    """The first validation error as one sentence, listing the allowed keys for a misspelled one."""
    return describe_error(exc.errors()[0])


def describe_error(error: Any) -> str:
    """One pydantic error (an item of `ValidationError.errors()`) as one sentence."""
    loc = [str(p) for p in error["loc"]]
    where = ".".join(p for p in loc if p not in _METHOD_CLASSES) or "config"  # drop the union tag
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        return f"unknown key {where!r}" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
    if error["type"] == "union_tag_invalid":
        return f"unknown method {error['input'].get('name')!r}; choose one of {', '.join(METHOD_NAMES)}"
    if error["type"] == "missing":
        return f"missing key {where!r}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if loc else message


def _allowed_keys(loc: list[str]) -> list[str]:
    """Field names of the model at a location like ['method', 'sdd_kd_lskd'] or ['optim']."""
    model: type[BaseModel] = RunConfig
    for part in loc:
        if part in _METHOD_CLASSES:
            model = _METHOD_CLASSES[part]
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        annotation = field.annotation
        candidates = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)]
        nested = [a for a in candidates if issubclass(a, BaseModel)]
        if not nested:
            return []
        model = nested[0]
    return sorted(model.model_fields)


_METHOD_CLASSES: dict[str, type[BaseModel]] = config_class_by_name()
