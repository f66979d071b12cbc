"""The run directory, one torch-free home: naming (`naming`), the record and config written into it (`record`), its
one owner (`lock`), opening it as a transaction (`opening`), checkpoints as the truth about it (`resume`: what a
resume accepts and rebuilds, the order of an epoch's writes) and the one reader of its state (`state`). The engine
writes it; the suite and the report read it."""
