"""The training engine: `train(cfg) -> record` (`loop`), the compiled optimizer step (`step`), devices and
precision (`placement`), the distillation step (`distill`), evaluation, checkpoints, distributed runs and tracking.
With `placement`, the only package that knows devices and processes."""

from sddkd.engine.loop import train

__all__ = ["train"]
