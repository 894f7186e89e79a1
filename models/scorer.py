"""The scorer: a trained GANomaly's image scores and anomaly maps, standardised.

    scorer = Scorer(model, ScoreOptions(kind="residual"))
    summary = scorer.calibrate(validation_normal_batches)
    outputs = scorer.score(images)  # {"score", "anomaly_map", "latent", "map_score", ...}
    scorer.save_statistics("score_statistics.npz")

The GANomaly trains; the scorer reads its networks and holds the frozen
statistics of the validation normals for the one score kind in use. A score
change therefore never touches the trained weights, and a new map kind never
makes a weights file unloadable. Only the maps the kind needs are computed,
and the discriminator (or the defect head) is kept only when the kind reads it.

With a defect head at a larger ``head_isize`` the scorer takes pairs ``(images
at isize, images at head_size)``: the generator reads the first, the head the
second, and every map is at ``head_size`` (the generator's maps upsampled,
bilinear), whatever the kind: the ground-truth masks are at that size.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import ops

from models import scoring
from models.networks import float32_outputs
from models.options import ScoreOptions, from_dict
from models.tiling import TileGrid

# Per-pixel map statistics are shrunk towards the global ones as if this many
# extra images had the global statistics: stable with few validation images.
PRIOR_IMAGES = 10.0
_STATISTICS = ("map_mean", "map_std", "score_mean", "score_std")


class Scorer(keras.layers.Layer):
    """Scores images with a trained GANomaly's generator (and discriminator).

    Args:
        model: a trained ``GANomaly`` (its ``generator``, ``discriminator`` and ``isize``).
        options: a ``ScoreOptions`` or its dict; the defaults when None.
        grid: with ``preprocess.tiles``, the ``TileGrid`` of the preprocessed
            images: they are scored tile by tile and the maps stitched back.
    """

    def __init__(
        self,
        model,
        options: ScoreOptions | dict | None = None,
        grid: TileGrid | None = None,
        **kwargs,
    ):
        # Scores in float32 even under a mixed_float16 policy (networks trained in float16).
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.options = from_dict(ScoreOptions, options)
        self.options.check()
        self.isize = model.isize
        self.grid = grid
        self.map_kinds = self.options.map_kinds
        self.generator = model.generator
        self.discriminator = model.discriminator if "discriminator" in self.map_kinds else None
        self.head = model.head if "head" in self.map_kinds else None
        # Whether the model's head reads images of its own size: the scorer then
        # takes pairs, and maps at that size.
        self.head_sized = model.head_sized
        self.head_size = model.head_size if self.head_sized else (self.isize, self.isize)
        self.map_size = grid.size if grid else self.head_size
        if "head" in self.map_kinds and model.head is None:
            raise ValueError(
                f"score kind {self.options.kind!r} needs a model trained with a defect head "
                "(model.defect_head: true)"
            )
        # Standardisation from validation normals: each map of the kind (per
        # pixel or global), then the [latent, map] image scores.
        map_shape = (len(self.map_kinds), *self.map_size)
        self.map_mean = self.add_weight(
            shape=map_shape, initializer="zeros", trainable=False, name="map_mean"
        )
        self.map_std = self.add_weight(
            shape=map_shape, initializer="ones", trainable=False, name="map_std"
        )
        self.score_mean = self.add_weight(
            shape=(2,), initializer="zeros", trainable=False, name="score_mean"
        )
        self.score_std = self.add_weight(
            shape=(2,), initializer="ones", trainable=False, name="score_std"
        )
        self.built = True

    def model_inputs(self, images) -> tuple:
        """``(images, head images)`` of what ``score`` takes, in float32.

        A pair is ``(images at isize, images at head_size)``; a scorer that
        does not read the head reads the first of it only. The head images are
        None when the scorer does not read them.

        Raises:
            ValueError: a scorer that reads a larger head given images of one size only.
        """
        head_images = None
        if isinstance(images, (tuple, list)):
            images, head_images = images
        if not (self.head_sized and self.head is not None):
            return ops.cast(images, "float32"), None
        if head_images is None:
            raise ValueError(
                f"this scorer's defect head reads images of {list(self.head_size)} px "
                "(model.head_isize): give it pairs (images, head_images)"
            )
        return ops.cast(images, "float32"), ops.cast(head_images, "float32")

    def raw_scores(self, images) -> dict:
        """Unscaled latent distance and the kind's maps, in inference mode.

        With tiles: each tile's maps and reconstruction stitched back into the
        image's, and the image's latent distance the largest of its tiles'.
        """
        images, head_images = self.model_inputs(images)
        if self.grid is None:
            return self._raw_scores(images, head_images)
        raw = self._raw_scores(self.grid.cut(images))
        latent = ops.reshape(raw.pop("latent"), (-1, self.grid.count))
        stitched = {"latent": ops.max(latent, axis=1)}
        stitched["reconstruction"] = self.grid.stitch(raw.pop("reconstruction"))
        for name, tile_maps in raw.items():
            stitched[name] = self.grid.stitch(tile_maps[..., None])[..., 0]
        return stitched

    def _raw_scores(self, images, head_images=None) -> dict:
        """``raw_scores`` of ``[B, isize, isize, C]`` model inputs (and the head's)."""
        sigma = self.options.smoothing_sigma
        reconstruction, latent_i, latent_o = float32_outputs(self.generator(images, training=False))
        raw = {
            "latent": scoring.latent_distance(latent_i, latent_o),
            "reconstruction": reconstruction,
        }
        if "residual" in self.map_kinds:
            raw["residual"] = scoring.residual_map(images, reconstruction, sigma)
        if "ssim" in self.map_kinds:
            raw["ssim"] = scoring.ssim_map(images, reconstruction)
        if self.discriminator is not None:
            image_features = float32_outputs(self.discriminator(images, training=False))[2]
            reconstruction_features = float32_outputs(
                self.discriminator(reconstruction, training=False)
            )[2]
            raw["discriminator"] = scoring.feature_map(
                image_features, reconstruction_features, self.isize, sigma
            )
        if self.head_sized:  # the generator's maps on the head's grid
            for name in ("residual", "ssim", "discriminator"):
                if name in raw:
                    raw[name] = self._to_head_size(raw[name])
        if self.head is not None:
            head_input = images if head_images is None else head_images
            logits = ops.cast(self.head([head_input, reconstruction], training=False), "float32")
            raw["head"] = scoring.head_map(logits, self.options.head_smoothing_sigma)
        return raw

    def _to_head_size(self, maps):
        """``[B, isize, isize]`` -> ``[B, *head_size]``, bilinear."""
        return ops.image.resize(maps[..., None], self.head_size, interpolation="bilinear")[..., 0]

    def _standardized(self, raw: dict) -> dict:
        maps = {
            name: scoring.standardize(raw[name], self.map_mean[i], self.map_std[i])
            for i, name in enumerate(self.map_kinds)
        }
        anomaly_map = scoring.kind_map(self.options.kind, maps)
        return {
            "anomaly_map": anomaly_map,
            "latent_raw": raw["latent"],
            "map_score_raw": scoring.topk_mean(anomaly_map, self.options.topk_fraction),
        }

    def score(self, images) -> dict:
        """Standardised image score of the kind and its anomaly map, per image.

        Args:
            images: ``[B, H, W, C]`` preprocessed to [-1, 1]; ``(H, W)`` is
                ``map_size`` (``isize`` square without tiles). With a larger
                head: the pair ``(images at isize, images at head_size)``.

        Returns:
            ``score [B]``, ``anomaly_map [B, H, W]``, ``latent [B]``,
            ``map_score [B]`` and ``reconstruction`` (at ``isize``); scores and
            maps are in units of the validation normals' standard deviation;
            maps are ``map_size``.
        """
        raw = self.raw_scores(images)
        parts = self._standardized(raw)
        latent = scoring.standardize(parts["latent_raw"], self.score_mean[0], self.score_std[0])
        map_score = scoring.standardize(
            parts["map_score_raw"], self.score_mean[1], self.score_std[1]
        )
        return {
            "score": latent if self.options.kind == "latent" else map_score,
            "anomaly_map": parts["anomaly_map"],
            "latent": latent,
            "map_score": map_score,
            "reconstruction": raw["reconstruction"],
        }

    def call(self, images):
        return self.score(images)

    def _map_statistics(self, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std ``[H, W]`` of maps ``[N, H, W]``, per pixel (shrunk) or global."""
        global_mean, global_var = maps.mean(), maps.var()
        if not self.options.pixel_norm:
            shape = maps.shape[1:]
            return np.full(shape, global_mean), np.full(shape, np.sqrt(global_var))
        n = len(maps)
        mean = (n * maps.mean(0) + PRIOR_IMAGES * global_mean) / (n + PRIOR_IMAGES)
        var = (n * maps.var(0) + PRIOR_IMAGES * global_var) / (n + PRIOR_IMAGES)
        return mean, np.sqrt(var)

    def calibrate(self, normal_images) -> dict:
        """Freezes the map and score standardisation from validation normals.

        Args:
            normal_images: an iterable of ``[B, H, W, C]`` batches of
                normal images that the model was not trained on (or of
                ``(images, labels)``; with a larger head, of pairs as ``score``
                takes, or ``(pair, labels)``).

        Returns:
            Summary statistics (global means and stds), as floats.
        """
        batches = [self._calibration_inputs(b) for b in normal_images]
        if not batches:
            raise ValueError("calibrate needs at least one normal image")
        raws = [
            {k: ops.convert_to_numpy(v) for k, v in self.raw_scores(b).items()} for b in batches
        ]
        summary, means, stds = {}, [], []
        for name in self.map_kinds:
            maps = np.concatenate([r[name] for r in raws]).astype(np.float64)
            mean, std = self._map_statistics(maps)
            means.append(mean)
            stds.append(std)
            summary[f"{name}_map_mean"] = float(maps.mean())
            summary[f"{name}_map_std"] = float(maps.std())
        self.map_mean.assign(np.stack(means))
        self.map_std.assign(np.stack(stds))
        parts = [self._standardized(r) for r in raws]
        latent = np.concatenate([ops.convert_to_numpy(p["latent_raw"]) for p in parts])
        map_score = np.concatenate([ops.convert_to_numpy(p["map_score_raw"]) for p in parts])
        self.score_mean.assign([latent.mean(), map_score.mean()])
        self.score_std.assign([latent.std(), map_score.std()])
        summary.update(
            latent_mean=float(latent.mean()),
            latent_std=float(latent.std()),
            map_score_mean=float(map_score.mean()),
            map_score_std=float(map_score.std()),
            images=int(len(latent)),
        )
        return summary

    def _calibration_inputs(self, batch):
        """What ``score`` takes, from one ``calibrate`` batch."""
        if not isinstance(batch, (tuple, list)):
            return batch
        if isinstance(batch[0], (tuple, list)):  # (pair, labels)
            return tuple(batch[0])
        return tuple(batch[:2]) if self.head_sized else batch[0]

    def save_statistics(self, path: str | Path) -> None:
        """Writes the frozen statistics and the kind they belong to (``.npz``)."""
        arrays = {name: ops.convert_to_numpy(getattr(self, name)) for name in _STATISTICS}
        with open(path, "wb") as file:
            np.savez(file, kind=np.array(self.options.kind), **arrays)

    def load_statistics(self, path: str | Path) -> None:
        """Restores statistics saved by ``save_statistics`` for the same kind and size.

        Raises:
            ValueError: if they were saved for another score kind or image size.
        """
        with np.load(path) as saved:
            kind = str(saved["kind"])
            if kind != self.options.kind or saved["map_mean"].shape != self.map_mean.shape:
                raise ValueError(
                    f"{path}: statistics of score kind {kind!r} "
                    f"{saved['map_mean'].shape}, not of {self.options.kind!r} "
                    f"{tuple(self.map_mean.shape)}"
                )
            for name in _STATISTICS:
                getattr(self, name).assign(saved[name])
