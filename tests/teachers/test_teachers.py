"""The teacher store end to end: `sddkd fetch-teachers` against a local server, safe loading and clear failures."""

from __future__ import annotations

import hashlib
import io
import json
import pathlib
import random
import tarfile
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from sddkd import cli
from sddkd.cli import teachers as cli_teachers
from sddkd.models import create_model
from sddkd.teachers.loading import TeacherError, read_checkpoint
from sddkd.teachers.sources import fetch_teachers, missing_teacher_message
from sddkd.teachers.store import find_teacher, load_teacher, read_index, register_teacher, store_path
from tests.local_http import LocalServer, closed_port_url

ARCHS = ("resnet56", "wrn_40_2")  # two published CIFAR-100 teachers, small enough for a fast test


def repdistiller_checkpoint(arch: str, dataset: str = "cifar100", num_classes: int = 100) -> dict:
    """Random weights in RepDistiller's format: {'epoch', 'model', 'accuracy', 'optimizer'}."""
    torch.manual_seed(len(arch))
    model = create_model(arch, num_classes=num_classes, dataset=dataset)
    optimizer = {"state": {}, "param_groups": [{"lr": 0.0005, "momentum": 0.9, "params": [0, 1]}]}
    return {"epoch": 240, "model": model.state_dict(), "accuracy": torch.tensor(71.5), "optimizer": optimizer}


def tar_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def saved(payload: object, legacy: bool = False) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def published() -> dict:
    """The published tar layout `cifar_teachers/<arch>_vanilla/ckpt_epoch_240.pth`, one file in the legacy format."""
    checkpoints = {arch: repdistiller_checkpoint(arch) for arch in ARCHS}
    files = {
        f"cifar_teachers/{arch}_vanilla/ckpt_epoch_240.pth": saved(ckpt, legacy=arch == "resnet56")
        for arch, ckpt in checkpoints.items()
    }
    data = tar_bytes(files)
    return {"tar": data, "sha256": hashlib.sha256(data).hexdigest(), "checkpoints": checkpoints}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SDDKD_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(cli_teachers, "console", Console(width=400))  # table rows on one line each
    return tmp_path / "home"


def run(*args: str):
    return CliRunner().invoke(cli.app, ["fetch-teachers", *args])


def failed_with_one_line(result) -> bool:
    """A user error: non-zero exit and exactly one line, the sentence that names the fix."""
    lines = result.output.strip().splitlines()
    return result.exit_code != 0 and len(lines) == 1 and lines[0].startswith("error: ")


