"""`sddkd report`: run records written by hand -> rows, files, plots and the CLI; never torch."""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import statistics
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sddkd.cli import app
from sddkd.report.anchors import lookup
from sddkd.report.records import ReportError, Row, build_report
from sddkd.report.render import generate_report
from sddkd.rundir.lock import acquire_run_lock
from sddkd.rundir.state import run_state

REPO = Path(__file__).resolve().parents[2]
HOST = socket.gethostname()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PAIR = {"dataset": "cifar100", "teacher": "resnet32x4", "student": "resnet8x4"}


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _dead_pid() -> int:
    """The pid of a child that has exited and been reaped: nothing answers to it any more."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def write_run(root: Path, folder: str, **fields: object) -> Path:
    """A run directory as the engine writes it: result.json, config.yaml and one metrics line per epoch."""
    record: dict[str, object] = {
        "run_name": Path(folder).name, "config_hash": "0123456789ab", "status": "finished", **PAIR,
        "method": "sdd_kd_lskd", "scales": [1], "seed": 0, "epochs": 4, "epochs_done": 4,
        "best_top1": 70.0, "best_top5": 90.0, "best_epoch": 3, "last_top1": 69.5, "last_top5": 89.5,
        "wall_seconds": 40.0, "updated": _iso(datetime.now(timezone.utc)), "pid": 4242, "host": "gpu-node-7",
        "error": None, "versions": {"sddkd": "0.1.0", "torch": "2.4.0", "python": "3.11"},
        "teacher_checkpoint": {"path": "t.pth", "sha256": "ab" * 32, "test_top1": 79.4, "test_top5": 94.2},
    }  # fmt: skip
    record.update(fields)
    run_dir = root / folder
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text(json.dumps(record))
    (run_dir / "config.yaml").write_text(f"method: {record['method']}\nseed: {record['seed']}\n")
    done = int(record["epochs_done"])  # type: ignore[call-overload]
    with (run_dir / "metrics.jsonl").open("w") as metrics:
        for epoch in range(1, done + 1):
            top1 = float(record["best_top1"]) * epoch / done  # type: ignore[arg-type]
            line = {"epoch": epoch, "lr": 0.05, "losses": {"ce": 1.0}, "test_top1": top1}
            metrics.write(json.dumps(line) + "\n")
    return run_dir


@pytest.fixture
def runs_dir(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "logs"
    for seed, (best, last) in enumerate([(76.0, 75.8), (76.4, 76.1), (76.2, 76.0)]):
        write_run(root, f"suite/m1-s{seed}", seed=seed, best_top1=best, last_top1=last)
    for seed, (best, last) in enumerate([(77.0, 76.9), (77.4, 77.1)]):
        write_run(root, f"suite/m12-s{seed}", seed=seed, scales=[1, 2], best_top1=best, last_top1=last)
    write_run(root, "kd/sdd_kd-m1", method="sdd_kd", best_top1=73.0, last_top1=72.9)
    write_run(root, "kd/sdd_kd-m12", method="sdd_kd", scales=[1, 2], best_top1=76.0, last_top1=75.7)
    write_run(root, "vanilla-resnet8x4-s0", method="vanilla", teacher=None, scales=None, best_top1=72.3,
              last_top1=72.1)  # fmt: skip
    write_run(root, "live", scales=[1, 2, 4], status="running", epochs_done=2, pid=os.getpid(), host=HOST)
    write_run(root, "dead", scales=[1, 4], status="running", epochs_done=1, pid=_dead_pid(), host=HOST)
    # killed, and its pid since given to an unrelated live process (this one): no lock, so not running
    write_run(root, "reused", scales=[1, 4], seed=1, status="running", epochs_done=1, pid=os.getpid(), host=HOST)
    write_run(root, "crashed", scales=[1, 2, 4], seed=1, status="failed", epochs_done=3,
              error="RuntimeError: [rank0] non-finite loss at step 120\nTraceback ...")  # fmt: skip
    (root / "broken").mkdir()
    (root / "broken" / "result.json").write_text('{"status": "finished", "method": ')
    (root / "notes").mkdir()  # a folder without result.json is not a run
    lock = acquire_run_lock(root / "live")  # the live run's owner
    yield root
    lock.release()


def _row(rows: list[Row], method: str, scales: tuple[int, ...] | None) -> Row:
    (row,) = [r for r in rows if r.method == method and r.scales == scales]
    return row


def test_rows_aggregate_seeds_with_deltas_and_anchors(runs_dir: Path) -> None:
    report = build_report(runs_dir)
    m1, m12 = _row(report.rows, "sdd_kd_lskd", (1,)), _row(report.rows, "sdd_kd_lskd", (1, 2))
    assert m1.seeds == (0, 1, 2) and m1.pair == "resnet32x4→resnet8x4"
    assert m1.best_top1 is not None and m1.last_top1 is not None
    assert m1.best_top1.mean == pytest.approx(76.2)
    assert m1.best_top1.std == pytest.approx(statistics.stdev([76.0, 76.4, 76.2]))  # sample std, n - 1
    assert m1.last_top1.mean == pytest.approx(statistics.fmean([75.8, 76.1, 76.0]))
    assert m1.delta_vs_m1 is None  # M=(1) is the reference
    assert m1.published is not None and m1.published.top1 == 76.62  # KD+LS
    assert m1.delta_vs_published == pytest.approx(76.2 - 76.62)
    assert m12.best_top1 is not None and m12.best_top1.mean == pytest.approx(77.2)
    assert m12.delta_vs_m1 == pytest.approx(1.0)
    assert m12.published is None and m12.delta_vs_published is None  # the project's own method at M>(1)
    # SD-KD on resnet32x4 -> resnet8x4: SDD's M ablation at each M; one seed has no std
    kd12 = _row(report.rows, "sdd_kd", (1, 2))
    assert kd12.best_top1 is not None and kd12.best_top1.std is None
    assert kd12.delta_vs_m1 == pytest.approx(3.0)
    assert kd12.published is not None and kd12.published.top1 == 76.63
    assert kd12.delta_vs_published == pytest.approx(76.0 - 76.63)
    vanilla = _row(report.rows, "vanilla", None)
    assert vanilla.pair == "resnet8x4" and vanilla.published is not None and vanilla.published.top1 == 72.50
    assert vanilla.delta_vs_published == pytest.approx(72.3 - 72.5)
    assert report.rows[0] is vanilla  # baselines come first


def test_unfinished_runs_are_shown_as_such(runs_dir: Path) -> None:
    report = build_report(runs_dir)
    states = {run.run_name: run.state for run in report.runs}
    assert states["live"] == "running" and states["dead"] == "incomplete" and states["crashed"] == "failed"
    assert states["reused"] == "incomplete"  # the lock decides, not a pid that now names another process
    assert {run.run_name for run in report.unfinished} == {"live", "dead", "crashed", "reused"}
    m124 = _row(report.rows, "sdd_kd_lskd", (1, 2, 4))
    assert m124.states == {"running": 1, "failed": 1} and m124.seeds == () and m124.best_top1 is None
    assert _row(report.rows, "sdd_kd_lskd", (1, 4)).states == {"incomplete": 2}


def test_run_state_rules() -> None:
    now = datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc)
    fresh, old = _iso(now - timedelta(minutes=5)), _iso(now - timedelta(days=3))
    base = {"status": "running", "epochs_done": 10, "wall_seconds": 600.0}
    assert run_state({**base, "host": "elsewhere", "pid": 1, "updated": fresh}, now, HOST) == "running"
    assert run_state({**base, "host": "elsewhere", "pid": 1, "updated": old}, now, HOST) == "incomplete"
    assert run_state({**base, "host": HOST, "pid": os.getpid(), "updated": old}, now, HOST) == "incomplete"
    assert run_state({**base, "host": HOST, "pid": _dead_pid(), "updated": fresh}, now, HOST) == "incomplete"
    # the lock decides where it is known: a live pid without it is a reused pid, a locked directory is running
    assert run_state({**base, "host": HOST, "pid": os.getpid(), "updated": fresh}, now, HOST, False) == "incomplete"
    assert run_state({**base, "host": HOST, "pid": os.getpid(), "updated": fresh}, now, HOST, None) == "running"
    assert run_state({**base, "status": "failed", "updated": fresh}, now, HOST, True) == "running"
    zulu = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert run_state({**base, "host": "elsewhere", "updated": zulu}, now, HOST) == "running"
    # slow epochs (an hour each) stay running for three epoch lengths without an update
    slow = {**base, "wall_seconds": 10 * 3600.0, "host": "elsewhere"}
    assert run_state({**slow, "updated": _iso(now - timedelta(hours=2.5))}, now, HOST) == "running"
    assert run_state({**slow, "updated": _iso(now - timedelta(hours=3.5))}, now, HOST) == "incomplete"
    assert run_state({"status": "finished", "updated": old}, now, HOST) == "finished"


def test_bad_records_are_warnings_and_copies_count_once(runs_dir: Path) -> None:
    write_run(runs_dir, "no-dataset", dataset=None)
    write_run(runs_dir, "bad-scales", scales=[2, 4])
    write_run(runs_dir, "copy/m1-s0", best_top1=76.0, last_top1=75.8)  # a copy: same experiment and seed
    report = build_report(runs_dir)
    warnings = "\n".join(report.warnings)
    assert "skipping broken/result.json" in warnings
    assert "skipping no-dataset/result.json: field 'dataset'" in warnings
    assert "skipping bad-scales/result.json: invalid scales" in warnings
    assert "counted once" in warnings
    assert len(report.warnings) == 4
    assert _row(report.rows, "sdd_kd_lskd", (1,)).seeds == (0, 1, 2)


def test_nothing_to_report_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="no runs under .*result.json"):
        build_report(tmp_path / "empty")
    with pytest.raises(ReportError, match="is not a folder"):
        build_report(tmp_path / "missing")
    result = CliRunner().invoke(app, ["report", str(tmp_path / "empty")])
    assert result.exit_code != 0
    assert result.output.count("no runs under") == 1 and "Traceback" not in result.output
    assert not list((tmp_path / "empty").iterdir())  # nothing written


def test_markdown_csv_json_files(runs_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = generate_report(runs_dir, out_dir=out)
    assert sorted(p.name for p in out.iterdir()) == ["report.csv", "report.json", "report.md"]  # no temp file
    assert set(report.files) == {out / "report.csv", out / "report.json", out / "report.md"}

    markdown = (out / "report.md").read_text()
    assert "best = top-1 at the best epoch" in markdown and "RepDistiller" in markdown
    assert "| resnet32x4→resnet8x4 | sdd_kd_lskd | (1) | 4 | 3 | finished | 76.20 ± 0.20 |" in markdown
    assert "| (1,2) | 4 | 2 | finished | 77.20 ± 0.28 | 77.00 ± 0.14 | +1.00 | — | — |" in markdown
    assert "| (1,2,4) | 4 | 0 | 1 running, 1 failed | — | — |" in markdown
    assert "## Runs not finished" in markdown
    assert "| crashed | failed | 3/4 | 70.00 |" in markdown
    assert "[rank0] non-finite loss at step 120 |" in markdown  # the error's first line
    assert "skipping broken/result.json" in markdown

    with (out / "report.csv").open(newline="") as file:
        rows = {(r["method"], r["M"]): r for r in csv.DictReader(file)}
    m12 = rows[("sdd_kd_lskd", "1-2")]
    assert float(m12["best_top1_mean"]) == pytest.approx(77.2) and m12["seeds"] == "0 1"
    assert float(m12["delta_best_top1_vs_M1"]) == pytest.approx(1.0) and m12["published_top1"] == ""
    assert float(rows[("sdd_kd", "1-2")]["published_top1"]) == 76.63
    assert rows[("vanilla", "")]["pair"] == "resnet8x4"

    document = json.loads((out / "report.json").read_text())
    assert {r["run_name"]: r["state"] for r in document["runs"]}["dead"] == "incomplete"
    m1 = next(r for r in document["rows"] if (r["method"], r["M"]) == ("sdd_kd_lskd", "1"))
    assert m1["seeds"] == [0, 1, 2] and m1["best_top1_std"] == pytest.approx(0.2)
    assert m1["published_column"] == "KD+LS" and m1["delta_best_top1_vs_published"] == pytest.approx(-0.42)
    assert any("broken" in w for w in document["warnings"])
    assert generate_report(runs_dir).files[0].parent == runs_dir  # --out defaults to RUNS_DIR


def test_cli_prints_each_format(runs_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner(env={"COLUMNS": "160"})
    out = tmp_path / "out"
    table = runner.invoke(app, ["report", str(runs_dir), "--out", str(out)])
    assert table.exit_code == 0, table.output
    assert "cifar100, 4 epochs" in table.stdout and "resnet32x4→resnet8x4" in table.stdout
    assert "76.20 ± 0.20" in table.stdout and "runs not finished" in table.stdout
    assert "[rank0] non-finite loss" in table.stdout  # cells are text, not rich markup
    assert "warning: skipping broken/result.json" in table.stderr
    as_json = runner.invoke(app, ["report", str(runs_dir), "--out", str(out), "--format", "json"])
    assert as_json.exit_code == 0 and len(json.loads(as_json.stdout)["rows"]) == 7  # stdout is pure JSON
    as_csv = runner.invoke(app, ["report", str(runs_dir), "--out", str(out), "--format", "csv"])
    assert as_csv.stdout == (out / "report.csv").read_text()
    as_md = runner.invoke(app, ["report", str(runs_dir), "--out", str(out), "--format", "md"])
    assert as_md.stdout.startswith("# sddkd report")
    bad = runner.invoke(app, ["report", str(runs_dir), "--format", "html"])
    assert bad.exit_code != 0 and "html" in bad.output


def test_plots_are_valid_pngs(runs_dir: Path, tmp_path: Path) -> None:
    image = pytest.importorskip("matplotlib.image")
    result = CliRunner().invoke(app, ["report", str(runs_dir), "--out", str(tmp_path / "out"), "--plots"])
    assert result.exit_code == 0, result.output
    pngs = sorted((tmp_path / "out" / "plots").iterdir())
    assert [p.name for p in pngs] == [
        "cifar100-resnet32x4_resnet8x4-by-epoch.png",
        "cifar100-resnet32x4_resnet8x4-top1-by-M.png",
    ]
    for png in pngs:
        assert png.read_bytes().startswith(PNG_SIGNATURE)
        pixels = image.imread(png)
        assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 200


def test_missing_matplotlib_is_one_line(runs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    result = CliRunner().invoke(app, ["report", str(runs_dir), "--out", str(tmp_path / "out"), "--plots"])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'sddkd[plots]'" in lines[0]
    assert not (tmp_path / "out").exists()  # nothing half-done


def test_report_never_imports_torch(runs_dir: Path) -> None:
    script = (
        "import sys\n"
        "import sddkd.report.render, sddkd.report.records, sddkd.report.anchors\n"
        "from typer.testing import CliRunner\n"
        "from sddkd.cli import app\n"
        f"result = CliRunner().invoke(app, ['report', {str(runs_dir)!r}, '--format', 'json'])\n"
        "assert result.exit_code == 0, result.output\n"
        "assert 'torch' not in sys.modules, 'report imported torch'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", script]
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr


@pytest.mark.parametrize(
    "args, top1",
    [
        (("cifar100", "sdd_kd", "resnet32x4", "resnet8x4", (1, 2, 4)), 75.74),  # SDD M ablation
        (("cifar100", "sdd_kd", "resnet32x4", "ShuffleV1", (1, 4)), 75.84),
        (("cifar100", "sdd_kd", "resnet32x4", "ShuffleV1", (1,)), 74.07),
        (("cifar100", "sdd_kd", "wrn_40_2", "vgg8", (1, 2, 4)), 74.44),  # SD-KD at the paper's M
        (("cifar100", "sdd_kd", "wrn_40_2", "vgg8", (1,)), 73.97),  # = KD
        (("cifar100", "sdd_kd", "wrn_40_2", "vgg8", (1, 2)), None),  # an M the paper did not run
        (("cifar100", "sdd_kd_lskd", "wrn_40_2", "MobileNetV2", (1,)), 69.23),  # = KD+LS
        (("cifar100", "sdd_kd_lskd", "wrn_40_2", "MobileNetV2", (1, 2, 4)), None),
        (("cifar100", "kd", "wrn_40_2", "MobileNetV2", (1,)), 68.87),
        (("cifar100", "kd_lskd", "resnet110", "resnet20", (1,)), 71.48),
        (("cifar100", "dkd", "resnet32x4", "MobileNetV2", (1,)), 68.98),
        (("cifar100", "dkd_lskd", "wrn_40_2", "wrn_16_2", (1,)), 76.39),
        (("cifar100", "sdd_dkd", "resnet32x4", "ShuffleV1", (1, 2, 4)), 77.30),
        (("cifar100", "sdd_dkd", "resnet32x4", "resnet8x4", (1, 2, 4)), None),  # not reported
        (("cifar100", "sdd_dkd_lskd", "resnet32x4", "ShuffleV2", (1,)), 77.37),  # = DKD+LS
        (("cifar100", "vanilla", None, "wrn_40_2", None), 75.61),
        (("cub200", "sdd_dkd", "vgg13", "MobileNetV2", (1, 2, 4)), 64.86),
        (("cub200", "vanilla", None, "ShuffleV1", None), 37.28),
        (("imagenet", "kd_lskd", "resnet50", "MobileNetV1", (1,)), 72.18),
        (("imagenet", "vanilla", None, "resnet34", None), 73.31),
        (("synthetic", "kd", "resnet32x4", "resnet8x4", (1,)), None),
    ],
)
def test_published_anchor_mapping(args: tuple, top1: float | None) -> None:
    anchor = lookup(*args)
    assert (anchor and anchor.top1) == top1


def test_imagenet_anchor_carries_top5() -> None:
    anchor = lookup("imagenet", "sdd_dkd", "resnet34", "resnet18", (1, 2, 4))
    assert anchor is not None
    assert (anchor.top1, anchor.top5, anchor.column) == (72.02, 91.21, "SD-DKD M=(1,2,4)")


def test_plots_draw_the_learned_temperature_of_ctkd_runs(runs_dir: Path, tmp_path: Path) -> None:
    image = pytest.importorskip("matplotlib.image")
    from sddkd.report.plots import read_method_metric
    from sddkd.report.records import load_runs

    for seed in (0, 1):
        run_dir = write_run(runs_dir, f"ctkd-s{seed}", method="ctkd", seed=seed)
        lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        with (run_dir / "metrics.jsonl").open("w") as metrics:
            for line in lines:
                learned = {"temperature": 2.0 + line["epoch"] + seed}
                metrics.write(json.dumps({**line, "method_metrics": learned}) + "\n")
    result = CliRunner().invoke(app, ["report", str(runs_dir), "--out", str(tmp_path / "out"), "--plots"])
    assert result.exit_code == 0, result.output
    png = tmp_path / "out" / "plots" / "cifar100-resnet32x4_resnet8x4-temperature.png"
    assert png.read_bytes().startswith(PNG_SIGNATURE) and image.imread(png).ndim == 3
    (ctkd,) = [run for run in load_runs(runs_dir)[0] if run.path.name == "ctkd-s1"]
    assert read_method_metric(ctkd, "temperature") == {1: 4.0, 2: 5.0, 3: 6.0, 4: 7.0}


@pytest.mark.parametrize(
    "bad",
    [{"best_top1": float("nan")}, {"last_top1": float("inf")}, {"best_top1": 10**400}, {"best_top5": [1, 2]},
     {"run_name": 7}, {"updated": "9999-12-31T23:59:59-14:00", "status": "running"}, {"updated": 12},
     {"updated": ["x"], "status": "failed"},
     {"error": {"not": "text"}, "status": "failed"}],
    ids=["nan", "1e309", "400-digit", "list-top5", "int-name", "year-9999", "int-updated", "list-updated",
         "dict-error"],
)  # fmt: skip
def test_one_bad_record_never_breaks_the_report(tmp_path: Path, bad: dict[str, object]) -> None:
    root = tmp_path / "logs"
    write_run(root, "good")
    write_run(root, "bad", seed=1)
    record = json.loads((root / "bad" / "result.json").read_text())
    (root / "bad" / "result.json").write_text(json.dumps({**record, **bad}))  # NaN, Infinity: as Python writes them
    runner = CliRunner(env={"COLUMNS": "160"})
    for fmt in ("table", "md", "csv", "json"):
        result = runner.invoke(app, ["report", str(root), "--out", str(tmp_path / "out"), "--format", fmt])
        assert result.exit_code == 0 and "Traceback" not in result.output, (fmt, result.output)
    report = build_report(root)
    assert "good" in {run.run_name for run in report.runs}
    numeric = next(iter(bad)) in ("best_top1", "last_top1", "best_top5")
    assert any("skipping bad/result.json" in w for w in report.warnings) == numeric, report.warnings


def test_the_legend_explains_ep_only_when_a_table_shows_it(tmp_path: Path) -> None:
    from rich.console import Console

    from sddkd.report.render import render_table

    def shown(root: Path) -> str:
        out = Console(file=io.StringIO(), width=160)
        out.print(render_table(build_report(root), width=160))
        return out.file.getvalue()

    write_run(tmp_path / "one", "a")
    text = shown(tmp_path / "one")
    assert "4 epochs" in text and "ep = epochs" not in text  # one length: in the title, no ep column
    write_run(tmp_path / "two", "a")
    write_run(tmp_path / "two", "b", epochs=8, epochs_done=8)
    text = shown(tmp_path / "two")
    assert " ep " in text and "ep = epochs" in text
