"""The MLKD and MLKD+LS rows of the LSKD table (TABLES: LSKD's MLKD configs and MLKD+LS logs, MLKD's own configs)
and the SD-MLKD+LS suite on the `cifar100` suite's pairs and M settings."""

import pytest

from sddkd.config import load_config
from tests.test_table_presets import LSKD_PAIRS, dry_run_json

# pair -> (epochs, LR) of MLKD's own configs before its same-architecture pairs moved to 240 epochs, else LSKD's copy
MLKD = {"res32x4_shuv2": (960, 0.01), "wrn40_2_mv2": (480, 0.005), "vgg13_mv2": (480, 0.01), "res50_mv2": (480, 0.01)}
# MLKD+LS log `mlkd,T,S,<T>,<w>` -> (w, epochs, LR0); the others (9, 480, 0.025); no log: res56_res20, wrn40_2_mv2
MLKD_LS = {
    "vgg13_vgg8": (6, 480, 0.01), "res32x4_shuv2": (6, 960, 0.01), "vgg13_mv2": (6, 480, 0.01),
    "res50_mv2": (9, 480, 0.01), "wrn40_2_mv2": (9, 480, 0.005),
}  # fmt: skip


@pytest.mark.parametrize("pair", list(LSKD_PAIRS))
def test_mlkd_presets_carry_the_recipe_of_their_cell(pair):
    teacher, student, _ = LSKD_PAIRS[pair]
    mlkd, mlkd_ls = (load_config(f"cifar100/{m}/{pair}") for m in ("mlkd", "mlkd_lskd"))
    for cfg in (mlkd, mlkd_ls):
        assert (cfg.teacher.arch, cfg.student, cfg.method.ce_weight, cfg.method.warmup) == (teacher, student, 0.1, 0)
        assert cfg.optim.lr_decay_epochs == (150, 180, 210) and cfg.optim.weight_decay == 5e-4
        assert cfg.optim.batch_size == 64 and tuple(cfg.scales) == (1,)
    assert (mlkd.method.temperature, mlkd.method.kd_weight) == (4, 0.9)
    assert (mlkd.optim.epochs, mlkd.optim.lr) == MLKD.get(pair, (480, 0.025))
    w, epochs, lr = MLKD_LS.get(pair, (9, 480, 0.025))
    assert (mlkd_ls.method.temperature, mlkd_ls.method.kd_weight, mlkd_ls.optim.epochs, mlkd_ls.optim.lr) == (
        2, w, epochs, lr
    )  # fmt: skip


def test_the_sd_mlkd_suite_mirrors_the_cifar100_suite():
    mlkd, sdd = dry_run_json("cifar100-mlkd"), dry_run_json("cifar100")
    assert len(mlkd) == 23 and {r["method"] for r in mlkd} == {"sdd_mlkd_lskd"}
    pairs = sorted((r["teacher"], r["student"], tuple(r["scales"])) for r in mlkd)
    assert pairs == sorted((r["teacher"], r["student"], tuple(r["scales"])) for r in sdd)
    for row in mlkd:
        cfg = load_config(row["preset"])
        m = cfg.method
        assert (m.temperature, m.kd_weight, m.ce_weight, m.complementary_weight) == (2, 9, 0.1, 2)
        assert cfg.optim.epochs in (480, 960) and cfg.optim.lr_decay_epochs == (150, 180, 210)
