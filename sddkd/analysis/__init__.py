"""`sddkd analyze`: what distillation changed in a student, as numbers (one JSON) and paper-sized PNGs.

- `metrics`: pure tensor functions, logits/features -> numbers (agreement, KL, correlation difference, LSKD logit
  moments, SDD consistent/complementary regions, calibration, per-class accuracy);
- `collect`: the one pass over the test set that gathers what the metrics need;
- `embed`: a 2-D embedding of features (t-SNE with the `analysis` extra, PCA without it);
- `plots`: the matplotlib figures; `run`: checkpoint + teacher -> files; `layout`: the file names (no torch).

Importing this package imports nothing heavy: `sddkd report` reads `layout` without torch.
"""
