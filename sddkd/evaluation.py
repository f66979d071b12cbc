"""`sddkd eval`: evaluate a checkpoint written by `sddkd train`, or a published teacher file, on a test set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sddkd.checkpoint import load_checkpoint
from sddkd.config import DataConfig, EngineConfig, RunConfig
from sddkd.errors import UserError
from sddkd.scales import parse_scales


def evaluate_checkpoint(
    path: Path,
    *,
    dataset: str | None = None,
    data_root: Path | None = None,
    arch: str | None = None,
    scales: str | None = None,
    device: str = "auto",
    batch_size: int = 256,
) -> dict[str, Any]:
    """Top-1/top-5 of the global logits, plus each scale's mean per-cell top-1 when several scales are asked for.

    A checkpoint from `sddkd train` carries its config (architecture, data, M); a published file needs `arch` and
    `dataset`. The file is read with weights_only=True.
    """
    from sddkd.distributed import DistContext
    from sddkd.engine import build_data, evaluate, resolve_placement

    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        state = load_checkpoint(path)
    except Exception as exc:  # an unpickling refusal or a corrupt file: say which file, not a traceback
        raise UserError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from None
    run_cfg = RunConfig.model_validate(state["config"]) if isinstance(state.get("config"), dict) else None
    data_cfg = _data_config(run_cfg, dataset, data_root, path)
    arch = arch or (run_cfg.student if run_cfg else None)
    if arch is None:
        raise UserError(f"{path} carries no config; name its architecture with --arch and its data with --dataset")
    region_scales = parse_scales(scales) if scales else (run_cfg.scales if run_cfg else (1,))

    placement = resolve_placement(EngineConfig(device=device))
    dist = DistContext()
    spec, _, test_loader = build_data(data_cfg, batch_size, placement.device, 0, dist, train=False)
    from sddkd.teachers import load_teacher

    model, _info = load_teacher(path, arch, spec.model_dataset, spec.num_classes)
    model = model.to(placement.device)
    result = evaluate(model, test_loader, placement, dist, region_scales)
    return {"arch": arch, "dataset": data_cfg.name, **result}


def _data_config(run_cfg: RunConfig | None, dataset: str | None, data_root: Path | None, path: Path) -> DataConfig:
    if run_cfg is not None and dataset in (None, run_cfg.data.name):
        data = run_cfg.data
        return data.model_copy(update={"root": str(data_root)}) if data_root else data
    if dataset is None:
        raise UserError(f"{path} carries no config; name its data with --dataset cifar100|cub200|imagenet")
    if dataset == "synthetic":
        raise UserError("--dataset synthetic needs the generating options: evaluate a checkpoint trained on it instead")
    return DataConfig(name=dataset, root=str(data_root or "data"))
