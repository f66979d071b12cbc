"""From nothing to a trained student, offline: prepare data and fetch a teacher from a 127.0.0.1 server, then train.

The first run trains on the prepared CUB-200 cache; the second finds its teacher in the store by dataset and
architecture, with no path given.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sddkd import cli
from sddkd.models import create_model
from tests.fakes import make_cifar100_archive, make_cub_archive
from tests.local_http import LocalServer

TEACHER = "resnet8"  # the smallest CIFAR net: the published tar layout does not care which arch it holds


def invoke(*args: str):
    return CliRunner().invoke(cli.app, list(args))


def teacher_tar() -> bytes:
    """`cifar_teachers/<arch>_vanilla/ckpt_epoch_240.pth` in RepDistiller's format, random weights."""
    torch.manual_seed(0)
    state = {"epoch": 240, "model": create_model(TEACHER, 100, "cifar100").state_dict(), "accuracy": 70.0,
             "optimizer": {"state": {}, "param_groups": []}}  # fmt: skip
    payload = io.BytesIO()
    torch.save(state, payload)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        info = tarfile.TarInfo(f"cifar_teachers/{TEACHER}_vanilla/ckpt_epoch_240.pth")
        info.size = len(payload.getvalue())
        tar.addfile(info, io.BytesIO(payload.getvalue()))
    return archive.getvalue()


@pytest.mark.slow
def test_prepare_fetch_and_train_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SDDKD_HOME", str(tmp_path / "home"))
    data, out = tmp_path / "data", tmp_path / "logs"
    cifar = make_cifar100_archive(tmp_path / "cifar-100-python.tar.gz", n_train=64, n_test=16).read_bytes()
    cub = make_cub_archive(tmp_path / "CUB_200_2011.tgz", n_classes=3, per_class=4).read_bytes()
    teachers = teacher_tar()
    files = {"cifar.tar.gz": cifar, "cub.tgz": cub, "cifar_teachers.tar": teachers}
    with LocalServer(files) as server:
        for dataset, name, blob in (("cifar100", "cifar.tar.gz", cifar), ("cub200", "cub.tgz", cub)):
            md5 = hashlib.md5(blob).hexdigest()
            prepared = invoke(
                "prepare-data", dataset, "--data-root", str(data), "--url", server.url(name), "--md5", md5
            )
            assert prepared.exit_code == 0, prepared.output
        fetched = invoke("fetch-teachers", "--dataset", "cifar100", "--arch", TEACHER,
                         "--source", server.url("cifar_teachers.tar"),
                         "--sha256", hashlib.sha256(teachers).hexdigest())  # fmt: skip
        assert fetched.exit_code == 0, fetched.output

    # 1. A short run on the prepared CUB cache (224-px crops of the 256-px cache, on the device).
    cub_run = invoke(
        "train", "--preset", "cub200/vanilla/resnet8x4", "--data-root", str(data), "--device", "cpu",
        "--batch-size", "4", "--max-steps", "2", "--out", str(out), "--set", "engine.progress=false",
    )  # fmt: skip
    assert cub_run.exit_code == 0, cub_run.output
    record = json.loads((out / "cub200-vanilla-resnet8x4-s0+batch_size=4-partial-2steps" / "result.json").read_text())
    assert record["status"] == "finished" and record["dataset"] == "cub200"

    # 2. A distillation run that finds its teacher in the store: no --teacher, no teacher.checkpoint.
    student = invoke("train", "--preset", "res32x4_res8x4", "--set", f"teacher.arch={TEACHER}", "--M", "1,2",
                     "--data-root", str(data), "--device", "cpu", "--batch-size", "16", "--max-steps", "2",
                     "--out", str(out), "--set", "engine.progress=false")  # fmt: skip
    assert student.exit_code == 0, student.output
    (student_dir,) = out.glob(f"cifar100-sdd_kd_lskd-{TEACHER}_resnet8x4-M1-2-s0+*-partial-2steps")  # --max-steps
    record = json.loads((student_dir / "result.json").read_text())
    stored = Path(tmp_path / "home" / "teachers" / "cifar100" / f"{TEACHER}.pth")
    assert record["teacher_checkpoint"]["sha256"] == hashlib.sha256(stored.read_bytes()).hexdigest()
    assert record["status"] == "finished"
