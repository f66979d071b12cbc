"""The engine's optimizer step and the speed-ups that leave the recipe unchanged.

- `TrainStep`: one training step (student and teacher forward, loss, backward, non-finite policy, clipping, SGD),
  with no host synchronisation. With `compile=True` the forward and loss run through `torch.compile` (CUDA graphs
  on CUDA); a batch of another size (the last partial batch of an epoch) runs the same code eagerly, so the
  compiled graph keeps static shapes and no sample is dropped.
- `fold_batchnorm`: an eval-only copy of a frozen network whose BatchNorms are folded into the convolutions that
  feed them (the teacher does no BatchNorm work at all).
- `make_optimizer`: SGD, fused into one kernel per step on CUDA.
"""

from __future__ import annotations

import copy
import sys
import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from sddkd.config import OptimConfig
from sddkd.engine.distill import LossFn, teacher_regions
from sddkd.engine.distributed import DistContext
from sddkd.engine.placement import Placement
from sddkd.models.base import ImageClassifier
from sddkd.scales import Scales

# ---------------------------------------------------------------------------------------------------------------
# The training step


def resolve_compile(setting: bool | Literal["auto"], device: torch.device) -> bool:
    """`engine.compile`: auto compiles on CUDA, where CUDA graphs remove the launch overhead that bounds a small
    CIFAR step (about 420 kernel launches at batch 64); on a CPU compiling costs minutes and gains little."""
    return device.type == "cuda" if setting == "auto" else bool(setting)


