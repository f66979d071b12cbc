"""What every method shares: the config base, the variant grammar and the interface a method module implements.

No torch import at module level: configs are validated (and `sddkd --help` starts) without torch. The loss code of
a method imports `sddkd.losses` inside its functions, which only the engine calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sddkd.scales import Scales, format_scales, parse_scales

if TYPE_CHECKING:
    from torch import Tensor, nn

SDD_PREFIX, LSKD_SUFFIX = "sdd_", "_lskd"


class StrictModel(BaseModel):
    """Every config section refuses unknown keys, so a typo is an error that names the key."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def variant_names(base: str) -> tuple[str, ...]:
    """The four names of a base method: `X`, `X_lskd`, `sdd_X`, `sdd_X_lskd` (SDD rows x LSKD z-score)."""
    return (base, base + LSKD_SUFFIX, SDD_PREFIX + base, SDD_PREFIX + base + LSKD_SUFFIX)


def parse_name(name: str) -> tuple[str, bool, bool]:
    """`sdd_kd_lskd` -> ("kd", sdd=True, lskd=True): the one place the variant grammar is read."""
    sdd, lskd = name.startswith(SDD_PREFIX), name.endswith(LSKD_SUFFIX)
    base = name.removeprefix(SDD_PREFIX) if sdd else name
    return (base.removesuffix(LSKD_SUFFIX) if lskd else base), sdd, lskd


def distill_weight(warmup_epochs: int, epoch: int) -> float:
    """w(e) = min(e / warmup, 1) for the 1-based epoch e; 1 without warm-up (METHOD.md)."""
    return min(epoch / warmup_epochs, 1.0) if warmup_epochs > 0 else 1.0


class DistillConfig(StrictModel):
    """The fields every distillation method has. `name` is narrowed to the method's four variants by the registry."""

    name: str
    ce_weight: float = Field(ge=0)
    kd_weight: float = Field(1.0, ge=0)
    warmup: int = Field(0, ge=0)  # epochs of linear ramp of the distillation weight; 0 = none
    complementary_weight: float = Field(2.0, gt=0)  # SDD's beta_c for complementary region rows
    scales: Scales = (1,)  # SDD's M

    _validate_scales = field_validator("scales", mode="before")(parse_scales)

    @property
    def base(self) -> str:
        return parse_name(self.name)[0]

    @property
    def multi_scale(self) -> bool:
        """`sdd_`: region rows with SDD weighting."""
        return parse_name(self.name)[1]

    @property
    def standardize(self) -> bool:
        """`_lskd`: z-score every logit row that enters a distillation term (never the CE)."""
        return parse_name(self.name)[2]

    @model_validator(mode="after")
    def _single_scale_methods_use_global_logits(self) -> DistillConfig:
        if not self.multi_scale and self.scales != (1,):
            raise ValueError(
                f"method {self.name} distils the global logits only, so M must be 1 "
                f"(got {format_scales(self.scales)}); use sdd_{self.name} for multi-scale distillation"
            )
        return self


class Method:
    """A base method: its config, its loss terms and everything the engine, `analyze` and reports ask of it.

    A module of `sddkd.methods` defines one subclass and an instance named `METHOD`; the registry finds it. Loss code
    receives region logits `[B, K, N]` (N = 1 unless `sdd_`), so the SDD losses at N = 1 serve the plain variants.
    """

    base: ClassVar[str]  # `kd`: the variants are generated from it (`variant_names`)
    label: ClassVar[str]  # how reports and papers write it: `KD`
    order: ClassVar[int]  # place in reports (lower first)
    paper: ClassVar[str]  # where it comes from (the README's method table)
    config: ClassVar[type[BaseModel]]  # its typed config, without the `name` literal (the registry adds it)
    distills: ClassVar[bool] = True  # False: plain cross-entropy (vanilla), no variants, no teacher
    terms: ClassVar[tuple[str, ...]] = ("kd",)  # its distillation terms, as metrics.jsonl names them
    views: ClassVar[tuple[str, ...]] = ("weak",)  # the augmented views of each image a step needs
    # Valid values of its required fields besides ce_weight: the registry's tests train every variant with them.
    example: ClassVar[dict[str, Any]] = {}

    def epoch_weights(self, cfg: Any, epoch: int) -> dict[str, float]:
        """The multiplier of each of `terms` in the 1-based epoch: the distillation weight, ramped over warm-up."""
        weight = distill_weight(cfg.warmup, epoch) * cfg.kd_weight
        return {term: weight for term in self.terms}

    def epoch_inputs(self, cfg: Any, epoch: int) -> dict[str, float]:
        """Per-epoch numbers the loss needs besides the weights (passed to the step as a tensor, so a compiled
        step is not recompiled each epoch). The keys must not depend on the epoch."""
        return {}

    def make_parameters(self, cfg: Any) -> nn.Module | None:
        """Trainable parameters of the method itself, trained by the student's SGD; None: it has none."""
        return None

    def loss_terms(
        self, cfg: Any, student: Tensor, teacher: Tensor, labels: Tensor, params: nn.Module | None,
        inputs: Mapping[str, Tensor],
    ) -> dict[str, Tensor]:  # fmt: skip
        """The unweighted distillation terms (float32 scalars, one per `terms`)."""
        raise NotImplementedError

    def epoch_metrics(self, cfg: Any, params: nn.Module | None) -> dict[str, float]:
        """Numbers recorded with each epoch of the run's metrics (e.g. a learned temperature)."""
        return {}

    def analysis_temperature(self, cfg: Any, metrics: Mapping[str, float]) -> float:
        """The temperature `sddkd analyze` compares distributions at; `metrics`: the run's last `epoch_metrics`."""
        return float(getattr(cfg, "temperature", 1.0))
