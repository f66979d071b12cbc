"""The model registry, every architecture on every dataset it supports, and the multi-scale head."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from sddkd.models import DATASETS, create_model, list_models, region_logits

DATA = Path(__file__).parent.parent / "fixtures"
MANIFESTS = {ds: json.loads((DATA / f"{ds}_state_dicts.json").read_text()) for ds in ("cifar100", "cub200")}
NUM_CLASSES = {"cifar100": 100, "cub200": 200, "imagenet": 1000}
NATIVE_SIZE = {"cifar100": 32, "cub200": 224, "imagenet": 224}
NUMERIC_SIZE = {"cifar100": 32, "cub200": 64, "imagenet": 64}
SCALES = (1, 2, 4)

CIFAR_NAMES = (
    "resnet8 resnet14 resnet20 resnet32 resnet44 resnet56 resnet110 resnet8x4 resnet32x4 ResNet18 ResNet50 "
    "wrn_16_1 wrn_16_2 wrn_40_1 wrn_40_2 vgg8 vgg11 vgg13 vgg16 vgg19 MobileNetV2 ShuffleV1 ShuffleV2"
).split()
IMAGENET_NAMES = ["resnet18", "resnet34", "resnet50", "resnet101", "MobileNetV1", "mobilenet_v2"]

# Last feature map at 224 px on CUB: the 7x7 stride-2 stem halves the input; MobileNetV2 adds a 2x2 max-pool.
CUB_MAP_SIDE = {"MobileNetV2": 7, "ResNet18": 14, "ResNet50": 14, "ShuffleV1": 14, "ShuffleV2": 14}
IMAGENET_MAP_CHANNELS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048,
                         "MobileNetV1": 1024, "mobilenet_v2": 1280}  # fmt: skip


def _case(dataset: str, name: str):
    return pytest.param(dataset, name, id=f"{dataset}-{name}")


ALL_CASES = [_case(ds, name) for ds in DATASETS for name in list_models(ds)]
MANIFEST_CASES = [_case(ds, name) for ds, manifest in MANIFESTS.items() for name in manifest]


def expected_feature_shape(dataset: str, name: str) -> tuple[int, int, int]:
    cifar_map = MANIFESTS["cifar100"].get(name, {}).get("last_feature_map_32x32")
    if dataset == "cifar100":
        return tuple(cifar_map)
    if dataset == "cub200":
        side = CUB_MAP_SIDE.get(name, 28)
        return (cifar_map[0], side, side)
    return (IMAGENET_MAP_CHANNELS[name], 7, 7)


def state_dict_shapes(model: nn.Module) -> list[tuple[str, list[int]]]:
    return [(key, list(value.shape)) for key, value in model.state_dict().items()]


def calibrate_batchnorm_on_next_batch(model: nn.Module) -> None:
    """Running stats := the next train batch's, so eval-mode activations of a fresh deep net stay O(1)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = 1.0


# --- registry -----------------------------------------------------------------------------------------------


def test_registry_lists_exactly_the_fields_names_per_dataset():
    assert list_models("cifar100") == list_models("cub200")
    assert sorted(list_models("cifar100")) == sorted(CIFAR_NAMES)
    assert list_models("imagenet") == IMAGENET_NAMES
    assert sorted(list_models()) == sorted(CIFAR_NAMES + IMAGENET_NAMES)


def test_unknown_name_lists_close_matches_and_how_to_list():
    with pytest.raises(ValueError, match=r"unknown model 'resnet33'.*resnet32.*list_models\(\)"):
        create_model("resnet33")


def test_name_of_another_dataset_says_which_datasets_it_supports():
    with pytest.raises(ValueError, match=r"'resnet18' is not available for dataset 'cifar100'.*imagenet.*ResNet18"):
        create_model("resnet18", dataset="cifar100")
    with pytest.raises(ValueError, match=r"supports cifar100, cub200"):
        create_model("wrn_40_2", dataset="imagenet")


@pytest.mark.parametrize("kwargs", [{"dataset": "cifar10"}, {"num_classes": 0}, {"num_classes": True}])
def test_bad_arguments_are_rejected(kwargs):
    with pytest.raises(ValueError, match="dataset|num_classes"):
        create_model("resnet8", **kwargs)


def test_list_models_rejects_an_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'cifar10'; expected one of cifar100, cub200, imagenet"):
        list_models("cifar10")


def test_num_classes_sets_the_classifier_width():
    model = create_model("resnet8", num_classes=7)
    assert model.get_classifier().out_features == 7
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 7)


# --- architectures against the reference manifests ----------------------------------------------------------


