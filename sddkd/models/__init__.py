"""Models: one registry for every architecture (CIFAR-100, CUB-200, ImageNet) and the one multi-scale head.

model = create_model("resnet32x4", num_classes=100, dataset="cifar100")
logits = model(x)                                   # [B, K]
features = model.forward_features(x)                # [B, C, H, W]
regions = region_logits(model, features, (1, 2, 4))  # [B, K, 21]; regions[..., 0] == logits
"""

# Importing the architecture modules registers their models.
from sddkd.models import imagenet, mobilenetv2_cifar, resnet_cifar, shufflenet, vgg, wrn  # noqa: F401
from sddkd.models.base import ImageClassifier, MultiScaleModel
from sddkd.models.heads import region_logits
from sddkd.models.registry import DATASETS, close_matches, create_model, list_models, register_model

__all__ = [
    "DATASETS",
    "ImageClassifier",
    "MultiScaleModel",
    "close_matches",
    "create_model",
    "list_models",
    "region_logits",
    "register_model",
]
