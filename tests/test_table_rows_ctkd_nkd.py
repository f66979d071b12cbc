"""The CTKD and NKD rows of the comparison tables (needs the nkd and ctkd methods): the full suites expand to
112 (with MLKD's rows, tests/test_table_rows_mlkd.py) and 36 runs, and the ctkd / nkd presets carry the recipes of
TABLES (LSKD's CTKD script and logs, SDD's code)."""

import pytest

from sddkd.config import load_config
from tests.test_table_presets import LSKD_PAIRS, SDD_PAIRS, dry_run_json

SDD_GAMMA = {"vgg13_mv2": 6.0}  # SDD's config DKD.BETA; the others keep 8
SDD_NKD_M = {"res50_vgg8": (1, 2)}  # the M of SDD's script; the others (1, 2, 4)


def test_full_table_suites():
    lskd = dry_run_json("lskd-table")
    assert len(lskd) == 112 and {r["method"] for r in lskd} == {
        "kd", "kd_lskd", "ctkd", "ctkd_lskd", "dkd", "dkd_lskd", "mlkd", "mlkd_lskd"
    }  # fmt: skip
    sdd = dry_run_json("sdd-table")
    assert len(sdd) == 36 and {r["method"] for r in sdd} == {"kd", "sdd_kd", "dkd", "sdd_dkd", "nkd", "sdd_nkd"}


@pytest.mark.parametrize("pair", list(LSKD_PAIRS))
def test_ctkd_presets(pair):
    ctkd, ctkd_ls = (load_config(f"cifar100/{m}/{pair}").method for m in ("ctkd", "ctkd_lskd"))
    assert (ctkd.ce_weight, ctkd.kd_weight, ctkd.t_start, ctkd.t_range) == (0.1, 0.9, 1.0, 20.0)
    assert (ctkd_ls.ce_weight, ctkd_ls.kd_weight, ctkd_ls.t_start, ctkd_ls.t_range) == (0.1, 9.0, 2.0, 30.0)
    for m in (ctkd, ctkd_ls):
        assert (m.reversal_max, m.reversal_min, m.reversal_epochs) == (0.0, -1.0, 10)


@pytest.mark.parametrize("pair", list(SDD_PAIRS))
def test_nkd_presets_use_sdds_computation(pair):
    nkd, sdd_nkd = (load_config(f"cifar100/{m}/{pair}").method for m in ("nkd", "sdd_nkd"))
    for m in (nkd, sdd_nkd):
        assert (m.temperature, m.gamma, m.ce_weight, m.warmup) == (4.0, SDD_GAMMA.get(pair, 8.0), 1.0, 20)
        assert m.non_target_only is False
    assert tuple(nkd.scales) == (1,) and tuple(sdd_nkd.scales) == SDD_NKD_M.get(pair, (1, 2, 4))
