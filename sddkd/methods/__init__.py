"""Distillation methods as plug-ins: one module per base method, found by `sddkd.methods.registry`.

No torch import here: config validation reads the registry.
"""

from sddkd.methods.base import DistillConfig, Method, StrictModel, distill_weight, parse_name, variant_names
from sddkd.methods.registry import (
    base_methods,
    config_class_by_name,
    config_classes,
    label_of,
    method_names,
    method_of,
    report_order,
    report_rank,
)

__all__ = [
    "DistillConfig", "Method", "StrictModel", "base_methods", "config_class_by_name", "config_classes",
    "distill_weight", "label_of", "method_names", "method_of", "parse_name", "report_order", "report_rank",
    "variant_names",
]  # fmt: skip
