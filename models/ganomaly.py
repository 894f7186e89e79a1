"""The GANomaly training model: a Keras 3 Model with its own compile and train_step.

    model = GANomaly(isize=64, channels=1)
    model.compile(g_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5),
                  d_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5))
    model.fit(normal_images, epochs=15)
    model.calibrate(validation_normals)
    outputs = model.score(images)  # {"score", "anomaly_map", "latent", "residual"}

Akcay et al., "GANomaly: Semi-Supervised Anomaly Detection via Adversarial
Training", ACCV 2018: a generator encoder1 -> decoder -> encoder2 and a
discriminator, trained on normal images only.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from models import losses, scoring
from models.networks import build_discriminator, build_generator

# The discriminator is re-initialised when its loss collapses below this,
# as in the original code: a perfect discriminator gives no useful gradient.
D_COLLAPSE_LOSS = 1e-5


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
        score_kind: ``latent``, ``residual`` or ``combined`` (see models.scoring).
        smoothing_sigma: Gaussian sigma of the anomaly map, in pixels.
        topk_fraction: share of the map's pixels averaged into the image score.
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
        score_kind: str = "latent",
        smoothing_sigma: float = 1.0,
        topk_fraction: float = 0.01,
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
        self.score_kind = score_kind
        self.smoothing_sigma = smoothing_sigma
        self.topk_fraction = topk_fraction
        self.seed = seed
        self.generator = build_generator(isize, channels, nz, ngf, extra_layers)
        self.discriminator = build_discriminator(isize, channels, ndf, extra_layers)
        self._reinit_seed = keras.random.SeedGenerator(seed)
        # Standardisation of [latent, residual, map] scores, from validation normals.
        self.score_mean = self.add_weight(
            shape=(3,), initializer="zeros", trainable=False, name="score_mean"
        )
        self.score_std = self.add_weight(
            shape=(3,), initializer="ones", trainable=False, name="score_std"
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
            score_kind=self.score_kind,
            smoothing_sigma=self.smoothing_sigma,
            topk_fraction=self.topk_fraction,
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

    def _generator_losses(self, images, training: bool) -> dict:
        reconstruction, latent_i, latent_o = self.generator(images, training=training)
        _, real_features = self.discriminator(images, training=training)
        _, fake_features = self.discriminator(reconstruction, training=training)
        adv = losses.adversarial_loss(real_features, fake_features)
        con = losses.contextual_loss(images, reconstruction)
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
        real_logits, _ = self.discriminator(images, training=training)
        fake_logits, _ = self.discriminator(reconstruction, training=training)
        return losses.discriminator_loss(real_logits, fake_logits)

    def train_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data

        # Generator: reconstruct the image, match the discriminator's features.
        with tf.GradientTape() as g_tape:
            g = self._generator_losses(images, training=True)
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
        images = data[0] if isinstance(data, (tuple, list)) else data
        g = self._generator_losses(images, training=False)
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
        """Unscaled latent and residual scores and the residual map, inference mode."""
        reconstruction, latent_i, latent_o = self.generator(images, training=False)
        amap = scoring.residual_map(images, reconstruction, self.smoothing_sigma)
        return {
            "latent": scoring.latent_distance(latent_i, latent_o),
            "residual": scoring.topk_mean(amap, self.topk_fraction),
            "map": amap,
            "reconstruction": reconstruction,
        }

    def score(self, images) -> dict:
        """Standardised image score of ``score_kind`` and anomaly map, per image.

        Args:
            images: ``[B, isize, isize, C]`` preprocessed to [-1, 1].

        Returns:
            ``score [B]``, ``anomaly_map [B, isize, isize]``, ``latent [B]``,
            ``residual [B]`` and ``reconstruction``; the scores are in units of
            the validation normals' standard deviation.
        """
        raw = self.raw_scores(images)
        mean, std = self.score_mean, self.score_std
        latent_z = scoring.standardize(raw["latent"], mean[0], std[0])
        residual_z = scoring.standardize(raw["residual"], mean[1], std[1])
        return {
            "score": scoring.combine(self.score_kind, latent_z, residual_z),
            "anomaly_map": scoring.standardize(raw["map"], mean[2], std[2]),
            "latent": latent_z,
            "residual": residual_z,
            "reconstruction": raw["reconstruction"],
        }

    def calibrate(self, normal_images) -> dict:
        """Freezes the score standardisation from validation normals.

        Args:
            normal_images: an iterable of ``[B, isize, isize, C]`` batches of
                normal images that the model was not trained on.

        Returns:
            The statistics set, as floats.
        """
        latent, residual, map_sum, map_sq, pixels = [], [], 0.0, 0.0, 0
        for batch in normal_images:
            batch = batch[0] if isinstance(batch, (tuple, list)) else batch
            raw = {k: ops.convert_to_numpy(v) for k, v in self.raw_scores(batch).items()}
            latent.extend(raw["latent"].tolist())
            residual.extend(raw["residual"].tolist())
            map_sum += float(raw["map"].sum())
            map_sq += float((raw["map"].astype("float64") ** 2).sum())
            pixels += raw["map"].size
        if not latent:
            raise ValueError("calibrate needs at least one normal image")
        map_mean = map_sum / pixels
        map_std = max(map_sq / pixels - map_mean**2, 0.0) ** 0.5
        stats = {
            "latent_mean": float(ops.mean(latent)),
            "latent_std": float(ops.std(latent)),
            "residual_mean": float(ops.mean(residual)),
            "residual_std": float(ops.std(residual)),
            "map_mean": map_mean,
            "map_std": map_std,
        }
        self.score_mean.assign([stats["latent_mean"], stats["residual_mean"], map_mean])
        self.score_std.assign([stats["latent_std"], stats["residual_std"], map_std])
        return stats
