"""Anomaly scores and maps from a GANomaly's outputs, as pure tensor functions.

    from models import scoring
    amap = scoring.residual_map(images, reconstructions, sigma=1.0)
    image_score = scoring.topk_mean(amap, fraction=0.01)

Kinds (``score.kind``):
- ``latent``: the paper's score, the mean squared distance between the two
  latent codes.
- ``residual``: the per-pixel absolute residual between image and
  reconstruction, Gaussian-smoothed, summarised by the mean of its top pixels.
- ``combined``: the mean of the two after each is standardised.

Raw scores are standardised with statistics of the validation normals that
the model keeps as weights, so one image's score does not depend on the batch
it came in.
"""

from __future__ import annotations

import math

import numpy as np
from keras import ops

SCORE_KINDS = ("latent", "residual", "combined")
# Guards the standardisation against a zero spread (e.g. a constant score).
MIN_STD = 1e-8


def latent_distance(latent_i, latent_o):
    """``[B, nz] x [B, nz] -> [B]``: the paper's anomaly score before scaling."""
    return ops.mean(ops.square(latent_i - latent_o), axis=-1)


def gaussian_kernel(sigma: float) -> np.ndarray:
    """A normalised 2-D Gaussian ``[k, k, 1, 1]`` with ``k = 2 * ceil(2 sigma) + 1``."""
    radius = max(1, math.ceil(2 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    kernel = np.outer(g, g)
    return (kernel / kernel.sum()).astype(np.float32)[:, :, None, None]


def residual_map(images, reconstructions, sigma: float = 1.0):
    """``[B, H, W, C] x2 -> [B, H, W]``: channel-mean |x - G(x)|, smoothed.

    Smoothing turns single-pixel reconstruction noise into nothing and a
    defect's coherent residual into a peak.
    """
    residual = ops.mean(ops.abs(images - reconstructions), axis=-1, keepdims=True)
    if sigma > 0:
        kernel = ops.convert_to_tensor(gaussian_kernel(sigma))
        pad = kernel.shape[0] // 2
        # Reflect padding: zero padding would darken the border of every map.
        residual = ops.pad(residual, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="reflect")
        residual = ops.conv(residual, kernel, padding="valid")
    return residual[..., 0]


def topk_mean(maps, fraction: float = 0.01):
    """``[B, H, W] -> [B]``: the mean of the highest ``fraction`` of each map."""
    height, width = maps.shape[1], maps.shape[2]
    k = max(1, int(round(fraction * height * width)))
    flat = ops.reshape(maps, (-1, height * width))
    values, _ = ops.top_k(flat, k)
    return ops.mean(values, axis=-1)


def standardize(values, mean, std):
    return (values - mean) / ops.maximum(std, MIN_STD)


def combine(kind: str, latent_z, residual_z):
    """Picks the image score of ``kind`` from the standardised parts."""
    if kind == "latent":
        return latent_z
    if kind == "residual":
        return residual_z
    if kind == "combined":
        return 0.5 * (latent_z + residual_z)
    raise ValueError(f"score kind must be one of {SCORE_KINDS}, got {kind!r}")
