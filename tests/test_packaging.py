"""What the installed package says about itself: its version, its presets, its completion; the wheel itself is
checked end to end by `nox -s wheel` (tests/installed_wheel_check.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import sddkd
from sddkd.cli import app
from sddkd.config import presets as config_presets

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


def test_version_is_the_declared_one():
    declared = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert declared is not None
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"sddkd {declared.group(1)}" == f"sddkd {sddkd.__version__}"


def test_an_installation_without_presets_is_an_error_not_an_empty_list(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(config_presets, "presets_root", lambda: tmp_path)
    listed = runner.invoke(app, ["train", "--list"])
    assert listed.exit_code == 2
    assert "no presets found" in listed.output and "reinstall" in listed.output
    train = runner.invoke(app, ["train", "-p", "synthetic/vanilla/resnet8", "--device", "cpu"])
    assert train.exit_code == 2 and "no presets found" in train.output


def test_every_preset_is_listed():
    shipped = sorted(
        p.relative_to(REPO / "presets").with_suffix("").as_posix() for p in (REPO / "presets").rglob("*.yaml")
    )
    result = runner.invoke(app, ["train", "--list"])
    assert result.exit_code == 0 and [line.split()[0] for line in result.output.splitlines() if line.strip()] == shipped


def test_shell_completion_is_offered():
    result = runner.invoke(app, ["--help"])
    assert "--install-completion" in result.output and "--show-completion" in result.output


def test_the_package_declares_its_types():
    assert (REPO / "sddkd" / "py.typed").is_file()


def test_each_extra_pulls_in_only_what_its_commands_import():
    """`analysis` is matplotlib and scikit-learn: no tracker (wandb has an extra of its own)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")

    extras = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    names = {extra: {req.split(">")[0].split("=")[0].split("[")[0] for req in reqs} for extra, reqs in extras.items()}
    assert names["analysis"] == {"matplotlib", "scikit-learn"}
    assert names["plots"] == {"matplotlib"} and names["wandb"] == {"wandb"}


def test_the_readme_set_up_says_to_install_torch_first_and_what_timings_depend_on():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    setup = readme.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    first_command = setup.index("python -m pip install -e . &&")
    assert "Install PyTorch" in setup[:first_command]
    assert "depends on the number of free cores" in setup and "bf16" in setup
    assert "sddkd train --preset synthetic/sdd_kd_lskd/res20_res8" in setup  # the offline next step
