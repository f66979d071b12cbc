"""Suites -> runs: the plan (`plan`: suite YAMLs, `sddkd suite`), scheduling runs over local devices (`runner`),
SLURM job arrays (`slurm`), status and plan views (`view`), and the shipped suite files (`definitions/`)."""
