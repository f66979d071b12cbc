"""The loader's two-view mode (MLKD): opt-in, weak view unchanged, deterministic, resumable, no host reads."""

from __future__ import annotations

import contextlib

import pytest
import torch

from sddkd.data import ArrayLoader, build_loaders, crop_flip, normalize
from sddkd.data.loader import epoch_generator
from sddkd.data.strong import draw_strong_plan, strong_view
from sddkd.datasets import CIFAR100_MEAN, CIFAR100_STD
from sddkd.errors import UserError
from sddkd.losses import mlkd_loss

MEAN = torch.tensor(CIFAR100_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(CIFAR100_STD).view(1, 3, 1, 1)


def _images(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=gen) * 255
    smooth = torch.nn.functional.interpolate(low, size=32, mode="bilinear", align_corners=False)
    return (smooth + 8 * torch.randn(n, 3, 32, 32, generator=gen)).clamp(0, 255).round().to(torch.uint8)


def _loader(n=20, batch_size=6, two_views=True, **kw) -> ArrayLoader:
    options = {"mean": CIFAR100_MEAN, "std": CIFAR100_STD, "train": True, "crop_size": 32, "padding": 4, "seed": 7}
    options.update(kw)
    return ArrayLoader(_images(n), torch.arange(n), batch_size=batch_size, two_views=two_views, **options)


def _epoch(loader: ArrayLoader, epoch: int, start_step: int = 0) -> list[tuple[torch.Tensor, ...]]:
    loader.set_epoch(epoch, start_step)
    return [tuple(t.clone() for t in batch) for batch in loader]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for p, q in zip(a, b) for x, y in zip(p, q, strict=True))


def test_two_views_are_off_by_default_and_leave_the_weak_view_unchanged():
    one = _loader(two_views=False)
    assert one.two_views is False
    assert all(len(batch) == 2 for batch in _epoch(one, 3))
    two = _epoch(_loader(), 3)
    assert all(len(batch) == 3 for batch in two)
    weak_only = [(weak, labels) for weak, _, labels in two]
    assert _same(weak_only, _epoch(_loader(two_views=False), 3))  # same weak batches, same labels


def test_the_strong_view_is_its_plan_applied_to_its_own_crop():
    loader = _loader(n=12, batch_size=12)
    loader.set_epoch(1)
    ((weak, strong, labels),) = list(loader)
    index, *_ = loader.epoch_plan()
    plan = loader.strong_plan()
    crops = crop_flip(loader.images, plan.top, plan.left, plan.flip, size=32, padding=4, index=index)
    assert torch.equal(strong, normalize(strong_view(crops, plan), MEAN, STD))
    assert torch.equal(labels, index)
    assert not torch.equal(strong, weak) and strong.dtype == torch.float32 and strong.shape == weak.shape


def test_two_views_are_deterministic_and_resume_mid_epoch_bit_for_bit():
    full = _epoch(_loader(), 4)
    torch.manual_seed(99)
    torch.rand(10)  # the model's use of the global RNG must not matter
    assert _same(full, _epoch(_loader(), 4))
    for start in (1, 2, len(full) - 1):
        assert _same(_epoch(_loader(), 4, start_step=start), full[start:])
    assert not torch.equal(_epoch(_loader(), 5)[0][1], full[0][1])  # another epoch, other views
    assert not torch.equal(_epoch(_loader(seed=8), 4)[0][1], full[0][1])


def test_strong_views_do_not_depend_on_the_world_size():
    (single,) = _epoch(_loader(n=12, batch_size=12), 2)
    for rank in range(2):
        (half,) = _epoch(_loader(n=12, batch_size=6, rank=rank, world_size=2), 2)
        assert all(torch.equal(h, s[rank::2]) for h, s in zip(half, single, strict=True))


def test_strong_draws_are_pinned():
    """The first draws of seed 0, epoch 0: a change of draw order would change every resumed run's views."""
    plan = draw_strong_plan(epoch_generator(0, 0, "strong"), 6, height=32, width=32, crop_size=32, padding=4)
    assert plan.top.tolist() == [4, 0, 1, 8, 4, 2] and plan.left.tolist() == [3, 3, 8, 5, 3, 5]
    assert plan.ops.tolist() == [[3, 7], [1, 3], [13, 6], [2, 10], [11, 9], [11, 6]]
    assert plan.values[4, 0].item() == pytest.approx(254.29274, abs=1e-4)
    assert plan.cutout_side[0].item() == pytest.approx(15.845846, abs=1e-5)


