"""`sddkd suite`: shipped suites expand to the runs of EXPERIMENTS.md, suite files are validated, and the scheduler
isolates runs, skips finished ones, resumes interrupted ones and waits for teachers. A tiny fake `train` child
(below) stands in for the engine, so these tests take seconds."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

import sddkd.suite.runner as suite_runner
from sddkd.cli import app
from sddkd.config import config_hash, load_config
from sddkd.rundir.state import read_run_state
from sddkd.suite.plan import (
    SuiteError,
    list_suites,
    load_suite,
    plan_rows,
    plan_suite,
    run_suite,
    status_rows,
    suite_command,
)
from sddkd.suite.runner import RESOLVED_CONFIG_FILE, resolve_devices, write_resolved_config

runner = CliRunner()

# What the engine's `train` does, as far as the suite can tell: result.json (running, then finished or failed) with
# the config hash, checkpoints/best.pt, a line on stdout; plus a JSON line per call in $FAKE_CALLS for the asserts.
FAKE_TRAIN = textwrap.dedent(
    """
    import fnmatch, json, os, re, socket, sys, time
    from pathlib import Path
    import yaml

    args = sys.argv[1:]
    config_path = Path(args[args.index("--preset") + 1])
    run_dir = config_path.parent
    text = config_path.read_text()
    config_hash = re.search(r"config hash ([0-9a-f]{12})", text).group(1)
    cfg = yaml.safe_load(text)
    name = run_dir.name
    started = time.time()

    def record(status):
        body = {"run_name": name, "config_hash": config_hash, "status": status, "pid": os.getpid(),
                "host": socket.gethostname(), "best_top1": 50.0}
        (run_dir / "result.json.tmp").write_text(json.dumps(body))
        os.replace(run_dir / "result.json.tmp", run_dir / "result.json")

    def log_call(outcome):
        line = json.dumps({"run": name, "argv": args, "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
                           "teacher_checkpoint": (cfg.get("teacher") or {}).get("checkpoint"),
                           "start": started, "end": time.time(), "outcome": outcome})
        with open(os.environ["FAKE_CALLS"], "a") as calls:
            calls.write(line + "\\n")

    def matches(variable):
        return any(fnmatch.fnmatchcase(name, p) for p in os.environ.get(variable, "").split() if p)

    record("running")
    print(f"training {name}", flush=True)
    if matches("FAKE_HANG"):
        log_call("hang")
        time.sleep(120)
    time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
    if matches("FAKE_FAIL"):
        record("failed")
        log_call("failed")
        print(f"error: boom in {name}", file=sys.stderr)
        sys.exit(1)
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    (run_dir / "checkpoints" / "best.pt").write_bytes(b"weights")
    record("finished")
    log_call("done")
    """
)

CIFAR100_TABLE = {  # EXPERIMENTS.md "Suites": teacher -> student: M settings
    ("resnet32x4", "resnet8x4"): [(1,), (1, 2), (1, 2, 4), (1, 4)],
    ("resnet32x4", "ShuffleV1"): [(1,), (1, 2), (1, 2, 4), (1, 4)],
    ("wrn_40_2", "ShuffleV1"): [(1,), (1, 2), (1, 2, 4)],
    ("resnet32x4", "MobileNetV2"): [(1,), (1, 2), (1, 2, 4)],
    ("wrn_40_2", "vgg8"): [(1,), (1, 2), (1, 2, 4)],
    ("wrn_40_2", "MobileNetV2"): [(1,), (1, 2), (1, 2, 4)],
    ("wrn_40_2", "wrn_16_2"): [(1,), (1, 2), (1, 2, 4)],
}
CUB200_PAIRS = [("resnet32x4", "resnet8x4"), ("resnet32x4", "ShuffleV1"), ("resnet32x4", "MobileNetV2"),
                ("wrn_40_2", "ShuffleV1")]  # fmt: skip


def dry_run_json(*args):
    result = runner.invoke(app, ["suite", *args, "--dry-run", "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def expanded(rows):
    return Counter((r["teacher"], r["student"], tuple(r["scales"])) for r in rows)


def test_cifar100_suite_is_the_23_runs_of_the_table(tmp_path):
    rows = dry_run_json("cifar100", "--out", str(tmp_path / "logs"))
    expected = Counter({(t, s, m): 1 for (t, s), ms in CIFAR100_TABLE.items() for m in ms})
    assert len(rows) == 23 and expanded(rows) == expected
    assert {(r["dataset"], r["method"], r["seed"], r["epochs"]) for r in rows} == {("cifar100", "sdd_kd_lskd", 0, 240)}
    assert len({r["run_name"] for r in rows}) == len({r["config_hash"] for r in rows}) == 23
    assert all(r["depends_on"] == [] and r["teacher_checkpoint"] == "store" for r in rows)
    assert not (tmp_path / "logs").exists(), "a dry run starts nothing"


def test_cub200_suite_is_the_12_runs():
    rows = dry_run_json("cub200")
    expected = Counter({(t, s, m): 1 for t, s in CUB200_PAIRS for m in [(1,), (1, 2), (1, 2, 4)]})
    assert len(rows) == 12 and expanded(rows) == expected
    assert {(r["dataset"], r["method"]) for r in rows} == {("cub200", "sdd_kd_lskd")}


def test_other_shipped_suites():
    assert set(list_suites()) >= {"cifar100", "cub200", "smoke", "baselines", "cub200-baselines", "imagenet"}
    baselines = plan_rows(plan_suite(load_suite("baselines")))
    by_method = {m: {(r["teacher"], r["student"]) for r in baselines if r["method"] == m} for m in ("kd", "sdd_kd")}
    assert by_method["kd"] == by_method["sdd_kd"] == set(CIFAR100_TABLE)
    vanilla = {r["student"] for r in baselines if r["method"] == "vanilla"}
    assert vanilla == {s for _, s in CIFAR100_TABLE} and len(baselines) == 19
    imagenet = plan_rows(plan_suite(load_suite("imagenet")))
    assert {(r["teacher"], r["student"], tuple(r["scales"])) for r in imagenet} == {
        ("resnet34", "resnet18", (1, 2, 4)), ("resnet50", "MobileNetV1", (1, 2, 4))}  # fmt: skip
    assert len(plan_suite(load_suite("cub200-baselines")).runs) == 11


def test_smoke_suite_trains_its_teacher_first_and_distils_from_its_best_checkpoint(tmp_path):
    rows = dry_run_json("smoke", "--out", str(tmp_path))
    teacher, students = rows[0], rows[1:]
    assert (teacher["run_name"], teacher["trains_teacher"]) == ("synthetic-vanilla-resnet20-s0", True)
    best = str(tmp_path / teacher["run_name"] / "checkpoints" / "best.pt")
    distilled = [r for r in students if r["teacher"]]
    assert {(r["method"], tuple(r["scales"])) for r in distilled} == {
        ("sdd_kd_lskd", (1,)), ("sdd_kd_lskd", (1, 2)), ("sdd_kd_lskd", (1, 2, 4)), ("kd", (1,))}  # fmt: skip
    assert all(r["depends_on"] == [teacher["run_name"]] and r["teacher_checkpoint"] == best for r in distilled)
    assert [(r["method"], r["student"]) for r in students if not r["teacher"]] == [("vanilla", "resnet8")]
    assert {r["dataset"] for r in rows} == {"synthetic"}


def test_seeds_only_dataset_and_epochs_apply_to_every_run():
    rows = dry_run_json("cifar100", "--seeds", "2", "--only", "*resnet8x4*", "--dataset", "synthetic", "--epochs", "1")
    assert len(rows) == 8 and {r["seed"] for r in rows} == {0, 1}
    assert {(r["dataset"], r["epochs"], r["student"]) for r in rows} == {("synthetic", 1, "resnet8x4")}
    by_preset = dry_run_json("cifar100", "--only", "*/wrn40_2_vgg8")
    assert {r["student"] for r in by_preset} == {"vgg8"} and len(by_preset) == 3


def test_dry_run_table_lists_runs_and_dependencies():
    result = runner.invoke(app, ["suite", "smoke", "--dry-run"], terminal_width=120)
    assert result.exit_code == 0, result.output
    assert "synthetic-sdd_kd_lskd-resnet20_resnet8-M1-2-4-s0" in result.output and "#1" in result.output


def test_tables_stay_whole_at_80_columns(tmp_path):
    """No ellipsis at 80 columns: the run names fold, states, epochs, accuracies, numbers and hashes stay whole."""
    plan = plan_suite(load_suite("cifar100"), out=tmp_path)
    finished = plan.runs[0]
    (tmp_path / finished.name).mkdir()
    (tmp_path / finished.name / "result.json").write_text(json.dumps(
        {"config_hash": finished.config_hash, "status": "finished", "epochs": 240, "epochs_done": 240,
         "best_top1": 76.41, "last_top1": 76.02, "host": "gpu-node-with-a-long-name-7"}))  # fmt: skip
    status = runner.invoke(app, ["suite", "cifar100", "--status", "--out", str(tmp_path)], env={"COLUMNS": "80"})
    assert status.exit_code == 0, status.output
    lines = status.output.splitlines()
    assert max(map(len, lines)) <= 80
    header = next(line for line in lines if line.lstrip().startswith("run "))
    assert all(f" {word}" in header for word in ("state", "epochs", "best", "last")), header
    assert "finished" in status.output and "240/240" in status.output and "76.41" in status.output
    assert "76.02" in status.output and "-/240" in status.output
    joined = "".join(line.strip().split(" ")[0] for line in lines)
    assert finished.name in joined  # the folded name reads whole
    dry = runner.invoke(app, ["suite", "cifar100", "--dry-run", "--out", str(tmp_path)], env={"COLUMNS": "80"})
    numbers = [line.split()[0] for line in dry.output.splitlines() if any(r.config_hash in line for r in plan.runs)]
    assert numbers == [str(i) for i in range(1, 24)], dry.output
    assert all(run.config_hash in dry.output for run in plan.runs) and "…" not in dry.output


def test_analyze_prints_its_folder_whole_at_80_columns(tmp_path):
    from types import SimpleNamespace

    from sddkd.cli.analyze import print_analysis

    folder = tmp_path / "logs" / ("synthetic-sdd_kd_lskd-resnet20_resnet8-M1-2-4-s0" * 2) / "analysis"
    summary = {"top1": {"teacher": 60.0, "student": 55.0}, "agreement": {"top1": 0.8},
               "correlation_difference": {"mean": 0.01},
               "calibration": {"teacher": {"ece": 0.02}, "student": {"ece": 0.03}}}  # fmt: skip
    out = StringIO()
    print_analysis(Console(file=out, width=80), SimpleNamespace(summary=summary, files=[1, 2], out_dir=folder))
    assert str(folder) in out.getvalue().replace("\n", " ").split("into ")[-1]


def test_unknown_suite_names_close_matches():
    result = runner.invoke(app, ["suite", "cifar10", "--dry-run"])
    assert result.exit_code == 2
    assert "unknown suite 'cifar10'" in result.output and "did you mean cifar100" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "body, message",
    [
        (
            "runs:\n  - preset: synthetic/kd/res20_res8\n",
            "unknown key 'runs.0.preset' (allowed: M, presets, seeds, set)",
        ),
        ("run:\n  - presets: synthetic/kd/res20_res8\n", "unknown key 'run'"),
        ("teachers: fetch\nruns:\n  - presets: synthetic/kd/res20_res8\n", "teachers"),
        ("runs:\n  - presets: synthetic/sdd_kd_lskd/res20_res8\n    M: ['1', '2,4']\n", "starting with 1"),
        ("runs:\n  - presets: synthetic/kd/res20_res9\n", "unknown preset 'synthetic/kd/res20_res9'"),
        ("runs:\n  - presets: synthetic/vanilla/resnet8\n    M: [1]\n", "has no M"),
        ("runs:\n  - presets: synthetic/kd/res20_res8\n    set: [optim.lrr=1]\n", "unknown key 'optim.lrr'"),
        ("runs: [", "not valid YAML"),
        ("set: seed=1\nruns:\n  - presets: synthetic/kd/res20_res8\n", "seeds are listed with `seeds: [0, 1]`"),
    ],
)
def test_suite_file_errors_are_one_clear_line(tmp_path, body, message):
    path = tmp_path / "mine.yaml"
    path.write_text(body)
    result = runner.invoke(app, ["suite", str(path), "--dry-run"], terminal_width=400)
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output


@pytest.mark.parametrize(
    "m, expected",
    [
        ("[1, 2, 4]", [(1, 2, 4)]),
        ("'1,2'", [(1, 2)]),
        ("['1', '1,4']", [(1,), (1, 4)]),
        ("[[1], [1, 2]]", [(1,), (1, 2)]),
    ],
)
def test_m_lists_several_settings_or_one(tmp_path, m, expected):
    source = suite_file(tmp_path, f"runs:\n  - presets: synthetic/sdd_kd_lskd/res20_res8\n    M: {m}\n")
    assert [run.config.scales for run in plan_suite(source, out=tmp_path).runs] == expected


def test_suite_file_with_local_preset_seeds_and_overrides(tmp_path):
    (tmp_path / "tiny.yaml").write_text(load_config_text("synthetic/vanilla/resnet8"))
    path = tmp_path / "mine.yaml"
    path.write_text("set: [optim.epochs=2]\nseeds: [3]\nruns:\n  - presets: tiny.yaml\n    set: optim.lr=0.2\n")
    (run,) = plan_suite(load_suite(str(path)), out=tmp_path).runs
    assert (run.config.seed, run.config.optim.epochs, run.config.optim.lr) == (3, 2, 0.2)
    assert run.name == "synthetic-vanilla-resnet8-s3"


def load_config_text(name):
    from sddkd.config import resolve_preset

    return resolve_preset(name).read_text()


def test_resolved_config_file_is_exactly_the_planned_run(tmp_path):
    plan = plan_suite(load_suite("smoke"), out=tmp_path, epochs=2)
    for run in plan.runs:
        cfg = load_config(str(write_resolved_config(plan, run)))
        assert cfg == run.config and config_hash(cfg) == run.config_hash


# --- running, with the fake child ------------------------------------------------------------------------------


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """The fake train command: `launcher` for run_suite; `calls()` reads what each child saw."""
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    calls_file = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_CALLS", str(calls_file))
    for variable in ("FAKE_FAIL", "FAKE_HANG", "FAKE_SLEEP"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(suite_runner, "default_store", FakeStore)  # never the user's teacher store

    class Fake:
        launcher = [sys.executable, str(script)]

        @staticmethod
        def calls():
            if not calls_file.exists():
                return []
            return [json.loads(line) for line in calls_file.read_text().splitlines()]

        @staticmethod
        def reset():
            calls_file.unlink(missing_ok=True)

    return Fake


def suite_file(tmp_path, body):
    path = tmp_path / "tiny-suite.yaml"
    path.write_text(textwrap.dedent(body))
    return load_suite(str(path))


class FakeStore:
    def __init__(self, stored=()):
        self.stored = {key: Path("/store") / "/".join(key) for key in stored}
        self.registered = []

    def find_teacher(self, dataset, arch):
        return self.stored.get((dataset, arch))

    def register_teacher(self, dataset, arch, checkpoint, *, origin, accuracy=None):
        assert Path(checkpoint).is_file()
        self.registered.append((dataset, arch, Path(checkpoint), accuracy))
        self.stored[(dataset, arch)] = Path(checkpoint)
        return Path(checkpoint)


THREE_SEEDS = "seeds: [0, 1, 2]\nruns:\n  - presets: synthetic/vanilla/resnet8\n"


def test_failure_is_isolated_and_a_finished_suite_runs_nothing(tmp_path, fake, monkeypatch):
    plan = plan_suite(suite_file(tmp_path, THREE_SEEDS), out=tmp_path / "logs")
    monkeypatch.setenv("FAKE_FAIL", "*-s1")
    outcome = run_suite(plan, devices="cpu", per_device=2, launcher=fake.launcher)
    assert not outcome.ok and [(p.run.name, p.returncode) for p in outcome.failures] == [
        ("synthetic-vanilla-resnet8-s1", 1)]  # fmt: skip
    assert "exit 1: error: boom in synthetic-vanilla-resnet8-s1" in outcome.failures[0].note
    assert sorted(c["outcome"] for c in fake.calls()) == ["done", "done", "failed"]
    first = fake.calls()[0]
    assert first["argv"][:2] == ["train", "--preset"] and first["argv"][2].endswith(RESOLVED_CONFIG_FILE)
    assert ["--resume", "--device", "cpu"] == first["argv"][-3:] and first["cuda"] == ""
    log = (tmp_path / "logs" / "synthetic-vanilla-resnet8-s1" / "stdout.log").read_text()
    assert "training synthetic-vanilla-resnet8-s1" in log and "boom" in log  # stdout and stderr both land there

    monkeypatch.delenv("FAKE_FAIL")
    fake.reset()
    outcome = run_suite(plan, devices="cpu", launcher=fake.launcher)
    assert outcome.ok and [c["run"] for c in fake.calls()] == ["synthetic-vanilla-resnet8-s1"]
    assert Counter(p.status for p in outcome.runs) == {"skipped": 2, "done": 1}

    fake.reset()
    outcome = run_suite(plan, devices="cpu", launcher=fake.launcher)
    assert outcome.ok and fake.calls() == [] and {p.status for p in outcome.runs} == {"skipped"}


def test_command_reports_failures_and_exits_non_zero(tmp_path, fake, monkeypatch):
    path = tmp_path / "three.yaml"
    path.write_text(THREE_SEEDS)
    monkeypatch.setenv("FAKE_FAIL", "*-s2")
    monkeypatch.setattr(suite_runner, "default_launcher", lambda: tuple(fake.launcher))
    result = runner.invoke(app, ["suite", str(path), "--out", str(tmp_path / "logs"), "--devices", "cpu"],
                           terminal_width=200)  # fmt: skip
    assert result.exit_code == 1
    assert "2 done, 1 failed" in result.output
    assert "failed: synthetic-vanilla-resnet8-s2: exit 1: error: boom" in result.output
    status = runner.invoke(app, ["suite", str(path), "--out", str(tmp_path / "logs"), "--status", "--format", "json"])
    assert [r["state"] for r in json.loads(status.stdout)] == ["finished", "finished", "failed"]


def test_runs_spread_over_gpus_k_per_device(tmp_path, fake, monkeypatch):
    body = "seeds: [0, 1, 2, 3]\nruns:\n  - presets: synthetic/vanilla/resnet8\n"
    plan = plan_suite(suite_file(tmp_path, body), out=tmp_path / "logs")
    monkeypatch.setenv("FAKE_SLEEP", "0.3")
    assert run_suite(plan, devices="0,1", per_device=1, launcher=fake.launcher).ok
    calls = fake.calls()
    assert all(c["argv"][-2:] == ["--device", "cuda"] for c in calls)
    by_device = {d: sorted((c["start"], c["end"]) for c in calls if c["cuda"] == d) for d in ("0", "1")}
    assert [len(v) for v in by_device.values()] == [2, 2]
    for spans in by_device.values():  # one run at a time on each device
        assert spans[0][1] <= spans[1][0]


def test_students_wait_for_the_teacher_run_and_read_its_best_checkpoint(tmp_path, fake, monkeypatch):
    body = """
        teachers: train
        runs:
          - presets: synthetic/sdd_kd_lskd/res20_res8
            M: ["1", "1,2"]
          - presets: synthetic/vanilla/resnet8
    """
    plan = plan_suite(suite_file(tmp_path, body), out=tmp_path / "logs")
    monkeypatch.setenv("FAKE_SLEEP", "0.3")  # the teacher is still running when free slots could start students
    assert run_suite(plan, devices="cpu", per_device=4, launcher=fake.launcher, store=FakeStore()).ok
    calls = {c["run"]: c for c in fake.calls()}
    teacher = calls.pop("synthetic-vanilla-resnet20-s0")
    best = str(tmp_path / "logs" / "synthetic-vanilla-resnet20-s0" / "checkpoints" / "best.pt")
    students = [c for c in calls.values() if c["teacher_checkpoint"]]
    assert len(students) == 2 and all(c["teacher_checkpoint"] == best for c in students)
    assert all(c["start"] >= teacher["end"] for c in students)


def test_a_failed_teacher_blocks_its_students_only(tmp_path, fake, monkeypatch):
    body = """
        teachers: train
        runs:
          - presets: [synthetic/kd/res20_res8, synthetic/vanilla/resnet8]
    """
    plan = plan_suite(suite_file(tmp_path, body), out=tmp_path / "logs")
    monkeypatch.setenv("FAKE_FAIL", "*resnet20-s0")
    out = StringIO()
    code = suite_command(str(tmp_path / "tiny-suite.yaml"), console=Console(file=out, width=200), out=plan.out,
                         devices="cpu", per_device=3, launcher=fake.launcher, store=FakeStore())  # fmt: skip
    assert code == 1
    assert {c["run"] for c in fake.calls()} == {"synthetic-vanilla-resnet20-s0", "synthetic-vanilla-resnet8-s0"}
    text = out.getvalue()
    assert "blocked: synthetic-kd-resnet20_resnet8-M1-s0: teacher run synthetic-vanilla-resnet20-s0" in text


def test_train_teachers_trains_only_missing_teachers_and_registers_them(tmp_path, fake):
    body = "runs:\n  - presets: [synthetic/kd/res20_res8, synthetic/sdd_kd_lskd/res20_res8]\n"
    source = suite_file(tmp_path, body)
    store = FakeStore()
    with pytest.raises(SuiteError, match=r"store lacks \(synthetic/resnet20\).*--train-teachers"):
        run_suite(plan_suite(source, out=tmp_path / "logs"), devices="cpu", launcher=fake.launcher, store=store)
    assert fake.calls() == [], "nothing starts when a teacher is missing"

    plan = plan_suite(source, out=tmp_path / "logs", train_teachers=True, store=store)
    assert [r.name for r in plan.runs if r.trains_teacher] == ["synthetic-vanilla-resnet20-s0"]
    assert run_suite(plan, devices="cpu", per_device=2, launcher=fake.launcher, store=store).ok
    best = tmp_path / "logs" / "synthetic-vanilla-resnet20-s0" / "checkpoints" / "best.pt"
    assert store.registered == [("synthetic", "resnet20", best, 50.0)]

    again = plan_suite(source, out=tmp_path / "logs", train_teachers=True, store=store)
    assert not any(r.trains_teacher or r.depends_on for r in again.runs), "the store has it now"
    assert {row["teacher_checkpoint"] for row in plan_rows(again)} == {"store"}


def test_the_smoke_suite_registers_its_teacher_where_the_store_has_none(tmp_path, fake):
    """After `sddkd suite smoke`, `sddkd train` of a synthetic distillation preset finds the teacher by name."""
    store = FakeStore()
    plan = plan_suite(load_suite("smoke"), out=tmp_path / "logs", store=store)
    assert run_suite(plan, devices="cpu", per_device=3, launcher=fake.launcher, store=store).ok
    best = tmp_path / "logs" / "synthetic-vanilla-resnet20-s0" / "checkpoints" / "best.pt"
    assert store.registered == [("synthetic", "resnet20", best, 50.0)]

    kept = FakeStore(stored=[("synthetic", "resnet20")])  # a teacher of the user's own is never replaced
    plan = plan_suite(load_suite("smoke"), out=tmp_path / "again", store=kept)
    outcome = run_suite(plan, devices="cpu", per_device=3, launcher=fake.launcher, store=kept)
    assert outcome.ok and kept.registered == []


def test_a_killed_suite_resumes_the_unfinished_run(tmp_path, fake):
    """SIGTERM stops the suite and its child; the next invocation skips what finished and resumes the rest."""
    path = tmp_path / "two.yaml"
    path.write_text("seeds: [0, 1]\nruns:\n  - presets: synthetic/vanilla/resnet8\n")
    out = tmp_path / "logs"
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(f"""
        from sddkd.suite.plan import load_suite, plan_suite, run_suite
        outcome = run_suite(plan_suite(load_suite({str(path)!r}), out={str(out)!r}), devices="cpu",
                            launcher={fake.launcher!r})
        raise SystemExit(130 if outcome.interrupted else 0)
    """))  # fmt: skip
    env = {**os.environ, "FAKE_HANG": "*-s1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    suite = subprocess.Popen([sys.executable, str(driver)], env=env)
    hung = out / "synthetic-vanilla-resnet8-s1" / "result.json"
    deadline = time.monotonic() + 20
    while not (hung.exists() and any(c["outcome"] == "hang" for c in fake.calls())):
        assert time.monotonic() < deadline and suite.poll() is None, "the hanging run never started"
        time.sleep(0.05)
    suite.send_signal(signal.SIGTERM)
    assert suite.wait(timeout=20) == 130
    child_pid = json.loads(hung.read_text())["pid"]
    assert read_run_state(hung.parent, plan_suite(load_suite(str(path)), out=out).runs[1].config_hash).state == (
        "incomplete"), "the child was stopped with the suite"  # fmt: skip
    with pytest.raises(ProcessLookupError):
        os.kill(child_pid, 0)

    fake.reset()
    outcome = run_suite(plan_suite(load_suite(str(path)), out=out), devices="cpu", launcher=fake.launcher)
    assert outcome.ok and [(c["run"], "--resume" in c["argv"]) for c in fake.calls()] == [
        ("synthetic-vanilla-resnet8-s1", True)]  # fmt: skip


def test_run_directory_states(tmp_path):
    def write(**record):
        (tmp_path / "result.json").write_text(json.dumps({"config_hash": "abc", "host": os.uname().nodename, **record}))
        return read_run_state(tmp_path, "abc").state

    assert read_run_state(tmp_path, "abc").state == "new"
    assert write(status="finished") == "finished"
    assert write(status="finished", config_hash="other") == "conflict"
    assert write(status="running", config_hash="other") == "conflict"
    assert write(status="failed") == "failed"
    assert write(status="running", pid=os.getpid()) == "incomplete"  # a live (reused) pid, but no lock
    from sddkd.rundir.lock import acquire_run_lock

    lock = acquire_run_lock(tmp_path)
    assert write(status="running", pid=os.getpid()) == "running"
    lock.release()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert write(status="running", pid=dead.pid) == "incomplete"
    (tmp_path / "result.json").write_text("{not json")
    assert read_run_state(tmp_path, "abc").state == "incomplete"
    assert status_rows(plan_suite(load_suite("imagenet"), out=tmp_path))[0]["state"] == "new"


def test_runs_running_elsewhere_or_holding_another_recipe_are_not_started(tmp_path, fake):
    plan = plan_suite(
        suite_file(tmp_path, "seeds: [0, 1]\nruns:\n  - presets: synthetic/vanilla/resnet8\n"), out=tmp_path
    )
    from sddkd.rundir.lock import acquire_run_lock

    for run, record in zip(plan.runs, [{"config_hash": plan.runs[0].config_hash, "status": "running"},
                                       {"config_hash": "0123456789ab", "status": "finished"}]):  # fmt: skip
        (tmp_path / run.name).mkdir()
        (tmp_path / run.name / "result.json").write_text(
            json.dumps({**record, "pid": os.getpid(), "host": os.uname().nodename})
        )
    owner = acquire_run_lock(tmp_path / plan.runs[0].name)
    outcome = run_suite(plan, devices="cpu", launcher=fake.launcher)
    owner.release()
    assert fake.calls() == [] and outcome.runs[0].status == "elsewhere"  # neither trained nor counted as failed
    assert "running elsewhere (process" in outcome.runs[0].note
    (conflict,) = outcome.failures
    assert "holds another recipe (config hash 0123456789ab); remove that directory" in conflict.note


def test_a_run_whose_directory_is_locked_is_left_to_its_owner(tmp_path, fake):
    from sddkd.rundir.lock import acquire_run_lock

    plan = plan_suite(suite_file(tmp_path, "runs:\n  - presets: synthetic/vanilla/resnet8\n"), out=tmp_path)
    lock = acquire_run_lock(tmp_path / plan.runs[0].name)  # a `sddkd train` elsewhere, no record written yet
    try:
        outcome = run_suite(plan, devices="cpu", launcher=fake.launcher)
    finally:
        lock.release()
    assert fake.calls() == [] and outcome.runs[0].status == "elsewhere" and outcome.ok
    assert f"process {os.getpid()} on" in outcome.runs[0].note


def test_a_dead_run_whose_pid_was_reused_is_resumed(tmp_path, fake):
    plan = plan_suite(suite_file(tmp_path, "runs:\n  - presets: synthetic/vanilla/resnet8\n"), out=tmp_path)
    (tmp_path / plan.runs[0].name).mkdir()
    (tmp_path / plan.runs[0].name / "result.json").write_text(json.dumps(
        {"config_hash": plan.runs[0].config_hash, "status": "running", "pid": os.getpid(),
         "host": os.uname().nodename}))  # fmt: skip  # SIGKILLed; its pid now names this (unrelated) process
    outcome = run_suite(plan, devices="cpu", launcher=fake.launcher)
    assert [("--resume" in c["argv"]) for c in fake.calls()] == [True] and outcome.runs[0].status != "elsewhere"


def test_a_run_that_cannot_start_fails_alone(tmp_path):
    plan = plan_suite(suite_file(tmp_path, THREE_SEEDS), out=tmp_path / "logs")
    outcome = run_suite(plan, devices="cpu", launcher=[str(tmp_path / "no-such-python")])
    assert len(outcome.failures) == 3 and all("could not start" in p.note for p in outcome.failures)


def test_devices(monkeypatch):
    assert resolve_devices("0,1") == ("0", "1") and resolve_devices("cpu") == ("cpu",)
    for bad in ("0,0", "cpu,0", "0,,1"):
        with pytest.raises(SuiteError, match="--devices"):
            resolve_devices(bad)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert resolve_devices(None) == ("cpu",)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert resolve_devices(None) == ("2", "3")
