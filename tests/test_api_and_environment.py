"""The Python API (`from sddkd import load_config, train, list_presets`), the plug-and-play docs page, and the
environment variables that set default locations (SDDKD_DATA, SDDKD_HOME, XDG_CACHE_HOME)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import sddkd
from sddkd.config import load_config

REPO = Path(__file__).resolve().parent.parent


def _run(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, env=environment, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def test_import_sddkd_and_the_api_names_stay_torch_free():
    script = (
        "import sys\n"
        "from sddkd import load_config, list_presets\n"
        "import sddkd\n"
        "assert 'synthetic/kd/res20_res8' in list_presets()\n"
        "load_config('synthetic/kd/res20_res8')\n"
        "assert callable(sddkd.train)\n"
        "assert 'torch' not in sys.modules, 'the API imported torch before training'\n"
    )
    completed = _run(script)
    assert completed.returncode == 0, completed.stderr


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        sddkd.trian  # noqa: B018


def test_train_from_python_returns_the_record(tmp_path: Path):
    from sddkd import train

    tiny = ["data.synthetic.num_classes=4", "data.synthetic.train_per_class=4", "data.synthetic.test_per_class=2",
            "engine.progress=false", "engine.device=cpu"]  # fmt: skip
    record = train("synthetic/vanilla/resnet8", out=tmp_path, overrides=[*tiny, "optim.max_steps=1"])
    assert record["status"] == "finished" and record["partial"] is True
    assert (tmp_path / record["run_name"] / "result.json").is_file()
    cfg = load_config("synthetic/vanilla/resnet8", overrides=[*tiny, "optim.max_steps=1"])
    named = train(cfg, out=tmp_path, name="from-python")
    assert named["run_name"] == "from-python" and (tmp_path / "from-python" / "result.json").is_file()
    with pytest.raises(TypeError, match="load_config"):
        train(cfg, out=tmp_path, overrides=["seed=1"])


def test_the_plug_and_play_page_runs_as_written():
    """The page's one Python block is run verbatim in a fresh interpreter: the docs cannot rot."""
    page = (REPO / "docs" / "plug_and_play.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert len(blocks) == 1
    code = blocks[0]
    assert "sdd_kd_loss" in code and "region_logits" in code and "sddkd.engine" not in code
    completed = _run(code)
    assert completed.returncode == 0, completed.stderr
    match = re.search(r"step 19: ce ([\d.]+) sdd-kd ([\d.]+)", completed.stdout)
    assert match and all(float(v) >= 0 for v in match.groups()), completed.stdout


def test_sddkd_data_sets_the_default_data_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("SDDKD_DATA", str(tmp_path / "datasets"))
    assert load_config("res32x4_res8x4").data.root == str(tmp_path / "datasets")
    assert load_config("res32x4_res8x4", overrides=["data.root=elsewhere"]).data.root == "elsewhere"
    monkeypatch.delenv("SDDKD_DATA")
    assert load_config("res32x4_res8x4").data.root == "data"


def test_prepare_data_uses_sddkd_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from typer.testing import CliRunner

    from sddkd.cli import app

    seen = {}

    def fake_prepare(dataset, root, **kwargs):
        seen["root"] = root
        raise sddkd.errors.UserError("stop here")

    monkeypatch.setattr("sddkd.data.prepare.prepare_dataset", fake_prepare)
    monkeypatch.setenv("SDDKD_DATA", str(tmp_path / "datasets"))
    result = CliRunner().invoke(app, ["prepare-data", "cifar100"])
    assert result.exit_code == 2 and seen["root"] == tmp_path / "datasets"


def test_the_teacher_store_honours_xdg_cache_home_after_sddkd_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from sddkd.teachers import store as teachers

    monkeypatch.delenv("SDDKD_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert teachers.store_path("cifar100", "resnet56") == tmp_path / "xdg" / "sddkd" / "teachers" / "cifar100" / (
        "resnet56.pth"
    )
    monkeypatch.setenv("SDDKD_HOME", str(tmp_path / "home"))  # SDDKD_HOME still comes first
    assert teachers.sddkd_home() == tmp_path / "home"
    monkeypatch.delenv("SDDKD_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # invalid per the XDG spec: ignored
    assert teachers.sddkd_home() == Path.home() / ".cache" / "sddkd"


@pytest.mark.parametrize("below", ["", "sub"], ids=["a-file", "under-a-file"])
def test_an_sddkd_home_that_is_a_file_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, below: str):
    from typer.testing import CliRunner

    from sddkd.cli import app

    (tmp_path / "home").write_text("not a folder\n")
    monkeypatch.setenv("SDDKD_HOME", str(tmp_path / "home" / below) if below else str(tmp_path / "home"))
    source = tmp_path / "teacher.pth"
    source.write_bytes(b"x")
    for args in (
        ["fetch-teachers", "--dataset", "cifar100", "--arch", "resnet56", "--source", str(source)],
        ["train", "-p", "synthetic/kd/res20_res8", "--device", "cpu", "--out", str(tmp_path / "logs")],
    ):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        (line,) = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
        assert "is a file; point SDDKD_HOME at a folder" in line, line