def test_two_views_refuse_an_evaluation_loader():
    with pytest.raises(ValueError, match="training augmentation"):
        _loader(train=False)
    with pytest.raises(ValueError, match="only a training loader"):
        _loader(train=False, two_views=False).strong_plan()


@contextlib.contextmanager
def _no_host_reads():
    """Every Python-level way of reading a tensor's value on the host raises: on a GPU each would be a sync."""

    def refuse(name):
        def method(*args, **kwargs):
            raise AssertionError(f"Tensor.{name} read a value on the host inside the step")

        return method

    names = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__")
    saved = {name: getattr(torch.Tensor, name) for name in names}
    make_tensor = torch.tensor

    def tensor_without_device(*args, **kwargs):
        # torch.tensor(data, device=cuda) copies from pageable host memory and waits for the copy.
        if kwargs.get("device") is not None:
            raise AssertionError("torch.tensor(..., device=...) inside the step: a blocking host-to-device copy")
        return make_tensor(*args, **kwargs)

    try:
        for name in names:
            setattr(torch.Tensor, name, refuse(name))
        torch.tensor = tensor_without_device
        yield
    finally:
        torch.tensor = make_tensor
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


def test_two_view_batches_and_mlkd_loss_read_nothing_on_the_host():
    loader = _loader()
    loader.set_epoch(0)
    student = torch.nn.Linear(3 * 32 * 32, 20)  # labels are the sample indices
    with _no_host_reads():
        for weak, strong, labels in loader:
            logits = [student(view.flatten(1)) for view in (weak, strong)]
            terms = mlkd_loss(*logits, *(x.detach() * 2 for x in logits), 4.0, standardize=True)
            total = sum(terms.values()) + torch.nn.functional.cross_entropy(logits[0], labels)
    assert torch.isfinite(total)


def test_the_host_read_guard_catches_a_read_and_a_copy():
    with pytest.raises(AssertionError, match="item"), _no_host_reads():
        torch.ones(1).item()
    with pytest.raises(AssertionError, match="host-to-device"), _no_host_reads():
        torch.tensor([1, 2], device="cpu")
    assert torch.tensor([1]).item() == 1  # restored


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_two_view_batches_and_mlkd_loss_never_wait_for_the_gpu():
    """Under CUDA's sync debug mode any host synchronisation raises (as the engine step's test checks)."""
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, device="cuda")
    loader = ArrayLoader(images, torch.arange(64) % 10, batch_size=16, mean=(0.5,) * 3, std=(0.25,) * 3,
                         train=True, crop_size=32, padding=4, two_views=True)  # fmt: skip
    student = torch.nn.Linear(3 * 32 * 32, 10).cuda()
    next(iter(loader))  # warm-up: first kernel launches may synchronise
    torch.cuda.synchronize()
    sums = torch.zeros((), device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        for weak, strong, labels in loader:
            logits = [student(view.flatten(1)) for view in (weak, strong)]
            terms = mlkd_loss(*logits, *(x.detach() * 2 for x in logits), 4.0, standardize=True)
            sums += sum(terms.values()) + torch.nn.functional.cross_entropy(logits[0], labels)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(sums)


def test_build_loaders_serves_two_views_on_32_pixel_synthetic_data():
    config = {"num_classes": 3, "train_per_class": 4, "test_per_class": 2}
    train, test = build_loaders("synthetic", batch_size=4, device="cpu", seed=0, synthetic=config, two_views=True)
    train.set_epoch(0)
    weak, strong, labels = next(iter(train))
    assert weak.shape == strong.shape == (4, 3, 32, 32) and labels.shape == (4,)
    assert len(next(iter(test))) == 2  # evaluation keeps one view
    plain, _ = build_loaders("synthetic", batch_size=4, device="cpu", seed=0, synthetic=config)
    plain.set_epoch(0)
    assert torch.equal(next(iter(plain))[0], weak)


@pytest.mark.parametrize(
    "name, synthetic, words",
    [("cub200", None, "not cub200"), ("imagenet", None, "not imagenet"),
     ("synthetic", {"image_size": 224}, "not 224 px synthetic data")],
)  # fmt: skip
def test_two_views_refuse_other_datasets_before_reading_files(tmp_path, name, synthetic, words):
    with pytest.raises(UserError, match=f"CIFAR-100 and 32 px synthetic data only, {words}") as info:
        build_loaders(name, tmp_path / "absent", batch_size=4, device="cpu", seed=0, synthetic=synthetic,
                      two_views=True)  # fmt: skip
    assert "\n" not in str(info.value)
