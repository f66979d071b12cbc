"""Run records: read every result.json under a folder, tell dead runs from live ones, group seeds into rows.

No torch import. A run is any folder holding `result.json` (schema in docs/architecture.md). Its state is
the record's status, except that a locked directory is `running`, and a `running` record is `incomplete` when
its directory is not locked (on this host), or its `updated` is stale (records of other hosts). Runs group into
rows by their whole recipe except the seed (`recipe_key`; records older than it by dataset, method,
teacher -> student, M and epochs); a row's statistics cover its finished runs only, as mean ± sample standard
deviation (n - 1; none for one seed). Keys whose values differ between rows of one
(dataset, method, pair) become the report's setting columns. Partial runs (smoke runs: `--max-steps`, or fewer
epochs than their preset) are left out unless asked for.
"""

from __future__ import annotations

import json
import socket
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sddkd.errors import UserError
from sddkd.methods import report_rank
from sddkd.report.anchors import Anchor, lookup
from sddkd.rundir.state import STATES, RunState, owned, parse_time, run_state
from sddkd.scales import Scales, parse_scales


class ReportError(UserError):
    """A problem the user can fix; the message says how."""


@dataclass(frozen=True)
class Run:
    """One run directory, as read from its result.json; `state` accounts for dead and stale runs."""

    path: Path
    run_name: str
    state: RunState
    dataset: str
    method: str
    teacher: str | None  # None for vanilla runs
    student: str  # the arch trained, for vanilla runs
    scales: Scales | None  # None for vanilla runs
    seed: int
    epochs: int
    epochs_done: int
    best_top1: float | None  # None until a run's first evaluation (e.g. one that failed before it)
    last_top1: float | None
    best_top5: float | None
    updated: str | None
    host: str | None
    pid: int | None
    error: str | None
    recipe_key: str | None = None  # the recipe without its seed; None in records older than it
    recipe: dict[str, Any] = field(default_factory=dict)  # dotted key -> value, seed left out
    partial: bool = False  # a smoke run: --max-steps, or fewer epochs than its preset
    teacher_top1: float | None = None  # the teacher's test top-1 as this run measured it

    @property
    def pair(self) -> str:
        return self.student if self.teacher is None else f"{self.teacher}→{self.student}"


# dataset, method, teacher, student, M, epochs, recipe key ("" for records without one)
GroupKey = tuple[str, str, str | None, str, Scales | None, int, str]
# Keys the row already shows in columns of their own: never listed as settings.
SHOWN_KEYS = frozenset({"data.name", "method.name", "student", "teacher.arch", "method.scales", "optim.epochs"})


def group_key(run: Run) -> GroupKey:
    return (run.dataset, run.method, run.teacher, run.student, run.scales, run.epochs, run.recipe_key or "")


def _without_scales(recipe: dict[str, Any]) -> str:
    """The recipe with M left out: rows that differ only in M are compared (Δ M=(1))."""
    return json.dumps({k: v for k, v in recipe.items() if k != "method.scales"}, sort_keys=True)


@dataclass(frozen=True)
class MeanStd:
    mean: float
    std: float | None  # None with a single seed

    @classmethod
    def of(cls, values: Sequence[float]) -> MeanStd | None:
        if not values:
            return None
        return cls(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None)


@dataclass(frozen=True)
class Row:
    """One (dataset, pair, method, M, epochs) group; the statistics cover its finished runs only."""

    dataset: str
    method: str
    teacher: str | None
    student: str
    scales: Scales | None
    epochs: int
    seeds: tuple[int, ...]  # the finished seeds
    states: dict[str, int]  # run count per state
    best_top1: MeanStd | None
    last_top1: MeanStd | None
    best_top5: MeanStd | None
    delta_vs_m1: float | None
    published: Anchor | None
    delta_vs_published: float | None
    recipe: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)  # this row's values of the report's setting keys
    partial: bool = False

    @property
    def pair(self) -> str:
        return self.student if self.teacher is None else f"{self.teacher}→{self.student}"


@dataclass
class Report:
    runs_dir: Path
    runs: list[Run]
    rows: list[Row]
    warnings: list[str]
    generated: str
    files: list[Path] = field(default_factory=list)
    setting_keys: list[str] = field(default_factory=list)  # recipe keys that differ between comparable rows
    left_out: list[Run] = field(default_factory=list)  # partial runs, without --include-partial

    @property
    def unfinished(self) -> list[Run]:
        return [run for run in self.runs if run.state != "finished"]


# --- reading ------------------------------------------------------------------------------------------------


def _field(data: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"field {key!r} is missing or not a {getattr(kind, '__name__', 'number')}")
    return value


