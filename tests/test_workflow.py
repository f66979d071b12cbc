"""The researcher's workflow through the CLI: config show/cp/validate, train --list/--dry-run/--name, sweeps into one
--out, and smoke (partial) runs that neither count as results nor block the full run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from sddkd.cli import app
from sddkd.config import config_hash, load_config
from sddkd.rundir.naming import run_name

runner = CliRunner()
# 4 classes x 4 images = one small step per epoch: the preset's 8 epochs take seconds, and the run is not partial
TINY = ["--set", "data.synthetic.num_classes=4", "--set", "data.synthetic.train_per_class=4",
        "--set", "data.synthetic.test_per_class=2", "--set", "engine.progress=false", "--device", "cpu"]  # fmt: skip


def invoke(*args: str):
    return runner.invoke(app, list(args))


# --- names ----------------------------------------------------------------------------------------------------


def test_run_names_say_what_differs_from_the_preset():
    base = load_config("synthetic/kd/res20_res8")
    assert run_name(base) == "synthetic-kd-resnet20_resnet8-M1-s0"
    hot = load_config("synthetic/kd/res20_res8", overrides=["method.temperature=8"])
    assert run_name(hot) == "synthetic-kd-resnet20_resnet8-M1-s0+temperature=8"
    two = load_config("synthetic/kd/res20_res8", overrides=["method.temperature=8", "optim.lr=0.1"])
    assert run_name(two) == "synthetic-kd-resnet20_resnet8-M1-s0+temperature=8+lr=0.1"
    many = load_config("synthetic/kd/res20_res8", overrides=[f"{k}=3" for k in ("method.temperature", "optim.lr",
                       "method.kd_weight", "method.ce_weight", "optim.grad_clip")])  # fmt: skip
    assert run_name(many).startswith("synthetic-kd-resnet20_resnet8-M1-s0+5changes-")
    # the seed, M and --dataset synthetic are part of the base name, not overrides
    assert run_name(load_config("res32x4_res8x4", scales="1,2", dataset="synthetic", overrides=["seed=3"])) == (
        "synthetic-sdd_kd_lskd-resnet32x4_resnet8x4-M1-2-s3"
    )


def test_smoke_runs_are_marked_partial_in_the_name():
    steps = load_config("synthetic/kd/res20_res8", overrides=["optim.max_steps=2"])
    assert run_name(steps) == "synthetic-kd-resnet20_resnet8-M1-s0-partial-2steps"
    short = load_config("synthetic/kd/res20_res8", overrides=["optim.epochs=3"])
    assert run_name(short) == "synthetic-kd-resnet20_resnet8-M1-s0-partial-e3of8"
    longer = load_config("synthetic/kd/res20_res8", overrides=["optim.epochs=16"])
    assert run_name(longer) == "synthetic-kd-resnet20_resnet8-M1-s0+epochs=16"  # longer is a change, not partial


def test_name_sets_the_directory_and_stays_out_of_the_hash():
    named = load_config("synthetic/kd/res20_res8", name="my-sweep.T4")
    assert run_name(named) == "my-sweep.T4"
    assert config_hash(named) == config_hash(load_config("synthetic/kd/res20_res8"))
    result = invoke("train", "-p", "synthetic/kd/res20_res8", "--name", "../escape", "--dry-run")
    assert result.exit_code == 2 and "name" in result.output


# --- config show / cp / validate ----------------------------------------------------------------------------------


def test_config_show_prints_loadable_yaml_with_identity_and_sources(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SDDKD_HOME", str(tmp_path / "home"))
    result = invoke("config", "show", "res32x4_res8x4", "--M", "1,2", "--set", "method.temperature=4",
                    "--out", str(tmp_path / "logs"))  # fmt: skip
    assert result.exit_code == 0, result.output
    cfg = load_config("res32x4_res8x4", scales="1,2", overrides=["method.temperature=4"])
    text = result.stdout
    assert f"# run name: {run_name(cfg)}" in text and f"# config hash: {config_hash(cfg)}" in text
    assert "# changed from the preset: method.temperature=4" in text
    assert f"teacher store, {tmp_path / 'home' / 'teachers' / 'cifar100' / 'resnet32x4.pth'}" in text
    assert "sddkd fetch-teachers --dataset cifar100 --arch resnet32x4" in text  # missing: says how to get it
    assert "not prepared: sddkd prepare-data cifar100" in text
    # the output is itself a config: it trains the same recipe under the same name
    saved = tmp_path / "shown.yaml"
    saved.write_text(text)
    again = load_config(str(saved))
    assert (config_hash(again), run_name(again)) == (config_hash(cfg), run_name(cfg))


def test_config_show_of_a_bad_override_is_one_line():
    result = invoke("config", "show", "res32x4_res8x4", "--set", "optim.lrr=1")
    assert result.exit_code == 2 and "unknown key 'optim.lrr'" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_config_cp_keeps_the_header_and_refuses_to_overwrite(tmp_path: Path):
    dest = tmp_path / "mine.yaml"
    result = invoke("config", "cp", "synthetic/kd/res20_res8", str(dest))
    assert result.exit_code == 0, result.output
    text = dest.read_text()
    assert text.startswith("# Embedded default: the KD baseline resnet20 -> resnet8 on generated data.\n")
    assert "preset: synthetic/kd/res20_res8" in text
    assert run_name(load_config(str(dest))) == "synthetic-kd-resnet20_resnet8-M1-s0"  # unchanged copy: same run
    dest.write_text(text.replace("temperature: 4.0", "temperature: 6.0"))
    assert run_name(load_config(str(dest))) == "synthetic-kd-resnet20_resnet8-M1-s0+temperature=6"  # an edit: named
    refused = invoke("config", "cp", "synthetic/kd/res20_res8", str(dest))
    assert refused.exit_code == 2 and "--force" in refused.output
    assert "temperature: 6.0" in dest.read_text()
    assert invoke("config", "cp", "synthetic/kd/res20_res8", str(dest), "--force").exit_code == 0


def test_config_validate_lists_every_problem_of_every_file(tmp_path: Path):
    good = tmp_path / "good.yaml"
    assert invoke("config", "cp", "synthetic/kd/res20_res8", str(good)).exit_code == 0
    bad = tmp_path / "bad.yaml"
    raw = yaml.safe_load(good.read_text())
    raw["optim"]["lrr"] = 0.1  # a typo
    raw["method"]["temperature"] = -1  # out of range
    bad.write_text(yaml.safe_dump(raw))
    wrong_arch = tmp_path / "arch.yaml"
    raw = yaml.safe_load(good.read_text())
    raw["student"] = "resnet9000"
    wrong_arch.write_text(yaml.safe_dump(raw))
    broken = tmp_path / "broken.yaml"
    broken.write_text("data: [unclosed\n")
    result = invoke("config", "validate", str(good), str(bad), str(wrong_arch), str(broken))
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert f"{good}: ok" in lines
    assert any(f"{bad}: unknown key 'optim.lrr'" in line for line in lines)
    assert any(f"{bad}: method.temperature: Input should be greater than 0" in line for line in lines)
    assert any(f"{wrong_arch}: student: unknown architecture 'resnet9000'" in line for line in lines)
    assert any(line.startswith(f"{broken}: ") and "not valid YAML" in line for line in lines)
    assert "3 of 4 file(s) have problems" in result.stderr
    assert invoke("config", "validate", str(good), "synthetic/vanilla/resnet8").exit_code == 0


def test_every_shipped_preset_validates():
    from sddkd.config import list_presets
    from sddkd.config_tools import file_problems

    problems = {name: file_problems(name) for name in list_presets()}
    assert not {name: found for name, found in problems.items() if found}


# --- train --list / --dry-run ---------------------------------------------------------------------------------


def test_list_shows_one_line_descriptions_and_filters():
    result = invoke("train", "--list", "synthetic/*")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 4
    assert lines[0].split()[0] == "synthetic/kd/res20_res8"
    assert lines[0].endswith("Embedded default: the KD baseline resnet20 -> resnet8 on generated data.")
    by_text = invoke("train", "--list", "res32x4_res8x4")
    assert by_text.exit_code == 0 and "cifar100/kd/res32x4_res8x4" in by_text.stdout
    assert "KD (Hinton et al.)" in by_text.stdout
    none = invoke("train", "--list", "nothing-like-this")
    assert none.exit_code == 2 and "no preset matches 'nothing-like-this'" in none.output
    stray = invoke("train", "res32x4_res8x4")
    assert stray.exit_code == 2 and "--preset" in stray.output


def test_dry_run_prints_the_resolved_run_and_does_no_work(tmp_path: Path):
    out = tmp_path / "logs"
    result = invoke("train", "-p", "synthetic/kd/res20_res8", "--set", "method.temperature=8", "--max-steps", "3",
                    "--out", str(out), "--dry-run")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "# run name: synthetic-kd-resnet20_resnet8-M1-s0+temperature=8-partial-3steps" in result.stdout
    assert "# config hash: " in result.stdout and "# data: generated in memory: 10 classes" in result.stdout
    assert "# partial run (3steps)" in result.stdout and "(new)" in result.stdout
    assert yaml.safe_load(result.stdout)["method"]["temperature"] == 8.0
    assert not out.exists()


# --- sweeps and smoke runs, trained for real ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teacher")
    result = invoke("train", "-p", "synthetic/vanilla/resnet8", "--max-steps", "1", "--out", str(out), *TINY)
    assert result.exit_code == 0, result.output
    (best,) = out.glob("*/checkpoints/best.pt")
    return best


def test_two_temperatures_into_one_out_both_train_and_report_as_two_rows(tiny_teacher: Path, tmp_path: Path):
    out = tmp_path / "sweep"
    for temperature in ("2", "8"):
        result = invoke("train", "-p", "synthetic/kd/res20_res8", "--teacher", str(tiny_teacher),
                        "--set", "teacher.arch=resnet8", "--set", f"method.temperature={temperature}",
                        "--out", str(out), *TINY)  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "already finished" not in result.output
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*/result.json"))]
    assert len(records) == 2 and all(r["status"] == "finished" and not r["partial"] for r in records)
    assert sorted(r["changed"]["method.temperature"] for r in records) == [2.0, 8.0]
    assert records[0]["recipe_key"] != records[1]["recipe_key"]

    report = invoke("report", str(out), "--format", "json")
    assert report.exit_code == 0, report.output
    rows = json.loads(report.stdout)["rows"]
    assert len(rows) == 2 and sorted(row["method.temperature"] for row in rows) == [2.0, 8.0]
    assert "repeats" not in report.output  # not folded into one row as "the same experiment"
    table = invoke("report", str(out))
    assert table.exit_code == 0
    header = next(line for line in table.stdout.splitlines() if "pair" in line and "method" in line)
    assert "T" in header.split() and "T = method.temperature" in table.stdout
    markdown = (out / "report.md").read_text()
    assert "| method.temperature |" in markdown


def test_a_max_steps_run_then_the_full_run_of_the_same_preset_both_run(tmp_path: Path):
    out = tmp_path / "logs"
    smoke = invoke("train", "-p", "synthetic/vanilla/resnet8", "--max-steps", "1", "--out", str(out), *TINY)
    assert smoke.exit_code == 0, smoke.output
    assert "(partial run: 1steps)" in smoke.stdout
    full = invoke("train", "-p", "synthetic/vanilla/resnet8", "--out", str(out), *TINY)
    assert full.exit_code == 0, full.output
    assert "already finished" not in full.output and "partial" not in full.stdout
    records = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/result.json")}
    assert len(records) == 2
    partial = [r for r in records.values() if r["partial"]]
    complete = [r for r in records.values() if not r["partial"]]
    assert len(partial) == 1 and partial[0]["partial_reason"] == "1steps" and partial[0]["epochs_done"] == 1
    assert len(complete) == 1 and complete[0]["epochs_done"] == 8 and complete[0]["status"] == "finished"

    default = invoke("report", str(out), "--format", "json")
    assert default.exit_code == 0
    rows = json.loads(default.stdout)["rows"]
    assert len(rows) == 1 and rows[0]["partial"] is False  # the smoke run is left out of the means
    assert "1 partial run(s) left out" in default.stderr
    included = invoke("report", str(out), "--format", "json", "--include-partial")
    assert sorted(row["partial"] for row in json.loads(included.stdout)["rows"]) == [False, True]


def test_only_partial_runs_is_one_clear_line(tmp_path: Path):
    out = tmp_path / "logs"
    assert (
        invoke("train", "-p", "synthetic/vanilla/resnet8", "--max-steps", "1", "--out", str(out), *TINY).exit_code == 0
    )
    result = invoke("report", str(out))
    assert result.exit_code == 2 and "--include-partial" in result.output
