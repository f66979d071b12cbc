"""A 2-D embedding of pooled features: t-SNE (scikit-learn, the `analysis` extra) or PCA (torch only).

t-SNE is what the KD literature shows (mdistiller's notebook); PCA is the fallback that needs nothing installed and
is deterministic. `auto` takes t-SNE when scikit-learn is importable.
"""

from __future__ import annotations

import importlib.util
from typing import Literal

import torch
from torch import Tensor

from sddkd.errors import UserError

EmbeddingMethod = Literal["auto", "tsne", "pca"]
TSNE_HINT = "--embedding tsne needs scikit-learn, which is not installed: pip install 'sddkd[analysis]'"
TSNE_PCA_DIMS = 50  # t-SNE on the top principal components, as is customary (faster, less noise)


def have_sklearn() -> bool:
    return importlib.util.find_spec("sklearn") is not None


def resolve_method(method: EmbeddingMethod) -> Literal["tsne", "pca"]:
    """The method `auto` means here; a UserError naming the extra when t-SNE is asked for without scikit-learn."""
    if method == "tsne" and not have_sklearn():
        raise UserError(TSNE_HINT)
    if method == "auto":
        return "tsne" if have_sklearn() else "pca"
    return method


def pca_2d(features: Tensor, components: int = 2) -> Tensor:
    """Projection `[P, components]` of centred features onto their top principal axes (signs fixed so that each
    axis' largest-magnitude coordinate is positive: the same features always give the same picture)."""
    x = features.detach().cpu().double()
    x = x - x.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    axes = vh[:components]  # [components, C]
    projected = x @ axes.T
    signs = torch.sign(projected.gather(0, projected.abs().argmax(dim=0, keepdim=True)))
    signs[signs == 0] = 1.0
    result = projected * signs
    if result.shape[1] < components:  # fewer features (or samples) than components: pad with zeros
        result = torch.cat([result, result.new_zeros(result.shape[0], components - result.shape[1])], dim=1)
    return result


def tsne_2d(features: Tensor, seed: int = 0) -> Tensor:
    from sklearn.manifold import TSNE

    points = features.shape[0]
    reduced = pca_2d(features, min(TSNE_PCA_DIMS, features.shape[1], points))
    perplexity = float(min(30.0, max(1.0, (points - 1) / 3)))  # t-SNE needs perplexity < number of points
    tsne = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed)
    return torch.from_numpy(tsne.fit_transform(reduced.numpy()))


def embed_2d(features: Tensor, method: Literal["tsne", "pca"], seed: int = 0) -> Tensor:
    """`[P, 2]` coordinates of `[P, C]` features; t-SNE falls back to PCA below 5 points (it cannot fit)."""
    if method == "tsne" and features.shape[0] >= 5:
        return tsne_2d(features, seed)
    return pca_2d(features)
