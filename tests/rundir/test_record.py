"""The record's results as epochs end (`sddkd.rundir.record.fold_epoch`)."""

from __future__ import annotations

from typing import Any

from sddkd.rundir.record import fold_epoch


def test_the_best_epoch_is_the_first_with_the_highest_top1_and_untested_epochs_only_count_as_done():
    record: dict[str, Any] = {"best_top1": None, "best_top5": None, "best_epoch": None, "last_top1": None,
                              "last_top5": None}  # fmt: skip
    fold_epoch(record, 1, {"top1": 40.0, "top5": 70.0}, 10.0)
    fold_epoch(record, 2, None, 20.0)  # not evaluated (eval_every)
    assert (record["best_epoch"], record["last_top1"], record["epochs_done"]) == (1, 40.0, 2)
    assert record["wall_seconds"] == 20.0
    fold_epoch(record, 3, {"top1": 40.0, "top5": 90.0}, 30.0)  # a tie keeps the earlier epoch
    assert (record["best_epoch"], record["best_top5"], record["last_top5"]) == (1, 70.0, 90.0)
    fold_epoch(record, 4, {"top1": 41.0, "top5": 60.0}, 40.0)
    assert (record["best_epoch"], record["best_top1"], record["best_top5"]) == (4, 41.0, 60.0)
