"""Anomaly scores and maps from a GANomaly's outputs, as pure tensor functions.

    from models import scoring
    amap = scoring.residual_map(images, reconstructions, sigma=2.0)
    image_score = scoring.topk_mean(amap, fraction=0.01)

Kinds (``score.kind``):
- ``latent``: the paper's score, the mean squared distance between the two
  latent codes.
- ``residual``: the per-pixel absolute residual between image and
  reconstruction, Gaussian-smoothed; the image score is the mean of the top
  pixels of the standardised map.
- ``ssim``: the same from a structural map, ``(1 - SSIM) / 2`` computed in
  local Gaussian windows, which reacts to texture and edges rather than to
  brightness.
- ``combined``: the mean of the standardised residual and SSIM maps.
- ``discriminator``: the residual between the discriminator's first feature
  maps (half the image side) of the image and of its reconstruction,
  channel-mean, upsampled and smoothed: a learned, texture-aware residual.
- ``head``: the defect head's logit map (``model.defect_head``), smoothed: what a
  network trained on synthetic anomalies takes for a defect.
- ``head_residual``: the mean of the standardised head and residual maps.

Maps are standardised per pixel position (or globally) and image scores
standardised with statistics of the validation normals that the scorer
(models/scorer.py) keeps as weights, so one image's score does not depend on
the batch it came in.
"""

from __future__ import annotations

import math

import numpy as np
from keras import ops

from models.options import SCORE_KINDS

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


def _blur(images, sigma: float):
    """Gaussian blur of ``[B, H, W, C]`` per channel, reflect-padded.

    Reflect padding: zero padding would darken the border of every map.
    """
    kernel = gaussian_kernel(sigma)
    pad = kernel.shape[0] // 2
    channels = images.shape[-1]
    kernel = ops.convert_to_tensor(np.tile(kernel, (1, 1, channels, 1)))
    padded = ops.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="reflect")
    return ops.depthwise_conv(padded, kernel, padding="valid")


def residual_map(images, reconstructions, sigma: float):
    """``[B, H, W, C] x2 -> [B, H, W]``: channel-mean |x - G(x)|, smoothed.

    Smoothing turns single-pixel reconstruction noise into nothing and a
    defect's coherent residual into a peak.
    """
    residual = ops.mean(ops.abs(images - reconstructions), axis=-1, keepdims=True)
    if sigma > 0:
        residual = _blur(residual, sigma)
    return residual[..., 0]


def feature_map(features, reconstruction_features, size: int, sigma: float):
    """``[B, h, w, F] x2 -> [B, size, size]``: channel-mean |f(x) - f(G(x))|, resized, smoothed.

    Bilinear upsampling to the image side, so the map sits on the image's pixels.
    """
    difference = ops.mean(ops.abs(features - reconstruction_features), axis=-1, keepdims=True)
    difference = ops.image.resize(difference, (size, size), interpolation="bilinear")
    if sigma > 0:
        difference = _blur(difference, sigma)
    return difference[..., 0]


def head_map(logits, sigma: float):
    """``[B, H, W] -> [B, H, W]``: the defect head's logits, smoothed.

    Logits rather than probabilities: they stay graded where the probability
    saturates at 0 or 1, so the validation normals' spread is meaningful.
    """
    if sigma <= 0:
        return logits
    return _blur(logits[..., None], sigma)[..., 0]


def ssim_map(images, reconstructions, sigma: float = 1.5):
    """``[B, H, W, C] x2 -> [B, H, W]``: channel-mean ``(1 - SSIM) / 2`` in [0, 1].

    Images are in [-1, 1], so the SSIM constants use a dynamic range of 2.
    """
    c1, c2 = (0.01 * 2.0) ** 2, (0.03 * 2.0) ** 2
    mu_x, mu_y = _blur(images, sigma), _blur(reconstructions, sigma)
    var_x = _blur(images * images, sigma) - mu_x * mu_x
    var_y = _blur(reconstructions * reconstructions, sigma) - mu_y * mu_y
    cov = _blur(images * reconstructions, sigma) - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    )
    return ops.mean((1.0 - ssim) / 2.0, axis=-1)


def topk_mean(maps, fraction: float = 0.01):
    """``[B, H, W] -> [B]``: the mean of the highest ``fraction`` of each map."""
    height, width = maps.shape[1], maps.shape[2]
    k = max(1, int(round(fraction * height * width)))
    flat = ops.reshape(maps, (-1, height * width))
    values, _ = ops.top_k(flat, k)
    return ops.mean(values, axis=-1)


def standardize(values, mean, std):
    return (values - mean) / ops.maximum(std, MIN_STD)


def kind_map(kind: str, maps: dict):
    """The anomaly map of ``kind`` from its standardised ``maps`` (``options.MAPS_OF_KIND``).

    ``latent`` has no map of its own: it shows the residual's.
    """
    if kind == "latent":
        return maps["residual"]
    if kind == "combined":
        return 0.5 * (maps["residual"] + maps["ssim"])
    if kind == "head_residual":
        return 0.5 * (maps["head"] + maps["residual"])
    if kind in maps:
        return maps[kind]
    raise ValueError(f"score kind must be one of {SCORE_KINDS}, got {kind!r}")
