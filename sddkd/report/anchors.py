"""Published top-1 accuracies (%, best epoch) that `sddkd report` compares runs against (no torch import).

Sources: the SDD paper (Wei et al., CVPR 2024, Tables 1-9), the LSKD paper (Sun et al., CVPR 2024, Tables
1-4) and the RepDistiller / mdistiller READMEs; each value is a mean of 4-5 runs at the best epoch. Paper KD
baselines disagree by up to 0.5 between papers and reruns scatter by about 0.5: rerun baselines to compare.

How a run's `method` and scales M map to a published column (`lookup`, columns named by `method_columns`):

| method | M | column |
|---|---|---|
| `vanilla` | - | the accuracy of that arch trained alone (teacher / student column) on that dataset |
| `X`, `X_lskd` | any | X, X+LS (e.g. `kd` -> KD, `ctkd_lskd` -> CTKD+LS) |
| `sdd_X` | (1) | X (SDD at M=(1) is the global-only loss; SDD's M ablation lists the KD value there) |
| `sdd_X` | the paper's M | SD-X |
| `sdd_kd` | each M of SDD's M ablation | the ablation value (CIFAR-100 resnet32x4 -> resnet8x4 / ShuffleV1) |
| `sdd_X_lskd` | (1) | X+LS (SDD at M=(1) is plain logit-standardized X) |

X is kd, dkd, nkd, ctkd or mlkd. "The paper's M" is (1,2,4) everywhere (the SDD authors' scripts), except SD-KD on
resnet32x4 -> resnet8x4, whose headline 76.63 was measured at M=(1,2), and SD-NKD on ResNet50 -> vgg8, which the
SDD scripts ran at M=(1,2) only. Any other combination (e.g. `sdd_kd_lskd` at M=(1,2,4), this project's own method,
or SD-KD at an M the paper did not run) has no published number: `lookup` returns None and the report prints "—".

The CIFAR-100 rows hold both comparison tables in full: the LSKD README's (KD, CTKD, DKD, MLKD, each with and
without +LS, 14 pairs) and SDD's Table 2 (KD/SD-KD, DKD/SD-DKD, NKD/SD-NKD, 6 pairs). Where the two papers print
different numbers for one cell, the SDD paper's is kept and the comment says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from sddkd.methods import label_of, method_names, parse_name
from sddkd.scales import Scales


@dataclass(frozen=True)
class Anchor:
    """One published accuracy: top-1 (and top-5 where given) in %, and where it comes from."""

    top1: float
    column: str  # the published column it was read from, e.g. "SD-KD M=(1,2)"
    source: str  # which table of ANCHORS it was transcribed from
    top5: float | None = None


_CIFAR_SOURCE = "CIFAR-100 (SDD/LSKD papers)"
_ABLATION_SOURCE = "CIFAR-100 M ablation (SDD Tables 6-8)"
_CUB_SOURCE = "CUB-200-2011 (SDD Table 5)"
_IMAGENET_SOURCE = "ImageNet (SDD/LSKD papers)"

# Published accuracy of each architecture trained alone (teachers and student baselines), per dataset.
# ImageNet values are (top-1, top-5).
_ARCH: dict[str, dict[str, float | tuple[float, float]]] = {
    "cifar100": {
        "resnet32x4": 79.42, "wrn_40_2": 75.61, "ResNet50": 79.34, "vgg13": 74.64, "resnet56": 72.34,
        "resnet110": 74.31, "resnet8x4": 72.50, "ShuffleV1": 70.50, "ShuffleV2": 71.82, "MobileNetV2": 64.60,
        "vgg8": 70.36, "wrn_16_2": 73.26, "wrn_40_1": 71.98, "resnet20": 69.06, "resnet32": 71.14,
    },
    "cub200": {
        "resnet32x4": 66.17, "vgg13": 70.19, "ResNet50": 60.01,
        "MobileNetV2": 40.23, "ShuffleV1": 37.28, "vgg8": 46.32,
    },
    "imagenet": {
        "resnet34": (73.31, 91.42), "resnet18": (69.75, 89.07),
        "resnet50": (76.16, 92.86), "MobileNetV1": (68.87, 88.76),
    },
}  # fmt: skip

# Distillation columns per (teacher, student); a missing column is "not reported".
_PAIRS: dict[str, dict[tuple[str, str], dict[str, float | tuple[float, float]]]] = {
    "cifar100": {
        # the suite's pairs
        ("resnet32x4", "resnet8x4"): {
            "KD": 73.33, "KD+LS": 76.62, "SD-KD": 76.63, "CTKD": 73.39, "CTKD+LS": 76.67, "DKD": 76.32,
            "DKD+LS": 77.01, "MLKD": 77.08, "MLKD+LS": 78.28,
        },
        ("resnet32x4", "ShuffleV1"): {
            "KD": 74.07, "SD-KD": 76.30, "DKD": 76.45, "SD-DKD": 77.30, "NKD": 75.31, "SD-NKD": 76.34,
        },
        ("resnet32x4", "MobileNetV2"): {"KD": 67.72, "SD-KD": 68.84, "DKD": 68.98, "SD-DKD": 70.08},
        ("wrn_40_2", "vgg8"): {"KD": 73.97, "SD-KD": 74.44, "DKD": 74.13, "SD-DKD": 74.58},
        ("wrn_40_2", "ShuffleV1"): {
            "KD": 74.83, "SD-KD": 76.65, "DKD": 76.70, "SD-DKD": 77.21, "NKD": 75.96, "SD-NKD": 76.81,
        },
        # KD, DKD: the SDD paper's 68.87, 69.33 (the LSKD README prints 68.36, 69.28 for this pair)
        ("wrn_40_2", "MobileNetV2"): {
            "KD": 68.87, "KD+LS": 69.23, "SD-KD": 69.81, "CTKD": 68.34, "CTKD+LS": 69.53, "DKD": 69.33,
            "DKD+LS": 70.01, "SD-DKD": 70.13, "MLKD": 70.78, "MLKD+LS": 71.61,
        },
        ("wrn_40_2", "wrn_16_2"): {
            "KD": 74.92, "KD+LS": 76.11, "CTKD": 75.45, "CTKD+LS": 76.08, "DKD": 76.24, "DKD+LS": 76.39,
            "MLKD": 76.63, "MLKD+LS": 76.95,
        },
        # other pairs
        ("resnet32x4", "ShuffleV2"): {
            "KD": 74.45, "KD+LS": 75.56, "SD-KD": 76.67, "CTKD": 75.37, "CTKD+LS": 76.18, "DKD": 77.07,
            "DKD+LS": 77.37, "SD-DKD": 78.05, "NKD": 76.26, "SD-NKD": 77.07, "MLKD": 78.44, "MLKD+LS": 78.76,
        },
        ("ResNet50", "MobileNetV2"): {
            "KD": 67.35, "KD+LS": 69.02, "SD-KD": 69.55, "CTKD": 68.67, "CTKD+LS": 69.36, "DKD": 70.35,
            "DKD+LS": 70.45, "SD-DKD": 71.36, "NKD": 69.39, "SD-NKD": 70.25, "MLKD": 71.04, "MLKD+LS": 71.19,
        },
        ("vgg13", "MobileNetV2"): {
            "KD": 67.37, "KD+LS": 68.61, "SD-KD": 68.79, "CTKD": 68.50, "CTKD+LS": 68.98, "DKD": 69.71,
            "DKD+LS": 69.98, "SD-DKD": 70.25, "NKD": 68.72, "SD-NKD": 69.50, "MLKD": 70.57, "MLKD+LS": 70.94,
        },
        ("ResNet50", "vgg8"): {
            "KD": 73.81, "SD-KD": 74.89, "DKD": 75.34, "SD-DKD": 75.86, "NKD": 74.01, "SD-NKD": 74.62,
        },
        ("ResNet50", "ShuffleV1"): {"KD": 75.82, "SD-KD": 76.87, "DKD": 77.01, "SD-DKD": 78.11},
        ("wrn_40_2", "resnet8x4"): {
            "KD": 73.97, "KD+LS": 77.11, "CTKD": 74.61, "CTKD+LS": 77.03, "DKD": 75.56, "DKD+LS": 76.75,
            "MLKD": 77.33, "MLKD+LS": 77.68,
        },
        ("resnet32x4", "wrn_16_2"): {
            "KD": 74.90, "KD+LS": 75.26, "CTKD": 74.57, "CTKD+LS": 75.16, "DKD": 75.70, "DKD+LS": 76.19,
            "MLKD": 76.52, "MLKD+LS": 77.53,
        },
        ("resnet32x4", "wrn_40_2"): {
            "KD": 77.70, "KD+LS": 77.92, "CTKD": 77.66, "CTKD+LS": 77.99, "DKD": 78.46, "DKD+LS": 78.95,
            "MLKD": 79.26, "MLKD+LS": 79.66,
        },
        ("vgg13", "vgg8"): {
            "KD": 72.98, "KD+LS": 74.36, "CTKD": 73.52, "CTKD+LS": 74.47, "DKD": 74.68, "DKD+LS": 74.81,
            "MLKD": 75.18, "MLKD+LS": 75.22,
        },
        ("wrn_40_2", "wrn_40_1"): {
            "KD": 73.54, "KD+LS": 74.37, "CTKD": 73.93, "CTKD+LS": 74.58, "DKD": 74.81, "DKD+LS": 74.89,
            "MLKD": 75.35, "MLKD+LS": 75.56,
        },
        ("resnet56", "resnet20"): {
            "KD": 70.66, "KD+LS": 71.43, "CTKD": 71.19, "CTKD+LS": 71.34, "DKD": 71.97, "DKD+LS": 72.32,
            "MLKD": 72.19, "MLKD+LS": 72.33,
        },
        ("resnet110", "resnet32"): {
            "KD": 73.08, "KD+LS": 74.17, "CTKD": 73.52, "CTKD+LS": 74.01, "DKD": 74.11, "DKD+LS": 74.29,
            "MLKD": 74.11, "MLKD+LS": 74.32,
        },
        ("resnet110", "resnet20"): {
            "KD": 70.67, "KD+LS": 71.48, "CTKD": 70.99, "CTKD+LS": 71.39, "DKD": 71.06, "DKD+LS": 71.85,
            "MLKD": 71.89, "MLKD+LS": 72.27,
        },
    },
    "cub200": {
        ("resnet32x4", "MobileNetV2"): {"KD": 56.09, "SD-KD": 60.51, "DKD": 59.94, "SD-DKD": 62.97},
        ("resnet32x4", "ShuffleV1"): {"KD": 61.68, "SD-KD": 65.46, "DKD": 64.51, "SD-DKD": 65.58},
        ("vgg13", "MobileNetV2"): {"KD": 53.98, "SD-KD": 59.80, "DKD": 58.45, "SD-DKD": 64.86},
        ("vgg13", "vgg8"): {"KD": 64.18, "SD-KD": 67.32, "DKD": 67.20, "SD-DKD": 68.67},
        ("ResNet50", "ShuffleV1"): {"KD": 57.21, "SD-KD": 60.56, "DKD": 59.21, "SD-DKD": 60.66},
    },
    "imagenet": {
        ("resnet34", "resnet18"): {
            "KD": (71.03, 90.05), "KD+LS": (71.42, 90.29), "SD-KD": (71.44, 90.05), "DKD": (71.70, 90.41),
            "SD-DKD": (72.02, 91.21),
        },
        ("resnet50", "MobileNetV1"): {
            "KD": (70.50, 89.80), "KD+LS": (72.18, 90.80), "SD-KD": (72.24, 90.71), "DKD": (72.05, 91.05),
            "SD-DKD": (73.08, 91.09),
        },
    },
}  # fmt: skip

_SOURCES = {"cifar100": _CIFAR_SOURCE, "cub200": _CUB_SOURCE, "imagenet": _IMAGENET_SOURCE}

# SDD's M ablation on CIFAR-100 (SD-KD): M=(1) is plain KD.
_M_ABLATION: dict[tuple[str, str], dict[Scales, float]] = {
    ("resnet32x4", "resnet8x4"): {(1,): 73.33, (1, 2): 76.63, (1, 4): 76.13, (1, 2, 4): 75.74},
    ("resnet32x4", "ShuffleV1"): {(1,): 74.07, (1, 2): 75.10, (1, 4): 75.84, (1, 2, 4): 76.30},
}

_PAPER_SCALES: Scales = (1, 2, 4)
# (dataset, method, teacher, student) whose headline SD number was measured at another M than _PAPER_SCALES
_PAPER_SCALES_EXCEPTIONS: dict[tuple[str, str, str, str], Scales] = {
    ("cifar100", "sdd_kd", "resnet32x4", "resnet8x4"): (1, 2),
    ("cifar100", "sdd_nkd", "ResNet50", "vgg8"): (1, 2),  # SDD's scripts ran SD-NKD on this pair at M=(1,2) only
}


def method_columns(method: str) -> tuple[str, str | None] | None:
    """The published columns of a method, from the registry's labels: (column at M=(1), column at the paper's M or
    None). `sdd_X` is X at M=(1) and SD-X at the paper's M; `sdd_X_lskd` was published by nobody beyond M=(1);
    non-SDD methods ignore M. None for vanilla and unknown names."""
    if method not in method_names() or method == "vanilla":
        return None
    _, sdd, lskd = parse_name(method)
    plain = label_of(method.removeprefix("sdd_"))  # KD, KD+LS, DKD, ...
    if not sdd:
        return plain, plain
    return plain, (None if lskd else label_of(method))


def scales_label(scales: Scales) -> str:
    """M as the papers write it: (1, 2, 4) -> "(1,2,4)"."""
    return "(" + ",".join(str(m) for m in scales) + ")"


def _anchor(value: float | tuple[float, float], column: str, source: str) -> Anchor:
    if isinstance(value, tuple):
        return Anchor(top1=value[0], top5=value[1], column=column, source=source)
    return Anchor(top1=value, column=column, source=source)


def lookup_arch(dataset: str, arch: str) -> Anchor | None:
    """The published accuracy of `arch` trained alone on `dataset` (a teacher or a student baseline)."""
    value = _ARCH.get(dataset, {}).get(arch)
    if value is None:
        return None
    return _anchor(value, "vanilla", _SOURCES[dataset])


def lookup(dataset: str, method: str, teacher: str | None, student: str, scales: Scales | None) -> Anchor | None:
    """The published number for `method` on `teacher -> student` at scales M, or None (see the module doc).

    `vanilla` runs look up `student` (the arch trained alone); `teacher` is ignored for them.
    """
    if method == "vanilla":
        return lookup_arch(dataset, student)
    columns = method_columns(method)
    if teacher is None or columns is None:
        return None
    scales = scales or (1,)
    ablation = _M_ABLATION.get((teacher, student), {}) if (dataset, method) == ("cifar100", "sdd_kd") else {}
    if scales in ablation:
        return Anchor(ablation[scales], column=f"SD-KD M={scales_label(scales)}", source=_ABLATION_SOURCE)
    row = _PAIRS.get(dataset, {}).get((teacher, student), {})
    at_m1, at_paper_m = columns
    ignores_m = not method.startswith("sdd_")
    if ignores_m or scales == (1,):
        column = at_m1
    elif scales == _PAPER_SCALES_EXCEPTIONS.get((dataset, method, teacher, student), _PAPER_SCALES):
        if at_paper_m is None:
            return None
        column = at_paper_m
    else:
        return None
    if column not in row:
        return None
    label = column if ignores_m or scales == (1,) else f"{column} M={scales_label(scales)}"
    return _anchor(row[column], label, _SOURCES[dataset])
