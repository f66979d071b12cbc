"""`sddkd report` over sweeps: rows by whole recipe except the seed, swept keys as columns, 80-column tables that
wrap instead of cutting, and plots of seed means with bands."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from sddkd.cli import app
from sddkd.report.records import build_report
from sddkd.report.render import generate_report, render_table

PAIR = {"dataset": "cifar100", "teacher": "resnet32x4", "student": "resnet8x4"}


def write_run(root: Path, folder: str, *, temperature: float, scales: list[int], seed: int, best: float,
              partial: bool = False) -> None:  # fmt: skip
    recipe = {"data.name": "cifar100", "student": "resnet8x4", "teacher.arch": "resnet32x4",
              "method.name": "sdd_kd_lskd", "method.temperature": temperature, "method.scales": scales,
              "optim.lr": 0.05, "optim.epochs": 4, "optim.max_steps": 2 if partial else None}  # fmt: skip
    key = json.dumps(recipe, sort_keys=True)
    record = {
        "run_name": folder, "config_hash": f"{abs(hash((key, seed))):012x}"[:12], "status": "finished", **PAIR,
        "method": "sdd_kd_lskd", "scales": scales, "seed": seed, "epochs": 4, "epochs_done": 4,
        "best_top1": best, "best_top5": 90.0, "best_epoch": 4, "last_top1": best - 0.5, "last_top5": 89.0,
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"), "pid": 1, "host": "elsewhere",
        "recipe": recipe, "recipe_key": f"{abs(hash(key)):012x}"[:12], "partial": partial,
        "teacher_checkpoint": {"test_top1": 79.4},
    }  # fmt: skip
    run_dir = root / folder
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text(json.dumps(record))
    with (run_dir / "metrics.jsonl").open("w") as metrics:
        for epoch in range(1, 5):
            row = {"epoch": epoch, "losses": {"ce": 2.0 / epoch, "kd": 1.0 / epoch + seed * 0.1},
                   "test_top1": best * epoch / 4 - seed}  # fmt: skip
            metrics.write(json.dumps(row) + "\n")


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "logs"
    for seed in (0, 1):
        write_run(root, f"t2-m1-s{seed}", temperature=2.0, scales=[1], seed=seed, best=76.0 + seed)
        write_run(root, f"t8-m1-s{seed}", temperature=8.0, scales=[1], seed=seed, best=74.0 + seed)
        write_run(root, f"t2-m124-s{seed}", temperature=2.0, scales=[1, 2, 4], seed=seed, best=78.0 + seed)
    write_run(root, "t2-m1-s0-partial", temperature=2.0, scales=[1], seed=0, best=10.0, partial=True)
    return root


def test_rows_are_recipes_and_the_swept_key_is_a_column(sweep: Path):
    report = build_report(sweep)
    assert report.setting_keys == ["method.temperature"]
    by_setting = {(row.settings["method.temperature"], row.scales): row for row in report.rows}
    assert set(by_setting) == {(2.0, (1,)), (8.0, (1,)), (2.0, (1, 2, 4))}
    assert all(len(row.seeds) == 2 for row in report.rows)
    assert by_setting[(2.0, (1,))].best_top1.mean == pytest.approx(76.5)  # the partial run's 10.0 is left out
    # Δ M=(1) compares with the same recipe at M=(1): T=2, not T=8
    assert by_setting[(2.0, (1, 2, 4))].delta_vs_m1 == pytest.approx(2.0)
    assert [run.run_name for run in report.left_out] == ["t2-m1-s0-partial"]
    with_partial = build_report(sweep, include_partial=True)
    assert len(with_partial.rows) == 4 and sum(row.partial for row in with_partial.rows) == 1


def test_the_terminal_table_wraps_at_80_columns_and_never_cuts(sweep: Path):
    console = Console(file=io.StringIO(), width=80, force_terminal=False)
    console.print(render_table(build_report(sweep), width=80))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "T = method.temperature" in text and "→" in text and "resnet32x4" in text  # the pair folds, uncut
    assert "cifar100, 4 epochs, all finished" in text
    header = next(line for line in text.splitlines() if line.lstrip().startswith("pair"))
    assert header.split() == ["pair", "method", "M", "T", "n", "best", "last", "ΔM1", "pub", "Δpub"]


def test_a_piped_table_is_full_width_one_line_per_row(sweep: Path, tmp_path: Path):
    result = CliRunner().invoke(app, ["report", str(sweep), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if "resnet32x4→resnet8x4" in line]
    assert len(rows) == 3 and "…" not in result.stdout


def test_plots_draw_mean_and_band_per_series_and_a_teacher_line(sweep: Path, tmp_path: Path):
    pytest.importorskip("matplotlib")
    from matplotlib.collections import PolyCollection

    from sddkd.report import plots as report_plots

    figures = {}
    real_save = report_plots._save

    def keep(figure, path):
        figures[path.name] = figure
        return real_save(figure, path)

    report = build_report(sweep)
    original, report_plots._save = report_plots._save, keep
    try:
        written = report_plots.write_plots(report, tmp_path / "plots")
    finally:
        report_plots._save = original
    assert sorted(p.name for p in written) == ["cifar100-resnet32x4_resnet8x4-by-epoch.png",
                                               "cifar100-resnet32x4_resnet8x4-top1-by-M.png"]  # fmt: skip
    accuracy, loss = figures["cifar100-resnet32x4_resnet8x4-by-epoch.png"].axes
    labels = [line.get_label() for line in accuracy.get_lines()]
    assert "sdd_kd_lskd M=(1) temperature=2.0 (n=2)" in labels and "teacher resnet32x4 (79.4%)" in labels
    assert sum(isinstance(c, PolyCollection) for c in accuracy.collections) == 3  # one ± std band per series
    assert len(loss.get_lines()) == 3 and loss.get_ylabel().startswith("training loss")
    mean_line = next(line for line in accuracy.get_lines() if line.get_label().startswith("sdd_kd_lskd M=(1) t"))
    assert list(mean_line.get_xdata()) == [1, 2, 3, 4]
    assert list(mean_line.get_ydata()) == pytest.approx([76.5 * e / 4 - 0.5 for e in range(1, 5)])  # seed mean
    ticks = [t for t in accuracy.get_xticks() if 1 <= t <= 4]
    assert ticks and all(float(t).is_integer() for t in ticks)
    by_m = figures["cifar100-resnet32x4_resnet8x4-top1-by-M.png"].axes[0]
    assert "teacher resnet32x4 (79.4%)" in [line.get_label() for line in by_m.get_lines()]
    assert not any("vanilla resnet32x4" in line.get_label() for line in by_m.get_lines())


def test_report_files_carry_the_setting_column(sweep: Path, tmp_path: Path):
    report = generate_report(sweep, out_dir=tmp_path / "out")
    csv_text = (tmp_path / "out" / "report.csv").read_text()
    assert csv_text.splitlines()[0].split(",")[:7] == ["dataset", "pair", "teacher", "student", "method", "M",
                                                       "epochs"]  # fmt: skip
    assert "method.temperature" in csv_text.splitlines()[0]
    assert len(report.rows) == 3
