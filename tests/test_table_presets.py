"""The comparison-table suites and their presets: `lskd-table` and `sdd-table` expand to one run per published cell
sddkd can run, each preset carries the per-pair recipe of TABLES (LSKD's configs and log names, SDD's configs), its
header names the published number, and `sddkd report` has an anchor for every run."""

import json
import re

import pytest
from typer.testing import CliRunner

from sddkd.cli import app
from sddkd.config import load_config, resolve_preset
from sddkd.report.anchors import lookup
from tests.report.test_anchors import LSKD_TABLE, SDD_TABLE

runner = CliRunner()

# pair key -> (teacher, student, LR); LR 0.01 for MobileNet / ShuffleNet students
LSKD_PAIRS = {
    "res32x4_res8x4": ("resnet32x4", "resnet8x4", 0.05), "vgg13_vgg8": ("vgg13", "vgg8", 0.05),
    "wrn40_2_wrn40_1": ("wrn_40_2", "wrn_40_1", 0.05), "wrn40_2_wrn16_2": ("wrn_40_2", "wrn_16_2", 0.05),
    "res56_res20": ("resnet56", "resnet20", 0.05), "res110_res32": ("resnet110", "resnet32", 0.05),
    "res110_res20": ("resnet110", "resnet20", 0.05), "res32x4_shuv2": ("resnet32x4", "ShuffleV2", 0.01),
    "res32x4_wrn16_2": ("resnet32x4", "wrn_16_2", 0.05), "res32x4_wrn40_2": ("resnet32x4", "wrn_40_2", 0.05),
    "wrn40_2_res8x4": ("wrn_40_2", "resnet8x4", 0.05), "wrn40_2_mv2": ("wrn_40_2", "MobileNetV2", 0.01),
    "vgg13_mv2": ("vgg13", "MobileNetV2", 0.01), "res50_mv2": ("ResNet50", "MobileNetV2", 0.01),
}  # fmt: skip
# KD+LS log `kd,T,S,<T>,<w>` -> (temperature, kd_weight); the other pairs: (2, 9)
KD_LS = {
    "vgg13_vgg8": (3, 9), "res110_res20": (4, 12), "res32x4_wrn16_2": (3, 9), "res32x4_wrn40_2": (3, 9),
    "wrn40_2_mv2": (3, 9), "vgg13_mv2": (3, 9), "res50_mv2": (3, 1),
}  # fmt: skip
# DKD+LS log `dkd,T,S,<T>,<w>[,<beta>]` -> (temperature, w, beta); alpha = w, beta = beta * w (beta absent: 8)
DKD_LS = {
    "res32x4_res8x4": (2, 9, 8), "vgg13_vgg8": (2, 15, 2), "wrn40_2_wrn40_1": (2, 12, 2), "wrn40_2_wrn16_2": (2, 12, 2),
    "res56_res20": (3, 18, 2), "res110_res32": (2, 15, 2), "res110_res20": (2, 15, 2), "res32x4_shuv2": (2, 9, 8),
    "res32x4_wrn16_2": (2, 9, 2), "res32x4_wrn40_2": (2, 9, 8), "wrn40_2_res8x4": (2, 18, 2),
    "wrn40_2_mv2": (2, 15, 2), "vgg13_mv2": (3, 9, 2), "res50_mv2": (2, 15, 2),
}  # fmt: skip
# DKD's beta from LSKD's (= mdistiller's) DKD config; pairs without one keep the default 8
DKD_BETA = {
    "vgg13_vgg8": 6, "wrn40_2_wrn40_1": 6, "wrn40_2_wrn16_2": 6, "res56_res20": 2, "res110_res32": 2, "vgg13_mv2": 6,
}  # fmt: skip
SDD_PAIRS = {
    "res32x4_shuv1": ("resnet32x4", "ShuffleV1"), "wrn40_2_shuv1": ("wrn_40_2", "ShuffleV1"),
    "res50_mv2": ("ResNet50", "MobileNetV2"), "vgg13_mv2": ("vgg13", "MobileNetV2"),
    "res32x4_shuv2": ("resnet32x4", "ShuffleV2"), "res50_vgg8": ("ResNet50", "vgg8"),
}  # fmt: skip


def dry_run_json(name):
    result = runner.invoke(app, ["suite", name, "--dry-run", "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("pair", list(LSKD_PAIRS))
def test_lskd_presets_carry_the_recipe_of_their_cell(pair):
    teacher, student, lr = LSKD_PAIRS[pair]
    configs = {m: load_config(f"cifar100/{m}/{pair}") for m in ("kd", "kd_lskd", "dkd", "dkd_lskd")}
    for cfg in configs.values():
        assert (cfg.teacher.arch, cfg.student, cfg.optim.lr, cfg.optim.epochs) == (teacher, student, lr, 240)
        assert cfg.optim.lr_decay_epochs == (150, 180, 210) and cfg.optim.weight_decay == 5e-4
    kd, kd_ls, dkd, dkd_ls = configs.values()
    assert (kd.method.temperature, kd.method.ce_weight, kd.method.kd_weight) == (4, 0.1, 0.9)
    assert (kd_ls.method.temperature, kd_ls.method.kd_weight, kd_ls.method.ce_weight) == (*KD_LS.get(pair, (2, 9)), 0.1)
    m = dkd.method
    assert (m.alpha, m.beta, m.temperature, m.ce_weight, m.warmup) == (1, DKD_BETA.get(pair, 8), 4, 1, 20)
    temperature, w, beta = DKD_LS[pair]
    m = dkd_ls.method
    assert (m.alpha, m.beta, m.temperature, m.ce_weight, m.warmup) == (w, beta * w, temperature, 1, 20)


def _published_in_header(preset):
    header = resolve_preset(preset).read_text().split("\ndata:")[0]
    found = re.search(r"# Published: .*, row (\S+), (\d+\.\d\d) \(top-1, best epoch\)", header)
    assert found, f"{preset} names no published number"
    return found.group(1), float(found.group(2))


@pytest.mark.parametrize("name", ["lskd-table", "sdd-table"])
def test_every_table_preset_names_its_published_number_and_the_report_has_an_anchor(name):
    lskd_rows = ("KD", "KD+LS", "CTKD", "CTKD+LS", "DKD", "DKD+LS", "MLKD", "MLKD+LS")
    sdd_rows = ("KD", "SD-KD", "DKD", "SD-DKD", "NKD", "SD-NKD")
    for row in dry_run_json(name):
        pair = (row["teacher"], row["student"])
        column, number = _published_in_header(row["preset"])
        table, columns = (LSKD_TABLE, lskd_rows) if name == "lskd-table" else (SDD_TABLE, sdd_rows)
        assert number == table[pair][columns.index(column)], row["preset"]
        assert lookup("cifar100", row["method"], *pair, tuple(row["scales"])) is not None, row["preset"]
