"""The array loader: augmentation equals torchvision's, determinism per (seed, epoch), sharding."""

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from sddkd.data import ArrayLoader, crop_flip, normalize
from sddkd.datasets import CIFAR100_MEAN, CIFAR100_STD, IMAGENET_MEAN, IMAGENET_STD
from sddkd.errors import UserError


def _images(n, size, seed=0):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _loader(n=10, size=8, batch_size=4, **kw):
    """Images whose label is their index, so batches reveal which samples they hold."""
    options = {"mean": CIFAR100_MEAN, "std": CIFAR100_STD, "train": True, "crop_size": size, "padding": 2}
    options.update(kw)
    return ArrayLoader(_images(n, size), torch.arange(n), batch_size=batch_size, **options)


def _epoch(loader, epoch):
    loader.set_epoch(epoch)
    return [(x.clone(), y.clone()) for x, y in loader]


def test_cifar_crop_flip_matches_torchvision_pil_pipeline():
    images = _images(8, 32)
    gen = torch.Generator().manual_seed(1)
    top, left = torch.randint(0, 9, (8,), generator=gen), torch.randint(0, 9, (8,), generator=gen)
    top[0], left[0], top[1], left[1] = 0, 8, 8, 0  # the extreme corners
    flip = torch.tensor([True, False] * 4)
    ours = crop_flip(images, top, left, flip, size=32, padding=4)
    mean = torch.tensor(CIFAR100_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR100_STD).view(1, 3, 1, 1)
    ours_normalized = normalize(ours, mean, std)
    for i in range(8):
        # The reference pipeline on PIL: RandomCrop(32, padding=4) -> flip -> ToTensor -> Normalize.
        pil = Image.fromarray(images[i].permute(1, 2, 0).numpy())
        ref = TF.crop(TF.pad(pil, 4, fill=0), int(top[i]), int(left[i]), 32, 32)
        if flip[i]:
            ref = TF.hflip(ref)
        assert torch.equal(ours[i], TF.pil_to_tensor(ref))
        ref_normalized = TF.normalize(TF.to_tensor(ref), CIFAR100_MEAN, CIFAR100_STD)
        assert torch.equal(ours_normalized[i], ref_normalized)


def test_cub_crop_flip_and_center_crop_match_torchvision():
    images = _images(4, 256)
    top, left = torch.tensor([0, 32, 5, 17]), torch.tensor([32, 0, 31, 3])
    flip = torch.tensor([False, True, True, False])
    ours = crop_flip(images, top, left, flip, size=224)
    for i in range(4):
        ref = TF.crop(images[i], int(top[i]), int(left[i]), 224, 224)
        assert torch.equal(ours[i], TF.hflip(ref) if flip[i] else ref)
    loader = ArrayLoader(
        images,
        torch.arange(4),
        batch_size=4,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        train=False,
        crop_size=224,
    )
    (batch, labels), *_ = list(loader)
    ref = TF.normalize(TF.center_crop(images, [224, 224]).float() / 255, IMAGENET_MEAN, IMAGENET_STD)
    assert torch.allclose(batch, ref, atol=1e-6) and labels.tolist() == [0, 1, 2, 3]


def test_crop_flip_gathers_rows_by_index_and_keeps_dtype():
    source = torch.randn(5, 3, 6, 6)
    index = torch.tensor([4, 0, 4])
    zeros = torch.zeros(3, dtype=torch.int64)
    out = crop_flip(source, zeros + 1, zeros + 1, torch.tensor([False, True, False]), size=6, padding=1, index=index)
    assert out.dtype == source.dtype and out.shape == (3, 3, 6, 6)
    assert torch.equal(out[0], source[4]) and torch.equal(out[1], source[0].flip(-1))


def test_batches_are_a_pure_function_of_seed_and_epoch():
    first = _epoch(_loader(seed=3), 5)
    torch.manual_seed(123)
    torch.rand(100)  # the model's use of the global RNG must not matter
    second = _epoch(_loader(seed=3), 5)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second, strict=True))
    other_epoch = _epoch(_loader(seed=3), 6)
    other_seed = _epoch(_loader(seed=4), 5)
    for other in (other_epoch, other_seed):
        assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other, strict=True))