def _count(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _accuracy(data: dict[str, Any], key: str, required: bool) -> float | None:
    """A percentage: a finite number from 0 to 100 (a record can hold NaN, 1e309 or a 400-digit int)."""
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"field {key!r} is missing or not a number")
    try:
        number = float(value)
    except OverflowError:
        number = float("inf")
    if not 0.0 <= number <= 100.0:  # also false for NaN
        raise ValueError(f"field {key!r} is {number!r}, not a percentage from 0 to 100")
    return number


def _text(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


def parse_run(path: Path, data: object, now: datetime, hostname: str) -> Run:
    """A Run from a decoded result.json; raises ValueError naming the first bad field."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if data.get("status") not in ("running", "finished", "failed", "interrupted"):
        raise ValueError(f"status {data.get('status')!r} is not running, finished, failed or interrupted")
    method = _field(data, "method", str)
    vanilla = method == "vanilla"
    student = data.get("student") or data.get("arch") or (data.get("teacher") if vanilla else None)
    if not isinstance(student, str):
        raise ValueError("field 'student' is missing or not a str")
    raw_scales = data.get("scales")
    pid = data.get("pid")
    raw_recipe = data.get("recipe")
    recipe: dict[str, Any] = raw_recipe if isinstance(raw_recipe, dict) else {}
    recipe_key = data.get("recipe_key") if isinstance(data.get("recipe_key"), str) else None
    finished = data["status"] == "finished"  # only a finished run must have been evaluated
    return Run(
        path=path.parent,
        run_name=_text(data, "run_name") or path.parent.name,
        state=run_state(data, now, hostname, owned(path.parent)),  # the one reader of `sddkd.rundir.state`
        dataset=_field(data, "dataset", str),
        method=method,
        teacher=None if vanilla else _field(data, "teacher", str),
        student=student,
        scales=None if vanilla else parse_scales(raw_scales if raw_scales is not None else 1),
        seed=_field(data, "seed", int),
        epochs=_field(data, "epochs", int),
        epochs_done=_count(data, "epochs_done"),
        best_top1=_accuracy(data, "best_top1", finished),
        last_top1=_accuracy(data, "last_top1", finished),
        best_top5=_accuracy(data, "best_top5", False) if data.get("best_top5") is not None else None,
        updated=_text(data, "updated"),
        host=_text(data, "host"),
        pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
        error=data.get("error") if data.get("error") is None else str(data.get("error")),
        recipe_key=recipe_key,
        recipe=recipe,
        partial=data.get("partial") is True,
        teacher_top1=_teacher_top1(data),
    )


def _teacher_top1(data: dict[str, Any]) -> float | None:
    teacher = data.get("teacher_checkpoint")
    measured = teacher.get("test_top1") if isinstance(teacher, dict) else None
    return float(measured) if isinstance(measured, int | float) and not isinstance(measured, bool) else None


_STATE_RANK = {state: rank for rank, state in enumerate(STATES)}


def load_runs(runs_dir: Path, now: datetime | None = None) -> tuple[list[Run], list[str]]:
    """Every run under `runs_dir` (recursively), and one warning per unreadable or duplicate record."""
    now = now or datetime.now(timezone.utc)
    hostname = socket.gethostname()
    runs: dict[tuple[GroupKey, int], Run] = {}
    warnings: list[str] = []
    for path in sorted(runs_dir.rglob("result.json")):
        shown = path.relative_to(runs_dir)
        try:
            run = parse_run(path, json.loads(path.read_text(encoding="utf-8")), now, hostname)
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:  # JSONDecodeError: a ValueError
            warnings.append(f"skipping {shown}: {error}")
            continue
        key = (group_key(run), run.seed)
        kept = runs.get(key)
        if kept is not None:
            # the same experiment and seed twice (e.g. a copied folder): count it once, preferring a finished
            # run, then the most recently updated one
            run, dropped = sorted([kept, run], key=lambda r: (_STATE_RANK[r.state], -_time_key(r)))
            warnings.append(
                f"{dropped.path.relative_to(runs_dir)} repeats {run.path.relative_to(runs_dir)} "
                "(same experiment and seed): counted once"
            )
        runs[key] = run
    return list(runs.values()), warnings


def _time_key(run: Run) -> float:
    moment = parse_time(run.updated)
    return moment.timestamp() if moment else 0.0


# --- aggregation --------------------------------------------------------------------------------------------


def _row_sort_key(row: Row) -> tuple[Any, ...]:
    rank = report_rank(row.method)
    scales = row.scales or ()
    recipe = json.dumps(row.recipe, sort_keys=True)
    return (row.dataset, row.method != "vanilla", row.pair, rank, row.method, len(scales), scales, row.epochs, recipe)


def summarize(runs: Sequence[Run]) -> list[Row]:
    """Group runs into rows, with means over finished seeds, Δ vs M=(1) and the published anchor."""
    groups: dict[GroupKey, list[Run]] = {}
    for run in runs:
        groups.setdefault(group_key(run), []).append(run)
    finished_runs = {
        key: sorted((r for r in members if r.state == "finished"), key=lambda r: r.seed)
        for key, members in groups.items()
    }
    # Δ M=(1) compares with the row of the same recipe but M, whatever else the recipe sets
    best_means = {
        (*key[:4], key[5], _without_scales(members[0].recipe)): _mean_best(finished_runs[key])
        for key, members in groups.items()
        if key[4] == (1,) and finished_runs[key]
    }
    rows = []
    for key, members in groups.items():
        dataset, method, teacher, student, scales, epochs, _ = key
        finished = finished_runs[key]
        best = MeanStd.of(_values(finished, "best_top1"))
        m1_mean = best_means.get((dataset, method, teacher, student, epochs, _without_scales(members[0].recipe)))
        anchor = lookup(dataset, method, teacher, student, scales)
        rows.append(
            Row(
                dataset=dataset,
                method=method,
                teacher=teacher,
                student=student,
                scales=scales,
                epochs=epochs,
                seeds=tuple(r.seed for r in finished),
                states={s: n for s in STATES if (n := sum(r.state == s for r in members))},
                best_top1=best,
                last_top1=MeanStd.of(_values(finished, "last_top1")),
                best_top5=MeanStd.of(_values(finished, "best_top5")),
                delta_vs_m1=best.mean - m1_mean if best and m1_mean is not None and scales != (1,) else None,
                published=anchor,
                delta_vs_published=best.mean - anchor.top1 if best and anchor else None,
                recipe=members[0].recipe,
                partial=any(r.partial for r in members),
            )
        )
    return sorted(rows, key=_row_sort_key)


def setting_keys(rows: Sequence[Row]) -> list[str]:
    """Recipe keys whose values differ between rows of one (dataset, method, pair): a sweep's swept keys."""
    families: dict[tuple[str, str, str | None, str], list[Row]] = {}
    for row in rows:
        families.setdefault((row.dataset, row.method, row.teacher, row.student), []).append(row)
    keys: set[str] = set()
    for members in families.values():
        known = [m.recipe for m in members if m.recipe]
        for key in set().union(*known) if len(known) > 1 else ():
            if key not in SHOWN_KEYS and len({json.dumps(r.get(key), sort_keys=True) for r in known}) > 1:
                keys.add(key)
    return sorted(keys)


def with_settings(rows: Sequence[Row], keys: Sequence[str]) -> list[Row]:
    return [replace(row, settings={k: row.recipe.get(k) for k in keys}) for row in rows]


def _values(runs: Sequence[Run], name: str) -> list[float]:
    """The runs' recorded values of one accuracy (a finished run always has top-1; top-5 may be missing)."""
    return [value for run in runs if (value := getattr(run, name)) is not None]


def _mean_best(runs: Sequence[Run]) -> float:
    return statistics.fmean(_values(runs, "best_top1"))


def build_report(runs_dir: Path, now: datetime | None = None, include_partial: bool = False) -> Report:
    """Read and summarise every run under `runs_dir`; raises ReportError when there is nothing to report.

    Partial runs are left out of the rows (listed in `left_out`) unless `include_partial`.
    """
    if not runs_dir.is_dir():
        raise ReportError(f"{runs_dir} is not a folder: pass the folder given to train or suite as --out")
    runs, warnings = load_runs(runs_dir, now)
    if not runs:
        found = f"no readable runs ({warnings[0]})" if warnings else "no runs"
        raise ReportError(
            f"{found} under {runs_dir}: a run is a folder holding result.json, as written by "
            "`sddkd train` or `sddkd suite` into their --out folder"
        )
    left_out = [] if include_partial else [run for run in runs if run.partial]
    if left_out:
        runs = [run for run in runs if not run.partial]
        warnings.append(
            f"{len(left_out)} partial run(s) left out (--max-steps, or fewer epochs than the preset): "
            "--include-partial reports them"
        )
    if not runs:
        raise ReportError(f"only partial runs under {runs_dir}: pass --include-partial to report them")
    moment = (now or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    rows = summarize(runs)
    keys = setting_keys(rows)
    report = Report(runs_dir, sorted(runs, key=lambda r: r.run_name), with_settings(rows, keys), warnings, moment)
    report.setting_keys, report.left_out = keys, sorted(left_out, key=lambda r: r.run_name)
    return report