@pytest.mark.parametrize("dataset, name", MANIFEST_CASES)
def test_state_dict_param_count_and_classifier_match_the_reference(dataset, name):
    reference = MANIFESTS[dataset][name]
    with torch.device("meta"):  # shapes only: no weight initialisation
        model = create_model(name, reference["num_classes"], dataset)
    # Same keys, same order, same shapes: the published checkpoints load with strict=True.
    assert state_dict_shapes(model) == list(reference["state_dict"].items())
    assert sum(p.numel() for p in model.parameters()) == reference["params"]
    classifier_name = MANIFESTS["cifar100"][name]["classifier"]
    assert model.get_submodule(classifier_name) is model.get_classifier()


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v2"])
def test_imagenet_nets_have_torchvisions_state_dict(name):
    with torch.device("meta"):
        theirs = getattr(torchvision.models, name)()
        ours = create_model(name, num_classes=1000, dataset="imagenet")
    assert state_dict_shapes(ours) == state_dict_shapes(theirs)


# One of each block type: BasicBlock, Bottleneck, InvertedResidual.
@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v2"])
def test_imagenet_nets_load_torchvision_weights_and_compute_the_same_logits(name):
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, name)(num_classes=10).eval()
    ours = create_model(name, num_classes=10, dataset="imagenet").eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))


def test_mobilenet_v1_has_mdistillers_keys():
    model = create_model("MobileNetV1", num_classes=1000, dataset="imagenet")
    expected = [f"model.0.{i}" for i in (0, 1)]  # conv-bn stem, then 13 x (dw conv, bn, pw conv, bn)
    expected += [f"model.{layer}.{i}" for layer in range(1, 14) for i in (0, 1, 3, 4)]
    expected += ["fc"]
    assert sorted({key.rsplit(".", 1)[0] for key in model.state_dict()}) == sorted(expected)
    assert model.state_dict()["model.13.3.weight"].shape == (1024, 1024, 1, 1)
    assert model.fc.weight.shape == (1000, 1024)
    assert sum(p.numel() for p in model.parameters()) == 4_231_976  # MobileNet 1.0 (Howard et al. 2017)


# --- every registered model on every dataset it supports ----------------------------------------------------


@pytest.mark.parametrize("dataset, name", ALL_CASES)
def test_output_shapes_at_the_datasets_resolution(dataset, name):
    # Shape propagation on the meta device: the 224-px cases cost no arithmetic.
    num_classes, size = NUM_CLASSES[dataset], NATIVE_SIZE[dataset]
    with torch.device("meta"):
        model = create_model(name, num_classes, dataset).eval()
        x = torch.empty(2, 3, size, size)
        logits = model(x)
        features = model.forward_features(x)
        regions = region_logits(model, features, SCALES)
    assert logits.shape == (2, num_classes)
    assert tuple(features.shape) == (2, *expected_feature_shape(dataset, name))
    assert regions.shape == (2, num_classes, 21)
    if dataset == "cub200" and name in MANIFESTS["cub200"]:
        reference_shapes = MANIFESTS["cub200"][name]["reference_forward_output_shapes"]
        assert [list(logits.shape), list(regions.shape)] == reference_shapes


@pytest.mark.parametrize("dataset, name", ALL_CASES)
def test_every_parameter_learns_and_region_zero_is_the_models_output(dataset, name):
    # Adaptive pooling makes the arithmetic resolution-independent: 224-px nets are checked at 64 px.
    torch.manual_seed(0)
    num_classes, size = NUM_CLASSES[dataset], NUMERIC_SIZE[dataset]
    model = create_model(name, num_classes, dataset)
    calibrate_batchnorm_on_next_batch(model)
    x = torch.randn(2, 3, size, size)

    features = model.forward_features(x)
    regions = region_logits(model, features, SCALES)
    loss = (regions * torch.randn_like(regions)).sum() + model.forward_head(features).logsumexp(1).sum()
    loss.backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, f"{param_name} received no gradient"
        assert torch.isfinite(param.grad).all(), f"{param_name} has a non-finite gradient"
    linear_layers = [m for m in model.get_classifier().modules() if isinstance(m, nn.Linear)]
    assert linear_layers and all(layer.weight.grad.abs().sum() > 0 for layer in linear_layers)

    model.eval()
    with torch.no_grad():
        logits = model(x)
        regions = region_logits(model, model.forward_features(x), SCALES)
    assert logits.shape == (2, num_classes) and regions.shape == (2, num_classes, 21)
    torch.testing.assert_close(regions[:, :, 0], logits, rtol=0, atol=1e-5)


# --- the multi-scale head -----------------------------------------------------------------------------------


