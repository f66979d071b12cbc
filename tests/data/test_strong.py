"""MLKD's strong view: every op against its PIL definition, the Cutout, the draws' ranges and uniformity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from sddkd.data import strong
from sddkd.data.loader import epoch_generator
from sddkd.data.strong import CUTOUT_FILL, OPS, VALUE_RANGES, apply_op, cutout, draw_strong_plan, rand_augment


def natural_images(n: int, seed: int = 0, size: int = 32) -> torch.Tensor:
    """Smooth colour fields with fine noise and a hard-edged patch: the histograms, edges and flat regions of
    photos, so rounding, sampling and border handling all show (uniform noise would hide the sampling)."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 5, 5, generator=gen) * 255
    images = torch.nn.functional.interpolate(low, size=size, mode="bicubic", align_corners=False)
    images = images + 10 * torch.randn(n, 3, size, size, generator=gen)
    corner = torch.randint(0, size // 2, (n, 2), generator=gen)
    for i in range(n):  # test data only
        y, x = corner[i].tolist()
        images[i, :, y : y + size // 4, x : x + size // 3] = torch.rand(3, 1, 1, generator=gen) * 255
    return images.clamp(0, 255).round().to(torch.uint8)


def _to_pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(image.permute(1, 2, 0).numpy())


def _from_pil(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


# The PIL code of the reference augmentation, one function per op (METHOD.md's table).
PIL_OPS = {
    "autocontrast": lambda im, v: ImageOps.autocontrast(im),
    "brightness": lambda im, v: ImageEnhance.Brightness(im).enhance(v),
    "color": lambda im, v: ImageEnhance.Color(im).enhance(v),
    "contrast": lambda im, v: ImageEnhance.Contrast(im).enhance(v),
    "equalize": lambda im, v: ImageOps.equalize(im),
    "identity": lambda im, v: im,
    "posterize": lambda im, v: ImageOps.posterize(im, max(1, int(v))),
    "rotate": lambda im, v: im.rotate(v),
    "sharpness": lambda im, v: ImageEnhance.Sharpness(im).enhance(v),
    "shear_x": lambda im, v: im.transform(im.size, Image.AFFINE, (1, v, 0, 0, 1, 0)),
    "shear_y": lambda im, v: im.transform(im.size, Image.AFFINE, (1, 0, 0, v, 1, 0)),
    "solarize": lambda im, v: ImageOps.solarize(im, v),
    "translate_x": lambda im, v: im.transform(im.size, Image.AFFINE, (1, 0, v * im.size[0], 0, 1, 0)),
    "translate_y": lambda im, v: im.transform(im.size, Image.AFFINE, (1, 0, 0, 0, 1, v * im.size[1])),
}


def _pil_cutout(image: Image.Image, side: float, x: float, y: float) -> Image.Image:
    """The reference CutoutAbs with the centre given (it draws the centre itself)."""
    if side <= 0:
        return image
    w, h = image.size
    x0, y0 = int(max(0, x - side / 2.0)), int(max(0, y - side / 2.0))
    x1, y1 = min(w, x0 + side), min(h, y0 + side)
    image = image.copy()
    ImageDraw.Draw(image).rectangle((x0, y0, x1, y1), CUTOUT_FILL)
    return image


def test_the_op_table_is_methods():
    assert set(OPS) == set(PIL_OPS) and len(OPS) == 14
    assert VALUE_RANGES["brightness"] == (0.05, 0.95) and VALUE_RANGES["rotate"] == (-30.0, 30.0)
    assert VALUE_RANGES["posterize"] == (4.0, 8.0) and VALUE_RANGES["solarize"] == (0.0, 256.0)
    assert VALUE_RANGES["shear_x"] == VALUE_RANGES["translate_y"] == (-0.3, 0.3)


@pytest.mark.parametrize("name", OPS)
def test_each_op_matches_its_pil_definition_on_natural_images(name):
    images = natural_images(12)
    low, high = VALUE_RANGES[name]
    values = [low, low + 0.3 * (high - low), low + 0.5 * (high - low), low + 0.85 * (high - low), high]
    values += torch.empty(3).uniform_(low, high, generator=torch.Generator().manual_seed(1)).tolist()
    for value in values:
        ops = torch.full((len(images),), OPS.index(name))
        ours = apply_op(images, ops, torch.full((len(images),), value))
        theirs = torch.stack([_from_pil(PIL_OPS[name](_to_pil(image), value)) for image in images])
        diff = (ours.int() - theirs.int()).abs().float()
        assert ours.dtype == torch.uint8 and ours.shape == images.shape
        assert diff.mean() < 0.5, f"{name} at {value}: mean |diff| {diff.mean():.3f} grey levels"
        # Nearly exact: at most a stray pixel off by one (float rounding before a truncation).
        assert (diff > 1).float().mean() < 0.01, f"{name} at {value}: {(diff > 1).sum()} pixels off by > 1"


def test_ops_change_the_images_so_the_comparison_means_something():
    images = natural_images(12)
    for name in set(OPS) - {"identity"}:
        low, high = VALUE_RANGES[name]
        ops = torch.full((len(images),), OPS.index(name))
        value = torch.full((len(images),), low + 0.2 * (high - low))
        assert not torch.equal(apply_op(images, ops, value), images), name


def test_a_mixed_batch_applies_each_images_own_op():
    images = natural_images(28, seed=2)
    gen = torch.Generator().manual_seed(3)
    ops = torch.arange(28) % len(OPS)
    low = torch.tensor([VALUE_RANGES[n][0] for n in OPS])[ops]
    high = torch.tensor([VALUE_RANGES[n][1] for n in OPS])[ops]
    values = low + (high - low) * torch.rand(28, generator=gen)
    batched = apply_op(images, ops, values)
    for i in range(28):
        alone = apply_op(images[i : i + 1], ops[i : i + 1], values[i : i + 1])
        assert torch.equal(batched[i : i + 1], alone), OPS[int(ops[i])]


def test_cutout_matches_the_reference_rectangle_exactly():
    images = natural_images(10, seed=4)
    side = torch.tensor([0.0, 0.3, 1.0, 5.5, 9.99, 16.0, 16.0, 12.7, 3.2, 15.0])
    cx = torch.tensor([3.0, 31.9, 0.0, 17.3, 5.5, 0.2, 31.99, 24.6, 10.0, 16.0])
    cy = torch.tensor([9.0, 0.0, 31.5, 2.2, 30.5, 16.0, 31.99, 8.1, 10.0, 16.0])
    ours = cutout(images, side, cx, cy)
    for i in range(10):
        reference = _from_pil(_pil_cutout(_to_pil(images[i]), float(side[i]), float(cx[i]), float(cy[i])))
        assert torch.equal(ours[i], reference), (float(side[i]), float(cx[i]), float(cy[i]))
    assert torch.equal(ours[0], images[0])  # side 0: no cutout


def test_two_ops_compose_in_order_like_pil():
    images = natural_images(6, seed=5)
    pairs = [("rotate", "equalize"), ("solarize", "shear_x"), ("color", "color"), ("posterize", "autocontrast"),
             ("translate_y", "sharpness"), ("identity", "contrast")]  # fmt: skip
    ops = torch.tensor([[OPS.index(first), OPS.index(second)] for first, second in pairs])
    values = torch.tensor([[20.0, 0.0], [100.0, 0.2], [0.3, 0.6], [5.5, 0.0], [-0.25, 0.4], [0.0, 0.5]])
    ours = rand_augment(images, ops, values)
    for i in range(6):
        image = _to_pil(images[i])
        for k in range(2):
            image = PIL_OPS[OPS[int(ops[i, k])]](image, float(values[i, k]))
        diff = (ours[i].int() - _from_pil(image).int()).abs().float()
        assert diff.mean() < 0.5


def _plan(total: int = 20000, seed: int = 0, epoch: int = 0):
    return draw_strong_plan(epoch_generator(seed, epoch, "strong"), total, height=32, width=32, crop_size=32, padding=4)


def test_op_choices_are_uniform():
    """Chi-square of 2 x 20,000 op draws over 14 ops, fixed seed: p > 0.001 (critical value 34.5 at 13 df)."""
    ops = _plan().ops
    counts = torch.bincount(ops.flatten(), minlength=len(OPS)).double()
    expected = ops.numel() / len(OPS)
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 34.5, counts.tolist()
    first, second = ops[:, 0], ops[:, 1]
    assert (first == second).double().mean().item() == pytest.approx(1 / len(OPS), abs=0.01)  # with replacement


def test_values_cover_each_ops_range_uniformly():
    plan = _plan()
    for index, name in enumerate(OPS):
        low, high = VALUE_RANGES[name]
        values = plan.values[plan.ops == index].double()
        assert values.min() >= low and values.max() <= high, name
        # Uniform on [low, high): mean at the midpoint, a quarter below the first quartile.
        assert values.mean().item() == pytest.approx((low + high) / 2, abs=0.03 * (high - low)), name
        assert (values < low + (high - low) / 4).double().mean().item() == pytest.approx(0.25, abs=0.03), name
    assert plan.cutout_side.min() >= 0 and plan.cutout_side.max() < 16
    assert plan.cutout_side.double().mean().item() == pytest.approx(8.0, abs=0.2)
    assert plan.cutout_x.min() >= 0 and plan.cutout_x.max() < 32 and plan.cutout_y.max() < 32
    assert plan.top.min() == 0 and plan.top.max() == 8 and 0.45 < plan.flip.double().mean().item() < 0.55


def test_draws_are_a_pure_function_of_seed_and_epoch():
    a, b = _plan(500), _plan(500)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    for other in (_plan(500, seed=1), _plan(500, epoch=1)):
        assert not torch.equal(a.ops, other.ops) and not torch.equal(a.values, other.values)
    assert all(torch.equal(x, y) for x, y in zip(a.select(slice(3, 9)), (f[3:9] for f in a)))


def test_strong_view_module_has_no_python_loop_over_images():
    """The batch path traces as one graph (a per-image loop or a host read would break or unroll it)."""
    images = natural_images(8, seed=6)
    plan = _plan(8)
    compiled = torch.compile(strong.strong_view, backend="eager", fullgraph=True)
    assert torch.equal(compiled(images, plan), strong.strong_view(images, plan))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_strong_view_on_cuda_matches_the_cpu():
    images = natural_images(64, seed=7)
    plan = _plan(64, seed=3)
    cpu = strong.strong_view(images, plan)
    cuda = strong.strong_view(images.cuda(), plan.to("cuda")).cpu()
    diff = (cpu.int() - cuda.int()).abs().float()
    assert diff.mean() < 0.05 and (diff > 1).float().mean() < 0.001  # float rounding may move a stray pixel
