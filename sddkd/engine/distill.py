"""A distillation step: (student, teacher, batch, epoch) -> named loss terms.

Models know nothing of KD and losses know nothing of configs; this module joins them for the run's method, which
it looks up in the method registry (`sddkd.methods`). Every method
goes through the same path: the student and the teacher produce region logits `[B, K, N]` (N = 1 for plain KD, DKD
and vanilla, where region 0 is simply the global logits), and the method picks the loss. `kd_lskd` is therefore
literally `sdd_kd_lskd` at M = (1,).
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sddkd.errors import UserError
from sddkd.methods import distill_weight, method_of
from sddkd.models import ImageClassifier, region_logits
from sddkd.scales import Scales

__all__ = ["LossFn", "RegionModel", "SERVED_VIEWS", "distill_weight", "make_loss_fn", "teacher_regions"]

# The views the engine can serve: the usual one, or MLKD's weak and strong (the loader's two_views mode).
SERVED_VIEWS = (("weak",), ("weak", "strong"))


class RegionModel(nn.Module):
    """A backbone whose forward returns region logits `[B, K, N]`, region 0 being the global logits.

    One module with one forward, so DDP's gradient hooks and torch.compile see the whole student. Its state dict is
    the backbone's under `backbone.`; checkpoints store `backbone.state_dict()` so published keys are kept.
    """

    backbone: ImageClassifier

    def __init__(self, backbone: ImageClassifier, scales: Scales, method_parameters: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.scales = scales
        # The method's own trainable parameters (CTKD's temperature): registered here so that DDP, which wraps this
        # module, averages their gradients like the backbone's. The forward does not use them; the loss does.
        if method_parameters is not None:
            self.method_parameters = method_parameters

    def forward(self, images: Tensor, *views: Tensor) -> Tensor:
        """Region logits of `images`; given more views (MLKD's strong one), each view's logits stacked along the
        batch in order, `[V*B, K, N]`. One forward call so that DDP sees the backbone used twice in one graph
        (its gradient hooks fire once, on the summed gradient); each view is its own backbone pass, so its
        BatchNorm statistics are its own, as the official code's two student calls."""
        regions = [
            region_logits(self.backbone, self.backbone.forward_features(x), self.scales) for x in (images, *views)
        ]
        return regions[0] if len(regions) == 1 else torch.cat(regions)


class LossFn:
    """`terms(student_regions, teacher_regions, labels, inputs) -> {"ce": ..., "kd"|"dkd"|...: ...}`, unweighted.

    Inputs are region logits `[B, K, N]` (any dtype; the losses compute in float32) and labels `[B]`. The step
    (`TrainStep.forward_loss`) multiplies the terms by `weights(epoch)` and sums them; it gets those weights and the
    method's per-epoch inputs (e.g. CTKD's gradient reversal) as one tensor, `epoch_vector(epoch)`, so a compiled
    step never depends on the epoch.

    `parameters`: the method's own trainable parameters (CTKD's temperature) or None. The engine puts them inside
    the student's module (so DDP averages their gradients), in the optimizer and in the checkpoint.
    """

    def __init__(self, method: Any):
        self.method = method
        self.impl = method_of(method.name)
        if self.impl.views not in SERVED_VIEWS:
            raise UserError(
                f"method {method.name} needs the views {', '.join(self.impl.views)} of every image; this engine "
                f"serves {' or '.join('(' + ', '.join(v) + ')' for v in SERVED_VIEWS)}"
            )
        self.views: tuple[str, ...] = self.impl.views
        self.names: tuple[str, ...] = ("ce", *self.impl.terms)
        self.input_names: tuple[str, ...] = tuple(self.impl.epoch_inputs(method, 1)) if self.impl.distills else ()
        self.parameters: nn.Module | None = self.impl.make_parameters(method)

    def weights(self, epoch: int) -> dict[str, float]:
        """The multiplier of each term in the 1-based `epoch` (the distillation term ramps up over the warm-up)."""
        if not self.impl.distills:
            return {"ce": self.method.ce_weight}
        return {"ce": self.method.ce_weight, **self.impl.epoch_weights(self.method, epoch)}

    def inputs(self, epoch: int) -> dict[str, float]:
        """The method's per-epoch inputs besides the weights, in the order of `input_names`."""
        return self.impl.epoch_inputs(self.method, epoch) if self.impl.distills else {}

    def epoch_vector(self, epoch: int) -> list[float]:
        """`weights` in the order of `names`, then `inputs` in the order of `input_names`: the step's per-epoch
        tensor."""
        weights, inputs = self.weights(epoch), self.inputs(epoch)
        return [weights[n] for n in self.names] + [inputs[n] for n in self.input_names]

    def terms(
        self, student: Tensor, teacher: Tensor | None, labels: Tensor, inputs: Tensor | None = None
    ) -> dict[str, Tensor]:
        """The unweighted terms, in the order of `names`: float32 scalars. `inputs`: the `input_names` values as a
        tensor (from `epoch_vector`); required when the method has any.

        A method of several `views` gets every view's rows stacked along the batch, in `views` order ([V*B, K, N]
        for labels [B]); its CE is the sum of each view's CE (MLKD: CE_weak + CE_strong)."""
        ce = sum(F.cross_entropy(view[:, :, 0].float(), labels) for view in student.chunk(len(self.views)))
        assert isinstance(ce, Tensor)
        if not self.impl.distills:
            return {"ce": ce}
        assert teacher is not None, "distillation needs teacher region logits"
        named: dict[str, Tensor] = {}
        if self.input_names:
            assert inputs is not None, f"{self.method.name} needs its per-epoch inputs {self.input_names}"
            named = {name: inputs[i] for i, name in enumerate(self.input_names)}
        distilled = self.impl.loss_terms(self.method, student, teacher, labels, self.parameters, named)
        return {"ce": ce, **{name: distilled[name] for name in self.impl.terms}}

    def epoch_metrics(self) -> dict[str, float]:
        """The method's numbers for this epoch's metrics row (e.g. CTKD's temperature): read once per epoch."""
        return self.impl.epoch_metrics(self.method, self.parameters) if self.impl.distills else {}


def make_loss_fn(method: Any, device: torch.device | str | None = None) -> LossFn:
    """The loss of `method` (see `LossFn`), its own parameters (if any) on `device`."""
    loss_fn = LossFn(method)
    if loss_fn.parameters is not None and device is not None:
        loss_fn.parameters.to(device)
    return loss_fn


def teacher_regions(teacher: nn.Module, images: Tensor, scales: Scales) -> Tensor:
    """The frozen teacher's region logits `[B, K, N]`, computed without autograd bookkeeping.

    `no_grad`, not `inference_mode`: this runs inside the compiled step, and torch 2.11's AOTAutograd fails on
    inference tensors there ("weakref to UntypedStorage" while tracing); under no_grad the numbers are the same."""
    network = cast(ImageClassifier, teacher)  # a registered model, possibly BN-folded (sddkd.engine.step)
    with torch.no_grad():
        return region_logits(network, network.forward_features(images), scales)
