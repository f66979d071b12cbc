"""Evaluation: top-1/top-5 and per-scale region accuracy of a model (`evaluate`), and `sddkd eval` for a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from sddkd.config import DataConfig, EngineConfig, RunConfig
from sddkd.datasets import PUBLISHED_DATASETS
from sddkd.engine.checkpoint import load_checkpoint
from sddkd.engine.distributed import DistContext
from sddkd.engine.placement import Placement, build_data, resolve_placement
from sddkd.errors import UserError
from sddkd.locations import default_data_root
from sddkd.models import ImageClassifier, region_logits
from sddkd.rundir.record import RunPaths
from sddkd.scales import Scales, num_regions


def evaluate_checkpoint(
    path: Path,
    *,
    dataset: str | None = None,
    data_root: Path | None = None,
    arch: str | None = None,
    scales: Scales | None = None,  # parsed at the edge (`--M`)
    device: str = "auto",
    batch_size: int = 256,
) -> dict[str, Any]:
    """Top-1/top-5 of the global logits, plus each scale's mean per-cell top-1 when several scales are asked for.

    A checkpoint from `sddkd train` carries its config (architecture, data, M); a published file needs `arch` and
    `dataset`. The file is read with weights_only=True.
    """
    if path.is_dir():  # a run directory: its best checkpoint, as `sddkd analyze` takes it
        if not RunPaths(path).best.is_file():
            raise UserError(f"{path} is a folder without checkpoints/best.pt: pass a run directory or a checkpoint")
        path = RunPaths(path).best
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise UserError(f"checkpoint {path} is not a regular file")
    try:
        state = load_checkpoint(path)
    except UserError:  # DamagedCheckpointError included: one sentence naming the file
        raise
    except Exception as exc:  # any other refusal: say which file, not a traceback
        raise UserError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from None
    run_cfg = RunConfig.model_validate(state["config"]) if isinstance(state.get("config"), dict) else None
    data_cfg = _data_config(run_cfg, dataset, data_root, path)
    arch = arch or (run_cfg.student if run_cfg else None)
    if arch is None:
        raise UserError(f"{path} carries no config; name its architecture with --arch and its data with --dataset")
    region_scales = scales or (run_cfg.scales if run_cfg else (1,))

    placement = resolve_placement(EngineConfig(device=device))
    dist = DistContext()
    spec, _, test_loader = build_data(data_cfg, batch_size, placement.device, 0, dist, train=False)
    from sddkd.teachers.store import load_teacher

    model, _info = load_teacher(path, arch, spec.model_dataset, spec.num_classes)
    model = model.to(placement.device)
    result = evaluate(model, test_loader, placement, dist, region_scales)
    return {"arch": arch, "dataset": data_cfg.name, **result}


def _data_config(run_cfg: RunConfig | None, dataset: str | None, data_root: Path | None, path: Path) -> DataConfig:
    if run_cfg is not None and dataset in (None, run_cfg.data.name):
        data = run_cfg.data
        return data.model_copy(update={"root": str(data_root)}) if data_root else data
    if dataset is None:
        raise UserError(f"{path} carries no config; name its data with --dataset {'|'.join(PUBLISHED_DATASETS)}")
    if dataset == "synthetic":
        raise UserError("--dataset synthetic needs the generating options: evaluate a checkpoint trained on it instead")
    return DataConfig(name=dataset, root=str(data_root or default_data_root()))


def evaluate(
    model: nn.Module, loader: Any, placement: Placement, dist: DistContext, scales: Scales = (1,)
) -> dict[str, Any]:
    """Top-1/top-5 (%) of the global logits; with several scales also each scale's mean per-cell top-1 (%).

    Always in float32, whatever precision the run trains in: the accuracy a run reports is the full-precision
    model's, as in the published tables, and a teacher measures the same in every run that distils from it.
    """
    model.eval()
    device = placement.device
    correct1 = torch.zeros((), device=device, dtype=torch.float64)
    correct5 = torch.zeros((), device=device, dtype=torch.float64)
    count = torch.zeros((), device=device, dtype=torch.float64)
    cell_correct = torch.zeros(num_regions(scales), device=device, dtype=torch.float64)
    with torch.inference_mode():
        for images, labels in loader:
            images = placement.images(images)
            if len(scales) > 1:
                network = cast(ImageClassifier, model)  # every registered model has the multi-scale interface
                regions = region_logits(network, network.forward_features(images), scales)  # [B, K, N]
                logits = regions[:, :, 0].float()
                cell_correct += (regions.argmax(dim=1) == labels[:, None]).sum(dim=0)
            else:
                logits = model(images).float()
            top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices  # [B, 5]
            correct1 += (top5[:, 0] == labels).sum()
            correct5 += (top5 == labels[:, None]).any(dim=1).sum()
            count += labels.numel()
    totals = dist.all_reduce_sum(torch.cat([torch.stack([correct1, correct5, count]), cell_correct])).tolist()
    seen = max(totals[2], 1.0)
    result: dict[str, Any] = {"top1": 100.0 * totals[0] / seen, "top5": 100.0 * totals[1] / seen}
    if len(scales) > 1:
        cells, offset = totals[3:], 0
        result["scales"] = {}
        for m in scales:
            result["scales"][str(m)] = 100.0 * sum(cells[offset : offset + m * m]) / (m * m * seen)
            offset += m * m
    return result
