"""The GANomaly training model: a Keras 3 Model with its own compile and train_step.

    model = GANomaly(isize=64, channels=1)
    model.compile(g_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5),
                  d_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5))
    model.fit(normal_images, epochs=15)
    model.calibrate(validation_normals)
    outputs = model.score(images)  # {"score", "anomaly_map", "latent", "map_score", ...}

Akcay et al., "GANomaly: Semi-Supervised Anomaly Detection via Adversarial
Training", ACCV 2018: a generator encoder1 -> decoder -> encoder2 and a
discriminator, trained on normal images only.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from models import losses, scoring
from models.networks import build_discriminator, build_generator

# The discriminator is re-initialised when its loss collapses below this,
# as in the original code: a perfect discriminator gives no useful gradient.
D_COLLAPSE_LOSS = 1e-5
# Per-pixel map statistics are shrunk towards the global ones as if this many
# extra images had the global statistics: stable with few validation images.
PRIOR_IMAGES = 10.0


@keras.saving.register_keras_serializable(package="ganomaly")
class GANomaly(keras.Model):
    """GANomaly generator and discriminator trained together.

    Args:
        isize: image side, a multiple of 16 of at least 32.
        channels: 1 (grayscale) or 3 (RGB).
        nz: latent size.
        ngf: generator base filters.
        ndf: discriminator base filters.
        extra_layers: extra 3x3 conv blocks per network.
        skip_connections: U-Net skips from encoder1 to the decoder (Skip-GANomaly).
        score_kind: ``latent``, ``residual``, ``ssim``, ``combined`` or
            ``discriminator`` (see models.scoring).
        smoothing_sigma: Gaussian sigma of the anomaly map, in pixels.
        topk_fraction: share of the map's pixels averaged into the image score.
        pixel_norm: standardise the maps per pixel position (for aligned
            parts, where edges always reconstruct worse) instead of globally.
        seed: seeds the discriminator's re-initialisation.
    """

    def __init__(
        self,
        isize: int = 64,
        channels: int = 1,
        nz: int = 100,
        ngf: int = 64,
        ndf: int = 64,
        extra_layers: int = 0,
        skip_connections: bool = False,
        score_kind: str = "latent",
        smoothing_sigma: float = 1.0,
        topk_fraction: float = 0.01,
        pixel_norm: bool = False,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isize < 32 or isize % 16:
            raise ValueError(f"isize must be a multiple of 16 of at least 32, got {isize!r}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        for name, value in (("nz", nz), ("ngf", ngf), ("ndf", ndf)):
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value!r}")
        if extra_layers < 0:
            raise ValueError(f"extra_layers must be >= 0, got {extra_layers!r}")
        if score_kind not in scoring.SCORE_KINDS:
            raise ValueError(f"score_kind must be one of {scoring.SCORE_KINDS}, got {score_kind!r}")
        if smoothing_sigma < 0:
            raise ValueError(f"smoothing_sigma must be >= 0, got {smoothing_sigma!r}")
        if not 0.0 < topk_fraction <= 1.0:
            raise ValueError(f"topk_fraction must be in (0, 1], got {topk_fraction!r}")
        self.isize, self.channels, self.nz = isize, channels, nz
        self.ngf, self.ndf, self.extra_layers = ngf, ndf, extra_layers
        self.skip_connections = bool(skip_connections)
        self.score_kind = score_kind
        self.smoothing_sigma = smoothing_sigma
        self.topk_fraction = topk_fraction
        self.pixel_norm = bool(pixel_norm)
        self.seed = seed
        self.generator = build_generator(
            isize, channels, nz, ngf, extra_layers, skip_connections=self.skip_connections
        )
        self.discriminator = build_discriminator(isize, channels, ndf, extra_layers)
        self._reinit_seed = keras.random.SeedGenerator(seed)
        # Standardisation, from validation normals: each of scoring.MAP_KINDS
        # (per pixel or global), then the [latent, map] image scores.
        map_shape = (len(scoring.MAP_KINDS), isize, isize)
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
        self.trackers = {
            name: keras.metrics.Mean(name=name)
            for name in ("g_loss", "d_loss", "adv_loss", "con_loss", "enc_loss")
        }
        self.d_reinit_tracker = keras.metrics.Sum(name="d_reinit")
        # The sub-networks are functional and built at construction.
        self.built = True

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            isize=self.isize,
            channels=self.channels,
            nz=self.nz,
            ngf=self.ngf,
            ndf=self.ndf,
            extra_layers=self.extra_layers,
            skip_connections=self.skip_connections,
            score_kind=self.score_kind,
            smoothing_sigma=self.smoothing_sigma,
            topk_fraction=self.topk_fraction,
            pixel_norm=self.pixel_norm,
            seed=self.seed,
        )
        return config

    def compile(
        self,
        g_optimizer: keras.optimizers.Optimizer,
        d_optimizer: keras.optimizers.Optimizer,
        w_adv: float = 1.0,
        w_con: float = 50.0,
        w_enc: float = 1.0,
        **kwargs,
    ) -> None:
        """Sets one optimizer per network and the generator's loss weights."""
        # Keras tracks the optimizer passed here (saving, iterations): the generator's.
        super().compile(optimizer=g_optimizer, **kwargs)
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer
        self.w_adv, self.w_con, self.w_enc = w_adv, w_con, w_enc

    @property
    def metrics(self) -> list:
        return [*self.trackers.values(), self.d_reinit_tracker]

    def call(self, images, training: bool = False):
        """Returns ``(reconstruction, latent_i, latent_o)``."""
        return self.generator(images, training=training)

    def _generator_losses(self, inputs, targets, training: bool) -> dict:
        reconstruction, latent_i, latent_o = self.generator(inputs, training=training)
        _, real_features, _ = self.discriminator(targets, training=training)
        _, fake_features, _ = self.discriminator(reconstruction, training=training)
        adv = losses.adversarial_loss(real_features, fake_features)
        con = losses.contextual_loss(targets, reconstruction)
        enc = losses.encoder_loss(latent_i, latent_o)
        g_loss = losses.generator_loss(adv, con, enc, self.w_adv, self.w_con, self.w_enc)
        return {
            "g_loss": g_loss,
            "adv_loss": adv,
            "con_loss": con,
            "enc_loss": enc,
            "reconstruction": reconstruction,
        }

    def _discriminator_loss(self, images, reconstruction, training: bool):
        real_logits, _, _ = self.discriminator(images, training=training)
        fake_logits, _, _ = self.discriminator(reconstruction, training=training)
        return losses.discriminator_loss(real_logits, fake_logits)

    @staticmethod
    def _unpack(data):
        """``images`` or ``(inputs, targets)``: inputs may carry synthetic anomalies."""
        if isinstance(data, (tuple, list)):
            return (data[0], data[1]) if len(data) > 1 else (data[0], data[0])
        return data, data

    def train_step(self, data):
        inputs, images = self._unpack(data)

        # Generator: reconstruct the (clean) image, match the discriminator's features.
        with tf.GradientTape() as g_tape:
            g = self._generator_losses(inputs, images, training=True)
        g_weights = self.generator.trainable_weights
        self.g_optimizer.apply_gradients(zip(g_tape.gradient(g["g_loss"], g_weights), g_weights))

        # Discriminator: tell real images from their (fixed) reconstructions.
        reconstruction = ops.stop_gradient(g["reconstruction"])
        with tf.GradientTape() as d_tape:
            d_loss = self._discriminator_loss(images, reconstruction, training=True)
        d_weights = self.discriminator.trainable_weights
        self.d_optimizer.apply_gradients(zip(d_tape.gradient(d_loss, d_weights), d_weights))

        # Re-initialise a collapsed discriminator, as the paper's code does.
        reinit = tf.cond(
            d_loss < D_COLLAPSE_LOSS, self._reinitialize_discriminator, lambda: tf.constant(0.0)
        )
        return self._update_trackers(g, d_loss, reinit)

    def test_step(self, data):
        inputs, images = self._unpack(data)
        g = self._generator_losses(inputs, images, training=False)
        d_loss = self._discriminator_loss(images, g["reconstruction"], training=False)
        return self._update_trackers(g, d_loss, tf.constant(0.0))

    def _update_trackers(self, g: dict, d_loss, reinit) -> dict:
        for name, tracker in self.trackers.items():
            tracker.update_state(d_loss if name == "d_loss" else g[name])
        self.d_reinit_tracker.update_state(reinit)
        return {m.name: m.result() for m in self.metrics}

    def _reinitialize_discriminator(self):
        """Draws fresh N(0, 0.02) weights (BN scales N(1, 0.02)); returns 1.0."""
        for weight in self.discriminator.weights:
            name = weight.path.split("/")[-1]
            if name == "kernel":
                value = keras.random.normal(weight.shape, 0.0, 0.02, seed=self._reinit_seed)
            elif name == "gamma":
                value = keras.random.normal(weight.shape, 1.0, 0.02, seed=self._reinit_seed)
            elif name == "moving_variance":
                value = ops.ones(weight.shape)
            else:  # beta, bias, moving_mean
                value = ops.zeros(weight.shape)
            weight.assign(value)
        return tf.constant(1.0)

    def raw_scores(self, images) -> dict:
        """Unscaled latent distance and residual/SSIM/discriminator maps, in inference mode."""
        reconstruction, latent_i, latent_o = self.generator(images, training=False)
        _, _, image_features = self.discriminator(images, training=False)
        _, _, reconstruction_features = self.discriminator(reconstruction, training=False)
        return {
            "latent": scoring.latent_distance(latent_i, latent_o),
            "residual": scoring.residual_map(images, reconstruction, self.smoothing_sigma),
            "ssim": scoring.ssim_map(images, reconstruction),
            "discriminator": scoring.feature_map(
                image_features, reconstruction_features, self.isize, self.smoothing_sigma
            ),
            "reconstruction": reconstruction,
        }

    def _standardized(self, raw: dict) -> dict:
        maps = {
            name: scoring.standardize(raw[name], self.map_mean[i], self.map_std[i])
            for i, name in enumerate(scoring.MAP_KINDS)
        }
        anomaly_map = scoring.kind_map(self.score_kind, maps)
        return {
            "anomaly_map": anomaly_map,
            "latent_raw": raw["latent"],
            "map_score_raw": scoring.topk_mean(anomaly_map, self.topk_fraction),
        }

    def score(self, images) -> dict:
        """Standardised image score of ``score_kind`` and anomaly map, per image.

        Args:
            images: ``[B, isize, isize, C]`` preprocessed to [-1, 1].

        Returns:
            ``score [B]``, ``anomaly_map [B, isize, isize]``, ``latent [B]``,
            ``map_score [B]`` and ``reconstruction``; scores and maps are in
            units of the validation normals' standard deviation.
        """
        raw = self.raw_scores(images)
        parts = self._standardized(raw)
        latent = scoring.standardize(parts["latent_raw"], self.score_mean[0], self.score_std[0])
        map_score = scoring.standardize(
            parts["map_score_raw"], self.score_mean[1], self.score_std[1]
        )
        return {
            "score": latent if self.score_kind == "latent" else map_score,
            "anomaly_map": parts["anomaly_map"],
            "latent": latent,
            "map_score": map_score,
            "reconstruction": raw["reconstruction"],
        }

    def _map_statistics(self, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std ``[H, W]`` of maps ``[N, H, W]``, per pixel (shrunk) or global."""
        global_mean, global_var = maps.mean(), maps.var()
        if not self.pixel_norm:
            shape = maps.shape[1:]
            return np.full(shape, global_mean), np.full(shape, np.sqrt(global_var))
        n = len(maps)
        mean = (n * maps.mean(0) + PRIOR_IMAGES * global_mean) / (n + PRIOR_IMAGES)
        var = (n * maps.var(0) + PRIOR_IMAGES * global_var) / (n + PRIOR_IMAGES)
        return mean, np.sqrt(var)

    def calibrate(self, normal_images) -> dict:
        """Freezes the map and score standardisation from validation normals.

        Args:
            normal_images: an iterable of ``[B, isize, isize, C]`` batches of
                normal images that the model was not trained on.

        Returns:
            Summary statistics (global means and stds), as floats.
        """
        batches = [b[0] if isinstance(b, (tuple, list)) else b for b in normal_images]
        if not batches:
            raise ValueError("calibrate needs at least one normal image")
        raws = [
            {k: ops.convert_to_numpy(v) for k, v in self.raw_scores(b).items()} for b in batches
        ]
        stats, means, stds = {}, [], []
        for name in scoring.MAP_KINDS:
            maps = np.concatenate([r[name] for r in raws]).astype(np.float64)
            mean, std = self._map_statistics(maps)
            means.append(mean)
            stds.append(std)
            stats[f"{name}_map_mean"] = float(maps.mean())
            stats[f"{name}_map_std"] = float(maps.std())
        self.map_mean.assign(np.stack(means))
        self.map_std.assign(np.stack(stds))
        parts = [self._standardized(r) for r in raws]
        latent = np.concatenate([ops.convert_to_numpy(p["latent_raw"]) for p in parts])
        map_score = np.concatenate([ops.convert_to_numpy(p["map_score_raw"]) for p in parts])
        self.score_mean.assign([latent.mean(), map_score.mean()])
        self.score_std.assign([latent.std(), map_score.std()])
        stats.update(
            latent_mean=float(latent.mean()),
            latent_std=float(latent.std()),
            map_score_mean=float(map_score.mean()),
            map_score_std=float(map_score.std()),
            images=int(len(latent)),
        )
        return stats