def store_files(home: Path) -> list[str]:
    root = home / "teachers"
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_fetch_verifies_registers_and_is_idempotent(home: Path, published: dict) -> None:
    with LocalServer({"cifar_teachers.tar": published["tar"]}) as server:
        server.drop_once("cifar_teachers.tar", after_bytes=len(published["tar"]) // 2)  # resumed with Range
        url = server.url("cifar_teachers.tar")
        result = run("--dataset", "cifar100", "--arch", "resnet56", "--arch", "wrn_40_2",
                     "--source", url, "--sha256", published["sha256"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert server.requests[-1].range is not None
    assert store_files(home) == [".index.lock", "cifar100/resnet56.pth", "cifar100/wrn_40_2.pth", "index.json"]
    assert list((home / "downloads").iterdir()) == []
    assert "fetched" in result.output and "72.34" in result.output  # published resnet56 top-1

    index = read_index()
    for arch in ARCHS:
        path = find_teacher("cifar100", arch)
        assert path == store_path("cifar100", arch)
        assert index["teachers"][f"cifar100/{arch}"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert (
            index["teachers"][f"cifar100/{arch}"]["origin"] == f"{url}#cifar_teachers/{arch}_vanilla/ckpt_epoch_240.pth"
        )
        model, info = load_teacher(path, arch, "cifar100", 100)
        assert not model.training and not any(p.requires_grad for p in model.parameters())
        expected = published["checkpoints"][arch]["model"]
        assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())
        assert info["sha256"] == index["teachers"][f"cifar100/{arch}"]["sha256"]
        assert info["recorded_top1"] == pytest.approx(71.5) and info["path"] == str(path.resolve())
        json.dumps(info)  # the engine writes it into result.json
    assert info["published_top1"] == 75.61  # wrn_40_2

    requests = len(server.requests)  # the server is stopped: a second run must not need it
    again = run("--dataset", "cifar100", "--arch", "resnet56", "--arch", "wrn_40_2", "--source", url)
    assert again.exit_code == 0, again.output
    assert "verified" in again.output and len(server.requests) == requests


def test_store_detects_a_changed_file_and_hashes_only_when_mtime_moves(
    home: Path, published: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "ckpt.pth"
    source.write_bytes(saved(published["checkpoints"]["resnet56"]))
    fetch_teachers("cifar100", ["resnet56"], source=str(source), progress=False)
    path = store_path("cifar100", "resnet56")

    calls = []
    import sddkd.teachers.store as teachers

    real_digest = teachers.file_digest
    monkeypatch.setattr(teachers, "file_digest", lambda *a: calls.append(a) or real_digest(*a))
    assert find_teacher("cifar100", "resnet56") == path and calls == []  # unchanged mtime: no hashing

    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(TeacherError, match="--force"):
        find_teacher("cifar100", "resnet56")
    status = fetch_teachers("cifar100", ["resnet56"], source=str(source), progress=False)  # repairs it
    assert status[0].state == "fetched" and find_teacher("cifar100", "resnet56") == path


def test_a_url_must_keep_serving_the_file_it_served_first(home: Path, published: dict) -> None:
    member = "cifar_teachers/resnet56_vanilla/ckpt_epoch_240.pth"
    other = tar_bytes({member: saved(repdistiller_checkpoint("resnet56"))})
    with LocalServer({"t.tar": published["tar"]}) as server:
        assert run("--dataset", "cifar100", "--arch", "resnet56", "--source", server.url("t.tar")).exit_code == 0
        before = store_path("cifar100", "resnet56").read_bytes()
        server.files["t.tar"] = other + b"\0" * 512  # the URL now serves different bytes
        result = run("--dataset", "cifar100", "--arch", "resnet56", "--source", server.url("t.tar"), "--force")
    assert failed_with_one_line(result)
    assert "now serves a file with sha256" in result.output and "--sha256" in result.output
    assert store_path("cifar100", "resnet56").read_bytes() == before
    assert list((home / "downloads").iterdir()) == []


def test_checksum_mismatch_leaves_nothing(home: Path, published: dict) -> None:
    with LocalServer({"t.tar": published["tar"]}) as server:
        url = server.url("t.tar")
        result = run("--dataset", "cifar100", "--arch", "resnet56", "--source", url, "--sha256", "ab" * 32)
    assert failed_with_one_line(result) and f"expected {'ab' * 32}" in result.output
    assert [p for p in store_files(home) if p.endswith(".pth")] == []
    assert list((home / "downloads").iterdir()) == []


class _TouchOnUnpickle:
    """Unpickling this calls Path.touch(marker): what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_a_checkpoint_that_runs_code_is_refused(home: Path, tmp_path: Path, published: dict) -> None:
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pth"
    payload = {"model": published["checkpoints"]["resnet56"]["model"], "extra": _TouchOnUnpickle(marker)}
    evil.write_bytes(saved(payload))
    result = run("--dataset", "cifar100", "--arch", "resnet56", "--source", str(evil))
    assert failed_with_one_line(result)
    assert "refused" in result.output and "run code" in result.output
    assert not marker.exists()
    assert [p for p in store_files(home) if p.endswith(".pth") or "incoming" in p] == []


def test_tensors_that_do_not_fit_name_arch_and_key(home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "cifar_teachers" / "resnet56_vanilla"
    folder.mkdir(parents=True)
    (folder / "ckpt_epoch_240.pth").write_bytes(saved(repdistiller_checkpoint("resnet8")))  # wrong architecture
    result = run("--dataset", "cifar100", "--arch", "resnet56", "--source", str(tmp_path / "cifar_teachers"))
    assert failed_with_one_line(result)
    line = result.output.strip()
    assert "does not fit resnet56" in line and "'" in line and "fetch-teachers" in line
    assert [p for p in store_files(home) if p.endswith(".pth")] == []


def test_no_network_names_the_url_and_the_offline_alternative(home: Path) -> None:
    url = closed_port_url("cifar_teachers.tar")
    result = run("--dataset", "cifar100", "--arch", "resnet56", "--source", url)
    assert failed_with_one_line(result)
    assert url in result.output and "--source PATH" in result.output
    assert [p for p in store_files(home) if p.endswith(".pth")] == []


def test_cub_teachers_say_where_they_come_from(home: Path, tmp_path: Path) -> None:
    missing = fetch_teachers("cub200", progress=False)
    assert [s.state for s in missing] == ["missing"] * 3
    note = missing[0].note
    assert "https://pan.baidu.com/s/1uxyG3ZZO67i_dbXwuFB2yQ" in note and "bzc6" in note
    assert "sddkd train --preset cub200/vanilla/resnet32x4" in note

    folder = tmp_path / "download" / "cub200" / "resnet8x4_vanilla"
    folder.mkdir(parents=True)
    ckpt = repdistiller_checkpoint("resnet8x4", dataset="cub200", num_classes=200)
    (folder / "resnet8x4_best.pth").write_bytes(saved(ckpt))
    source = str(tmp_path / "download")
    result = run("--dataset", "cub200", "--arch", "resnet8x4", "--arch", "wrn_40_2", "--source", source)
    assert result.exit_code != 0  # wrn_40_2 is not there: never reported as success
    assert "no published CUB-200 teacher exists for wrn_40_2" in result.output
    assert "sddkd train --preset cub200/vanilla/wrn_40_2" in result.output
    assert "1 teacher(s) not available: wrn_40_2" in result.output
    assert find_teacher("cub200", "resnet8x4") is not None and find_teacher("cub200", "wrn_40_2") is None


def test_missing_teacher_message_says_how_to_get_it(home: Path) -> None:
    cifar = missing_teacher_message("cifar100", "resnet32x4")
    assert "sddkd fetch-teachers --dataset cifar100 --arch resnet32x4" in cifar and str(home) in cifar
    assert "bzc6" in missing_teacher_message("cub200", "vgg13")
    synthetic = missing_teacher_message("synthetic", "resnet20")
    assert "sddkd train --preset synthetic/vanilla/resnet20" in synthetic and "--teacher" in synthetic


def test_imagenet_teacher_from_a_local_torchvision_file(home: Path, tmp_path: Path) -> None:
    source = tmp_path / "hub" / "mobilenet_v2-b0353104.pth"  # torch.hub's file name, as in ~/.cache/torch/hub
    source.parent.mkdir()
    torch.save(create_model("mobilenet_v2", num_classes=1000, dataset="imagenet").state_dict(), source)
    result = run("--dataset", "imagenet", "--arch", "mobilenet_v2", "--source", str(source.parent))
    assert result.exit_code == 0, result.output
    entry = json.loads((home / "teachers" / "index.json").read_text())["teachers"]["imagenet/mobilenet_v2"]
    assert entry["origin"] == f"{source.parent}#{source.name}" and entry["size"] == source.stat().st_size


def test_imagenet_teacher_downloaded_and_hash_checked_like_torchvision(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sddkd.teachers.sources as sources

    data = saved(create_model("mobilenet_v2", num_classes=1000, dataset="imagenet").state_dict())
    name = f"mobilenet_v2-{hashlib.sha256(data).hexdigest()[:8]}.pth"  # torch.hub's naming: sha256 prefix
    with LocalServer({name: data, "mobilenet_v2-00000000.pth": data}) as server:
        monkeypatch.setattr(
            sources, "torchvision_release", lambda arch: (server.url("mobilenet_v2-00000000.pth"), 71.9)
        )
        refused = run("--dataset", "imagenet", "--arch", "mobilenet_v2")
        assert failed_with_one_line(refused) and "hash check" in refused.output
        assert [p for p in store_files(home) if "mobilenet" in p] == []

        monkeypatch.setattr(sources, "torchvision_release", lambda arch: (server.url(name), 71.9))
        result = run("--dataset", "imagenet", "--arch", "mobilenet_v2")
    assert result.exit_code == 0, result.output
    assert read_index()["teachers"]["imagenet/mobilenet_v2"]["accuracy"] == 71.9

    monkeypatch.setattr(sources, "torchvision_release", lambda arch: (closed_port_url(name), 71.9))
    offline = run("--dataset", "imagenet", "--arch", "mobilenet_v2", "--force")
    assert failed_with_one_line(offline) and "--source PATH.pth" in offline.output


def test_checkpoint_formats(tmp_path: Path) -> None:
    state = create_model("resnet8", num_classes=100, dataset="cifar100").state_dict()
    formats = {
        "mdistiller": {"model": {f"module.{k}": v for k, v in state.items()}},  # DataParallel prefix
        "bare": state,
    }
    for name, payload in formats.items():
        path = tmp_path / f"{name}.pth"
        torch.save(payload, path)
        loaded, recorded = read_checkpoint(path)
        assert loaded.keys() == state.keys() and recorded is None
    for seed in range(40):  # which error torch raises depends on the bytes (and its release): each is one sentence
        (tmp_path / "junk.pth").write_bytes(random.Random(seed).randbytes(64))
        with pytest.raises(TeacherError, match="not a readable torch checkpoint"):
            read_checkpoint(tmp_path / "junk.pth")
    torch.save({"epoch": 3, "note": "no weights"}, tmp_path / "empty.pth")
    with pytest.raises(TeacherError, match="holds no state dict"):
        read_checkpoint(tmp_path / "empty.pth")


def test_a_teacher_trained_on_generated_data_registers_with_its_run_config(home: Path, tmp_path: Path) -> None:
    from sddkd.config import load_config

    cfg = load_config("synthetic/vanilla/resnet8")  # 10 classes, CIFAR geometry
    model = create_model("resnet8", num_classes=10, dataset="cifar100")
    best = tmp_path / "best.pt"  # what `sddkd train` writes: the RepDistiller layout plus the resolved config
    best_state = {"model": model.state_dict(), "epoch": 8, "accuracy": 55.0, "config": cfg.model_dump(mode="json")}
    torch.save(best_state, best)
    path = register_teacher("synthetic", "resnet8", best, origin="sddkd suite smoke")
    assert find_teacher("synthetic", "resnet8") == path
    teacher, info = load_teacher(path, "resnet8", "cifar100", 10)
    assert info["recorded_top1"] == 55.0

    torch.save({"model": model.state_dict()}, tmp_path / "bare.pt")
    with pytest.raises(TeacherError, match="class count is unknown"):
        register_teacher("synthetic", "resnet8", tmp_path / "bare.pt", origin="hand-made")


@pytest.mark.parametrize(
    ("content", "said"),
    [(bytes(range(256)) * 4, "not valid JSON"), (b"[]", "not a JSON object"),
     (b'{"teachers": []}', "'teachers' is not an object"), (None, "entry synthetic/resnet8 has no valid size")],
    ids=["random-bytes", "list", "teachers-list", "entry-without-size"],
)  # fmt: skip
def test_a_damaged_index_is_one_line_and_registering_again_repairs_it(
    home: Path, tmp_path: Path, content: bytes | None, said: str
) -> None:
    from sddkd.config import load_config

    cfg = load_config("synthetic/vanilla/resnet8")
    best = tmp_path / "best.pt"
    model = create_model("resnet8", num_classes=10, dataset="cifar100")
    torch.save({"model": model.state_dict(), "epoch": 8, "accuracy": 55.0, "config": cfg.model_dump(mode="json")},
               best)  # fmt: skip
    register_teacher("synthetic", "resnet8", best, origin="test")
    index = home / "teachers" / "index.json"
    if content is None:
        data = json.loads(index.read_text())
        del data["teachers"]["synthetic/resnet8"]["size"]
        content = json.dumps(data).encode()
    index.write_bytes(content)

    with pytest.raises(TeacherError, match="is damaged") as error:
        find_teacher("synthetic", "resnet8")
    assert said in str(error.value) and "\n" not in str(error.value)
    result = CliRunner().invoke(cli.app, ["train", "-p", "synthetic/kd/res20_res8", "--set", "teacher.arch=resnet8",
                                          "--device", "cpu", "--out", str(tmp_path / "logs")])  # fmt: skip
    assert result.exit_code == 2 and "Traceback" not in result.output and "is damaged" in result.output, result.output

    # A run's own --teacher file outside the store only asks the index for a hint: its checksum still comes.
    from sddkd.download import file_digest
    from sddkd.teachers.store import teacher_sha256

    assert teacher_sha256(best) == file_digest(best)

    register_teacher("synthetic", "resnet8", best, origin="test")  # a write drops the damage
    assert find_teacher("synthetic", "resnet8") == store_path("synthetic", "resnet8")
