"""One rank of the `sddkd` command under torchrun, for tests/engine/test_distributed.py (not a test module itself).

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/engine/ddp_worker.py \
        [--stop-after-epoch N] train --preset ... [--set student=bn_free_net ...]

It registers `bn_free_net`, a small CNN without BatchNorm, then runs the CLI. Without BatchNorm a rank's forward
does not depend on the other samples of its shard, so DDP over W ranks must give the single-process weights up to
float32 summation order. `--stop-after-epoch N` ends the run after epoch N the way a killed job would (the run stays
unfinished; `--resume` continues it).
"""

from __future__ import annotations

import functools
import sys

import torch
from torch import Tensor, nn

import sddkd.engine.loop as loop
from sddkd import cli
from sddkd.models import ImageClassifier
from sddkd.models.registry import register_model


class BNFreeNet(ImageClassifier):
    """conv-relu-conv-relu on 32 px images: features [B, 16, 8, 8], then a linear classifier on their mean."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()
        )
        self.fc = nn.Linear(16, num_classes)

    def forward_features(self, images: Tensor) -> Tensor:
        return self.features(images)  # type: ignore[no-any-return]

    def get_classifier(self) -> nn.Linear:
        return self.fc


@register_model("bn_free_net", datasets=("cifar100",))
def bn_free_net(num_classes: int, dataset: str) -> nn.Module:
    return BNFreeNet(num_classes)


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)  # two ranks share the two cores of a CI machine
    if argv[:1] == ["--stop-after-epoch"]:
        loop.train = functools.partial(loop.train, stop_after_epoch=int(argv[1]))  # type: ignore[assignment]
        argv = argv[2:]
    sys.argv = ["sddkd", *argv]
    cli.main()


if __name__ == "__main__":
    main(sys.argv[1:])
