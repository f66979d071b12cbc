"""Benchmarks of the engine against loops written the way the reference trainers work (`python -m sddkd.bench`):
`core` (the engine loop, the baseline, `run_bench`), `cache` (the step fed by the teacher-logit cache), `mlkd`
(MLKD's two-view step and its reference-style loop), `__main__` (the command line)."""