def test_training_crops_reach_into_the_zero_padding():
    loader = _loader(n=200, size=4, batch_size=200, padding=4)
    loader.set_epoch(0)
    ((images, _),) = list(loader)
    # With padding 4 on 4-px images many crops are all padding: every value equals -mean / std.
    blank = (images == images.amin(dim=(2, 3), keepdim=True)).flatten(1).all(1)
    assert 0 < int(blank.sum()) < 200


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_train_shards_have_equal_steps_and_cover_the_epoch(world_size):
    n = 10
    shards = [_loader(n=n, rank=r, world_size=world_size) for r in range(world_size)]
    seen = [torch.cat([y for _, y in _epoch(loader, 2)]) for loader in shards]
    assert len({len(loader) for loader in shards}) == 1
    assert all(len(s) == loader.num_samples == -(-n // world_size) for s, loader in zip(seen, shards, strict=True))
    everything = torch.cat(seen)
    assert set(everything.tolist()) == set(range(n))
    assert len(everything) - len(set(everything.tolist())) == len(everything) - n  # only the wrap-around repeats


def test_train_augmentation_does_not_depend_on_world_size():
    single = _epoch(_loader(n=12, batch_size=12), 1)[0]
    halves = [_epoch(_loader(n=12, batch_size=6, rank=r, world_size=2), 1)[0] for r in range(2)]
    for rank, (images, labels) in enumerate(halves):
        assert torch.equal(labels, single[1][rank::2]) and torch.equal(images, single[0][rank::2])


@pytest.mark.parametrize("world_size", [1, 3, 4])
def test_test_shards_count_every_sample_exactly_once(world_size):
    n = 10
    shards = [_loader(n=n, train=False, rank=r, world_size=world_size) for r in range(world_size)]
    seen = [torch.cat([y for _, y in _epoch(loader, 0)]) for loader in shards]
    assert sorted(torch.cat(seen).tolist()) == list(range(n))
    assert [len(s) for s in seen] == [loader.num_samples for loader in shards]
    assert all(loader.dataset_size == n for loader in shards)


def test_test_loader_normalizes_without_augmenting():
    loader = _loader(n=6, train=False)  # the helper asks for padding 2: ignored
    images, labels = next(iter(loader))
    mean, std = torch.tensor(CIFAR100_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR100_STD).view(1, 3, 1, 1)
    assert torch.equal(images, normalize(loader.images[:4], mean, std)) and labels.tolist() == [0, 1, 2, 3]
    assert images.dtype == torch.float32 and labels.dtype == torch.int64


@pytest.mark.parametrize(
    "n, batch_size, world_size, drop_last, steps",
    [
        (50_000, 64, 1, False, 782),
        (50_000, 64, 1, True, 781),
        (5_994, 64, 1, True, 93),
        (5_994, 64, 1, False, 94),
        (50_000, 64, 2, False, 391),
        (50_000, 64, 3, False, 261),
        (5_994, 64, 4, True, 23),
    ],
)
def test_steps_per_epoch(n, batch_size, world_size, drop_last, steps):
    images = torch.zeros(n, 3, 1, 1, dtype=torch.uint8)
    loader = ArrayLoader(
        images,
        torch.zeros(n, dtype=torch.int64),
        batch_size=batch_size,
        mean=CIFAR100_MEAN,
        std=CIFAR100_STD,
        train=True,
        crop_size=1,
        drop_last=drop_last,
        world_size=world_size,
    )
    assert len(loader) == steps


def test_partial_last_batch_is_kept_or_dropped():
    kept = _epoch(_loader(n=10, batch_size=4), 0)
    dropped = _epoch(_loader(n=10, batch_size=4, drop_last=True), 0)
    assert [len(y) for _, y in kept] == [4, 4, 2] and [len(y) for _, y in dropped] == [4, 4]


def test_loader_rejects_inputs_it_cannot_serve():
    with pytest.raises(UserError, match="no full batch"):
        _loader(n=3, batch_size=4, drop_last=True)
    with pytest.raises(ValueError, match="rank 2 is outside world size 2"):
        _loader(rank=2, world_size=2)
    with pytest.raises(ValueError, match="uint8"):
        ArrayLoader(
            torch.zeros(2, 3, 4, 4),
            torch.zeros(2),
            batch_size=1,
            mean=(0, 0, 0),
            std=(1, 1, 1),
            train=False,
            crop_size=4,
        )


def test_labels_follow_images_to_the_device_of_the_images():
    loader = _loader(n=4, batch_size=4)
    images, labels = next(iter(loader))
    assert images.device == labels.device == loader.images.device
    assert np.isfinite(images.numpy()).all()