class FeatureMapModel(nn.Module):
    """A stand-in exposing the multi-scale interface: features are the input itself."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def get_classifier(self) -> nn.Module:
        return self.classifier


def region_logits_cell_by_cell(classifier: nn.Module, features: torch.Tensor, scales) -> torch.Tensor:
    """The definition, slowly: each cell is the mean over AdaptiveAvgPool2d's bin.

    Bin i of m along a side of length H covers [floor(i*H/m), ceil((i+1)*H/m)).
    """
    _, _, height, width = features.shape
    columns = []
    for m in scales:
        for i in range(m):
            for j in range(m):
                rows = slice(math.floor(i * height / m), math.ceil((i + 1) * height / m))
                cols = slice(math.floor(j * width / m), math.ceil((j + 1) * width / m))
                columns.append(classifier(features[:, :, rows, cols].mean(dim=(2, 3))))  # [B, K]
    return torch.stack(columns, dim=2)  # [B, K, N]


def rows_seen_by_classifier(classifier: nn.Linear, call) -> list[int]:
    seen: list[int] = []
    handle = classifier.register_forward_hook(lambda module, args, output: seen.append(args[0].shape[-2]))
    try:
        call()
    finally:
        handle.remove()
    return seen


@pytest.mark.parametrize(
    "height, width, scales, uses_shortcut",
    [
        (8, 8, (1, 2, 4), True),  # CIFAR ResNet / WRN maps
        (4, 4, (1, 2, 4), True),  # VGG, ShuffleNet, ResNet18/50 maps
        (16, 8, (1, 2, 4), True),  # non-square
        (8, 8, (1, 4), True),
        (28, 28, (1, 2, 4), True),  # CUB ResNet / VGG / WRN maps
        (2, 2, (1, 2, 4), False),  # MobileNetV2 on CIFAR: m = 4 repeats cells
        (7, 7, (1, 2, 4), False),  # CUB MobileNetV2, ImageNet nets: overlapping bins
        (14, 14, (1, 2, 4), False),  # CUB ShuffleNets and ResNet18/50
        (6, 6, (1, 2, 3), False),  # divisible by the finest m, but 2 does not divide 3
        (5, 3, (1,), True),
    ],
)
def test_shortcut_equals_direct_pooling_and_the_definition(height, width, scales, uses_shortcut):
    torch.manual_seed(0)
    classifier = nn.Linear(6, 5).double()
    model = FeatureMapModel(classifier)
    features = torch.randn(3, 6, height, width, dtype=torch.float64)
    expected = region_logits_cell_by_cell(classifier, features, scales)
    n_regions = sum(m * m for m in scales)

    fast = region_logits(model, features, scales)
    direct = region_logits(model, features, scales, shortcut=False)
    assert fast.shape == (3, 5, n_regions) and fast.is_contiguous() and direct.is_contiguous()
    torch.testing.assert_close(fast, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(direct, expected, rtol=0, atol=1e-12)

    # One classifier call either way: on the finest grid (shortcut) or on all N cells (direct).
    seen = rows_seen_by_classifier(classifier, lambda: region_logits(model, features, scales))
    assert seen == ([max(scales) ** 2] if uses_shortcut else [n_regions])


def test_non_linear_classifier_pools_directly():
    torch.manual_seed(0)
    linear = nn.Linear(6, 5).double()
    model = FeatureMapModel(nn.Sequential(nn.Dropout(0.2), linear)).eval()  # torchvision mobilenet_v2's shape
    features = torch.randn(2, 6, 8, 8, dtype=torch.float64)
    seen = rows_seen_by_classifier(linear, lambda: region_logits(model, features, SCALES))
    assert seen == [21]
    expected = region_logits_cell_by_cell(linear, features, SCALES)
    torch.testing.assert_close(region_logits(model, features, SCALES), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["resnet8", "MobileNetV2"])
def test_region_logits_of_real_models_match_the_definition(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).double().eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(2, 3, 32, 32, dtype=torch.float64))
        expected = region_logits_cell_by_cell(model.get_classifier(), features, SCALES)
        torch.testing.assert_close(region_logits(model, features, SCALES), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("height", [8, 2])  # shortcut and direct paths
def test_region_logits_follow_autocast_without_breaking(height):
    torch.manual_seed(0)
    model = FeatureMapModel(nn.Linear(16, 10))
    features = torch.randn(2, 16, height, height)
    reference = region_logits(model, features, SCALES)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = region_logits(model, features, SCALES)
    assert mixed.dtype == torch.bfloat16 and mixed.shape == (2, 10, 21)
    torch.testing.assert_close(mixed.float(), reference, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("scales", [(), (0, 1)])
def test_region_logits_reject_empty_or_non_positive_scales(scales):
    model = FeatureMapModel(nn.Linear(4, 3))
    with pytest.raises(ValueError, match="scales"):
        region_logits(model, torch.randn(1, 4, 4, 4), scales)