def cast_for_autocast(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of a frozen network whose convolution and linear weights are stored in `dtype` already.

    Under autocast these layers cast their weights to `dtype` on every call; a frozen teacher's weights need no
    gradient, so autocast does not cache the cast and pays it every step (about 70 of the teacher's ~160 ops).
    Casting once gives the same numbers: autocast rounds the same float32 values to the same `dtype`. Every other
    parameter (e.g. a BatchNorm that could not be folded) keeps its dtype, as autocast would. Run the copy inside
    the same autocast region; `model` is left untouched (the engine evaluates it in float32).
    """
    cast = copy.deepcopy(model)
    for module in cast.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            module.to(dtype)
    return cast.eval().requires_grad_(False)


# Compiled steps during which a failure still falls back to eager: the first compiles the forward (and, inside
# `backward()`, the backward); CUDA graphs (reduce-overhead) warm up on the first call, record on the second and
# replay from the third, so the third is the first that runs the recorded graphs.
COMPILE_TRIAL_STEPS = 3


def _stderr_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


class TrainStep:
    """`step(images, labels, weights[, cached_teacher][, strong=]) -> (terms [T], finite [], correct [])`, all on the
    device.

    terms: the weighted loss terms in the order of `loss_fn.names` (float32, detached); finite: whether their sum
    was finite; correct: how many global student logits hit the label. `weights` is `term_weights(epoch)`
    (the term weights, then the method's per-epoch inputs).
    The caller accumulates these tensors and reads them back once per epoch.
    `strong`: the batch's strong view, for a method of two views (MLKD): the student and the teacher run on both,
    the cached teacher logits (if any) being the weak view's; the strong view's teacher always runs live.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        loss_fn: LossFn,
        optimizer: torch.optim.Optimizer,
        placement: Placement,
        *,
        scales: Scales,
        batch_size: int,
        nonfinite: str = "fail",
        grad_clip: float | None = None,
        compile: bool = False,
        dist: DistContext | None = None,
        warn: Callable[[str], None] = _stderr_warning,
    ) -> None:
        if teacher is not None and placement.amp_dtype is not None:
            teacher = cast_for_autocast(teacher, placement.amp_dtype)
        self.student, self.teacher, self.loss_fn, self.optimizer = student, teacher, loss_fn, optimizer
        self.placement, self.scales, self.batch_size = placement, scales, batch_size
        self.skip_nonfinite, self.grad_clip = nonfinite == "skip", grad_clip
        self.params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
        self.on_cuda = placement.device.type == "cuda"
        self.dist = dist or DistContext()
        self.warn = warn
        self.compiled: Callable[..., tuple[Tensor, Tensor]] | None = None
        self.compiled_steps = 0  # compiled steps that finished their backward
        self.mode = "eager"  # what ran: eager | inductor | cudagraphs (result.json's execution.compile)
        self.compile_error: str | None = None
        self.compile_cache: str | None = None  # the persistent compile-cache folder in use (set by the loop)
        if compile:
            # CUDA graphs remove the per-kernel launch cost that dominates small CIFAR nets at batch 64.
            mode = "reduce-overhead" if self.on_cuda else None
            self.compiled = torch.compile(self.forward_loss, mode=mode, dynamic=False)
            self.mode = "cudagraphs" if self.on_cuda else "inductor"

    def execution(self) -> dict[str, Any]:
        """What the run record says about the step: how it ran and, after a fallback, why it is eager."""
        described: dict[str, Any] = {"compile": self.mode}
        if self.compile_error:
            described["compile_error"] = self.compile_error
        if self.compile_cache and self.mode != "eager":
            described["compile_cache"] = self.compile_cache
        return described

    def _fall_back(self, exc: BaseException) -> None:
        """Compiling failed (a backend bug, a missing compiler, an unsupported op, a Triton or CUDA-graph recording
        error): the run is still right eagerly, only slower; say so once and record it."""
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        self.compiled, self.mode, self.compile_error = None, "eager", f"{type(exc).__name__}: {first_line}"
        self.warn(f"torch.compile failed ({self.compile_error}); training continues eagerly")

    def _run_compiled(
        self, images: Tensor, labels: Tensor, weights: Tensor, cached_teacher: Tensor | None, strong: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        assert self.compiled is not None
        if self.on_cuda:
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's graph outputs are consumed
        return self.compiled(images, labels, weights, cached_teacher, strong)

    def term_weights(self, epoch: int) -> Tensor:
        """The loss weights of `epoch`, then the method's per-epoch inputs (`loss_fn.input_names`, e.g. CTKD's
        gradient reversal), as one float32 tensor [T + I] on the device (one copy per epoch). A tensor, not
        numbers, so a compiled step is traced once and never recompiled for another epoch."""
        return torch.tensor(self.loss_fn.epoch_vector(epoch), dtype=torch.float32, device=self.placement.device)

    def forward_loss(
        self, images: Tensor, labels: Tensor, weights: Tensor, cached_teacher: Tensor | None = None,
        strong: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        """(weighted terms [T] float32, correct []): everything up to the backward pass.

        cached_teacher: the batch's teacher region logits [B, K, N] from the teacher-logit cache; then the teacher
        does not run on `images`. strong: the strong view [B, ...] of a two-view method; the region logits of both
        views reach the loss stacked along the batch, weak first ([2B, K, N])."""
        images = self.placement.images(images)
        views = () if strong is None else (self.placement.images(strong),)
        with self.placement.autocast():
            student_regions = self.student(images, *views)  # [B, K, N], or [2B, K, N] with a strong view
            teacher_out = cached_teacher
            if teacher_out is None and self.teacher is not None:
                teacher_out = teacher_regions(self.teacher, images, self.scales)
            if teacher_out is not None and views:
                # The cache holds the weak view only: the strong view's teacher logits are computed every step.
                assert self.teacher is not None, "a two-view step needs the live teacher for the strong view"
                teacher_out = torch.cat([teacher_out, teacher_regions(self.teacher, views[0], self.scales)])
            count = len(self.loss_fn.names)
            terms = self.loss_fn.terms(student_regions, teacher_out, labels, weights[count:])
        weighted = torch.stack([terms[n] for n in self.loss_fn.names]) * weights[:count]  # [T]
        correct = (student_regions[: labels.shape[0], :, 0].argmax(dim=1) == labels).sum()  # the weak view's
        return weighted, correct

    def __call__(
        self, images: Tensor, labels: Tensor, weights: Tensor, cached_teacher: Tensor | None = None,
        strong: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
        compiled = self.compiled is not None and images.shape[0] == self.batch_size
        if compiled and self.compiled_steps < COMPILE_TRIAL_STEPS:
            # Compiling is not over after the first forward: the backward compiles lazily inside `backward()`, and
            # CUDA graphs warm up, then record, on later calls. A failure in any of them during the first compiled
            # steps falls back to eager; the optimizer has not stepped yet, so the step is redone eagerly from the
            # same weights. Later failures are the step's own and raise.
            try:
                weighted, finite, correct = self._forward_backward(images, labels, weights, cached_teacher, strong,
                                                                   True)  # fmt: skip
            except Exception as exc:
                self._fall_back(exc)
                weighted, finite, correct = self._forward_backward(images, labels, weights, cached_teacher, strong,
                                                                   False)  # fmt: skip
            else:
                self.compiled_steps += 1
        else:
            weighted, finite, correct = self._forward_backward(images, labels, weights, cached_teacher, strong,
                                                               compiled)  # fmt: skip
        self.optimizer.step()
        return weighted, finite, correct

    def _forward_backward(
        self, images: Tensor, labels: Tensor, weights: Tensor, cached_teacher: Tensor | None, strong: Tensor | None,
        compiled: bool,
    ) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
        """Everything of a step but the optimizer's update: the gradients are in the parameters' `.grad`."""
        # Drop the last step's gradients (or a failed try's) before the forward, so no output of a previous
        # CUDA-graph replay is alive.
        self.optimizer.zero_grad(set_to_none=True)
        if compiled:
            weighted, correct = self._run_compiled(images, labels, weights, cached_teacher, strong)
        else:
            weighted, correct = self.forward_loss(images, labels, weights, cached_teacher, strong)
        total = weighted.sum()
        finite = torch.isfinite(total)
        if self.skip_nonfinite and self.dist.world_size > 1:
            # DDP averages the gradients, so one rank's non-finite loss spoils every rank's step: all skip it.
            finite = self.dist.all_reduce_sum((~finite).float()) == 0
        total.backward()
        if self.skip_nonfinite:
            # Drop the whole gradient of a non-finite step, decided on the device (no host sync).
            for p in self.params:
                if p.grad is not None:
                    p.grad.masked_fill_(~finite, 0.0)
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip, foreach=self.on_cuda or None)
        return weighted.detach(), finite, correct


def make_optimizer(
    model: nn.Module, optim: OptimConfig, device: torch.device, method_parameters: nn.Module | None = None
) -> torch.optim.SGD:
    """SGD of the recipe; on CUDA the fused kernel (one launch for all parameters, the same update rule).

    `method_parameters` (CTKD's temperature) join as a second group with the same hyper-parameters, weight decay
    included, as the official code trains them; the loop's per-epoch learning rate reaches every group."""
    groups: list[dict[str, Any]] = [{"params": list(model.parameters())}]
    if method_parameters is not None:
        groups.append({"params": list(method_parameters.parameters())})
    return torch.optim.SGD(
        groups, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay,
        nesterov=optim.nesterov, fused=True if device.type == "cuda" else None,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# BatchNorm folding for frozen networks


class FoldedModel(ImageClassifier):
    """An eval-only network: `forward_features` is a traced graph with BatchNorm folded into convolutions."""

    features: fx.GraphModule
    classifier: nn.Module

    def __init__(self, features: fx.GraphModule, classifier: nn.Module):
        super().__init__()
        self.features = features
        self.classifier = classifier
        super().train(False)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def train(self, mode: bool = True) -> FoldedModel:
        if mode:
            raise RuntimeError("a network with folded BatchNorm is for inference only; train the original network")
        return super().train(False)


class _Features(nn.Module):
    """Traces `model.forward_features` as a module's forward."""

    model: Any

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.forward_features(x)


def prepare_teacher(teacher: nn.Module, placement: Placement) -> nn.Module:
    """The frozen teacher on the device: eval mode, no gradients, BatchNorm folded into its convolutions."""
    teacher = fold_batchnorm(teacher.eval()).to(placement.device)
    if placement.channels_last:
        teacher = teacher.to(memory_format=torch.channels_last)
    return teacher.eval().requires_grad_(False)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-only copy of `model` in which every BatchNorm whose only input is a convolution used nowhere else is
    folded into that convolution (y = conv'(x) with conv' = BN o conv; exact up to float rounding).

    Other BatchNorms (e.g. the pre-activation ones of WRN, fed by a residual sum) stay as they are. `model` is left
    untouched. Works for networks built on `ImageClassifier` (every registered model) that keep its head; any other
    network, or one that cannot be traced, comes back unchanged with a warning.
    """
    cls = type(model)
    if not (
        isinstance(model, ImageClassifier)
        and cls.forward is ImageClassifier.forward
        and getattr(cls, "forward_head", None) is ImageClassifier.forward_head
    ):
        warnings.warn(f"{cls.__name__} has its own head; its BatchNorm is not folded", stacklevel=2)
        return model
    frozen = copy.deepcopy(model).eval()
    try:
        graph = fx.symbolic_trace(_Features(frozen))
    except Exception as exc:  # tracing limits (data-dependent control flow) only cost speed
        warnings.warn(f"{cls.__name__} cannot be traced ({exc}); its BatchNorm is not folded", stacklevel=2)
        return model
    _fold_conv_bn(graph)
    return FoldedModel(graph, frozen.get_classifier())


def _fold_conv_bn(graph_module: fx.GraphModule) -> None:
    modules = dict(graph_module.named_modules())
    calls: dict[Any, int] = {}  # call_module target -> number of call sites
    for node in graph_module.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    for node in list(graph_module.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        source = node.args[0]
        bn = modules[node.target]
        foldable = (
            isinstance(source, fx.Node)
            and source.op == "call_module"
            and type(modules[source.target]) is nn.Conv2d
            and len(source.users) == 1  # the raw convolution output is needed nowhere else
            and calls[source.target] == 1  # a convolution applied twice cannot take one BatchNorm's scale
            and bn.running_mean is not None
        )
        if not foldable:
            continue
        parent, _, name = str(source.target).rpartition(".")
        setattr(graph_module.get_submodule(parent), name, fuse_conv_bn_eval(modules[source.target], bn))
        node.replace_all_uses_with(source)
        graph_module.graph.erase_node(node)
    graph_module.graph.lint()
    graph_module.delete_all_unused_submodules()
    graph_module.recompile()
