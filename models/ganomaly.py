"""The GANomaly training model: a Keras 3 Model with its own compile and train_step.

    model = GANomaly(isize=64, channels=1)
    model.compile(g_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5),
                  d_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5))
    model.fit(normal_images, epochs=15)   # or (corrupted, clean[, masks]) batches
    scorer = Scorer(model, ScoreOptions())   # scoring lives apart: models/scorer.py

Akcay et al., "GANomaly: Semi-Supervised Anomaly Detection via Adversarial
Training", ACCV 2018: a generator encoder1 -> decoder -> encoder2 and a
discriminator, trained on normal images only. With ``options.defect_head`` a
third network, a small U-Net, learns per-pixel defect probabilities from the
synthetic anomalies of ``models.anomalies`` (as DRAEM's discriminative network
does), reading the image and its reconstruction; and, where the user has some,
from labelled real defects (per pixel where a mask marks them, by their top
pixels where only the image label is known). The generator learns from normal
images only, whatever the head sees. With ``options.head_isize`` above ``isize``
the head reads the image at that larger size (``options.head_size``, ``[H, W]``,
square or with the frames' aspect, stored beside the generator's by preprocess)
and the reconstruction upsampled to it: thin and small defects keep their pixels.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from models import losses
from models.networks import (
    BN_MOMENTUM,
    build_defect_head,
    build_discriminator,
    build_generator,
    float32_outputs,
)
from models.options import ModelOptions, as_dict, check_share, from_dict

# The discriminator is re-initialised when its loss collapses below this,
# as in the original code: a perfect discriminator gives no useful gradient.
D_COLLAPSE_LOSS = 1e-5
# One training step runs the discriminator once on the real and once on the fake
# batch, where the original ran each twice (generator and discriminator phases) at
# momentum 0.9. At 0.9 squared the old running average decays exactly as in the
# original (0.6561 a step); the two batches' weights differ slightly: 0.154 real and
# 0.19 fake here, 0.163 and 0.181 there (tests/test_ganomaly.py measures both).
D_BN_MOMENTUM = BN_MOMENTUM**2
# A pixel is a defect for the head where the synthetic anomaly's mask is at least this.
HEAD_TARGET_LEVEL = 0.3


@keras.saving.register_keras_serializable(package="ganomaly")
class GANomaly(keras.Model):
    """GANomaly generator and discriminator trained together.

    Args:
        isize: image side, a multiple of 16 of at least 32.
        channels: 1 (grayscale) or 3 (RGB).
        options: the networks' sizes, a ``ModelOptions`` or its dict
            (``nz``, ``ngf``, ``ndf``, ``extra_layers``, ``skip_connections``,
            ``defect_head``, ``head_filters``, ``head_isize``, ``head_size``).
        seed: seeds the discriminator's re-initialisation.
    """

    def __init__(
        self,
        isize: int = 64,
        channels: int = 1,
        options: ModelOptions | dict | None = None,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isize < 32 or isize % 16:
            raise ValueError(f"isize must be a multiple of 16 of at least 32, got {isize!r}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        self.options = from_dict(ModelOptions, options)
        self.options.check()
        self.isize, self.channels, self.seed = isize, channels, seed
        o = self.options
        self.head_size = o.head_shape(isize)
        if min(self.head_size) < isize:
            raise ValueError(
                f"head_isize must be 0 or at least isize ({isize}), got "
                f"{o.head_size or o.head_isize!r}"
            )
        self.generator = build_generator(
            isize, channels, o.nz, o.ngf, o.extra_layers, skip_connections=o.skip_connections
        )
        self.discriminator = build_discriminator(
            isize, channels, o.ndf, o.extra_layers, batch_norm_momentum=D_BN_MOMENTUM
        )
        self.head = None
        if o.defect_head:  # at isize exactly today's head; larger, it upsamples the reconstruction
            self.head = build_defect_head(
                self.head_size, channels, o.head_filters, reconstruction_size=isize
            )
        self._reinit_seed = keras.random.SeedGenerator(seed)
        names = ["g_loss", "d_loss", "adv_loss", "con_loss", "enc_loss"]
        if self.head is not None:
            names.append("head_loss")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}
        self.d_reinit_tracker = keras.metrics.Sum(name="d_reinit")
        # The sub-networks are functional and built at construction.
        self.built = True

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            isize=self.isize, channels=self.channels, options=as_dict(self.options), seed=self.seed
        )
        return config

    def compile(
        self,
        g_optimizer: keras.optimizers.Optimizer,
        d_optimizer: keras.optimizers.Optimizer,
        w_adv: float = 1.0,
        w_con: float = 50.0,
        w_enc: float = 1.0,
        h_optimizer: keras.optimizers.Optimizer | None = None,
        label_topk_fraction: float = 0.01,
        **kwargs,
    ) -> None:
        """Sets one optimizer per network and the generator's loss weights.

        ``h_optimizer`` trains the defect head; required when the model has one.
        ``label_topk_fraction``: the share of the head's map an image-labelled
        defect's multiple-instance loss pools; the image score's
        (``score.topk_fraction``), so training pushes up what scoring reads.
        """
        check_share("label_topk_fraction", label_topk_fraction)
        if (self.head is None) != (h_optimizer is None):
            raise ValueError(
                f"h_optimizer must be given exactly when the model has a defect head "
                f"(defect_head={self.options.defect_head!r}), got {h_optimizer!r}"
            )
        # Keras tracks the optimizer passed here (saving, iterations): the generator's.
        super().compile(optimizer=g_optimizer, **kwargs)
        self.g_optimizer, self.d_optimizer, self.h_optimizer = g_optimizer, d_optimizer, h_optimizer
        self.w_adv, self.w_con, self.w_enc = w_adv, w_con, w_enc
        self.label_topk_fraction = label_topk_fraction

    @property
    def optimizers(self) -> list:
        """The optimizer of each trained network: generator, discriminator (, head)."""
        found = [self.g_optimizer, self.d_optimizer, self.h_optimizer]
        return [optimizer for optimizer in found if optimizer is not None]

    def build_optimizers(self) -> None:
        """Creates the optimizers' variables now (a distributed step cannot create them)."""
        self.g_optimizer.build(self.generator.trainable_variables)
        self.d_optimizer.build(self.discriminator.trainable_variables)
        if self.head is not None:
            self.h_optimizer.build(self.head.trainable_variables)

    @property
    def training_state(self) -> list:
        """Every variable training changes, in a fixed order: what a checkpoint holds.

        The networks (BN statistics included), their optimizers (step counts,
        learning rates, moments, loss scales) and the re-initialisation seed.
        """
        head = [] if self.head is None else [*self.head.variables, *self.h_optimizer.variables]
        return [
            *self.generator.variables,
            *self.discriminator.variables,
            self._reinit_seed.state,
            *self.g_optimizer.variables,
            *self.d_optimizer.variables,
            *head,
        ]

    @property
    def metrics(self) -> list:
        return [*self.trackers.values(), self.d_reinit_tracker]

    def call(self, images, training: bool = False):
        """Returns ``(reconstruction, latent_i, latent_o)``."""
        return self.generator(images, training=training)

    def _generator_losses(self, inputs, targets, training: bool) -> dict:
        # Losses in float32 whatever the compute dtype (mixed_float16 on a GPU).
        generated = self.generator(inputs, training=training)
        reconstruction, latent_i, latent_o = float32_outputs(generated)
        real_logits, real_features, _ = float32_outputs(
            self.discriminator(targets, training=training)
        )
        fake_logits, fake_features, _ = float32_outputs(
            self.discriminator(reconstruction, training=training)
        )
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
            "d_loss": losses.discriminator_loss(real_logits, fake_logits),
        }

    @property
    def head_sized(self) -> bool:
        """Whether the head reads images of its own, larger size (``head_size``)."""
        return self.head is not None and self.head_size != (self.isize, self.isize)

    def head_images(self, images):
        """``images`` at ``isize`` upsampled to ``head_size`` (bilinear): a stand-in only.

        The pipeline feeds the head its own preprocessed images; this serves a
        caller that has only the generator's.
        """
        return ops.image.resize(
            ops.cast(images, "float32"), self.head_size, interpolation="bilinear"
        )

    def _unpack(self, data):
        """``images``, ``(inputs, targets)``, ``(inputs, targets, masks)``, or labelled too.

        The labelled form adds ``(defects, defect_masks, has_mask)``. Returns
        ``(inputs, head_inputs, targets, masks, labelled)``.

        Inputs may carry synthetic anomalies, whose ``masks [B, H, W, 1]`` train the
        defect head; without masks the inputs are taken as free of defects. Labelled
        defects ``[K, H, W, C]`` train the head alone: their masks ``[K, H, W, 1]``
        where ``has_mask [K]`` is 1, their image label where it is 0. With a
        larger head, ``inputs`` and ``defects`` are pairs ``(at isize, at
        head_size)`` and the masks are at ``head_size``.
        """
        if not isinstance(data, (tuple, list)):
            data = (data,)
        inputs, head_inputs = self._pair(data[0])
        targets = data[1] if len(data) > 1 else inputs
        masks = data[2] if len(data) > 2 else ops.zeros_like(head_inputs[..., :1])
        labelled = None
        if len(data) > 3:
            defects, head_defects = self._pair(data[3])
            labelled = (defects, head_defects, data[4], data[5])
        return inputs, head_inputs, targets, masks, labelled

    def _pair(self, images):
        """``(images at isize, images at the head's size)`` of a pair or of one tensor."""
        if isinstance(images, (tuple, list)):
            return images[0], images[1]
        return images, self.head_images(images) if self.head_sized else images

    def _head_loss(self, head_inputs, reconstruction, masks, training: bool, labelled=None):
        """The head's loss; it reads ``head_inputs`` beside the (isize) ``reconstruction``."""
        if labelled is None:
            logits = self.head([head_inputs, reconstruction], training=training)
            target = ops.cast(masks[..., 0] >= HEAD_TARGET_LEVEL, "float32")
            return losses.segmentation_loss(target, ops.cast(logits, "float32"))
        defects, head_defects, defect_masks, has_mask = labelled
        # The head reads a defect's reconstruction as it will at inference; the
        # generator is only run on it, never taught to reproduce it.
        repaired = ops.stop_gradient(float32_outputs(self.generator(defects, training=False))[0])
        logits = self.head(
            [
                ops.concatenate([head_inputs, head_defects]),
                ops.concatenate([reconstruction, repaired]),
            ],
            training=training,
        )
        logits = ops.cast(logits, "float32")
        count = ops.shape(head_inputs)[0]
        target = ops.cast(masks[..., 0] >= HEAD_TARGET_LEVEL, "float32")
        defect_target = ops.cast(defect_masks[..., 0] >= 0.5, "float32")
        has_mask = ops.cast(has_mask, "float32")
        # Three terms of equal weight: normals with synthetic anomalies, real
        # defects with masks, real defects with image labels.
        return (
            losses.segmentation_loss(target, logits[:count])
            + losses.labelled_segmentation_loss(defect_target, logits[count:], has_mask)
            + losses.top_k_label_loss(logits[count:], 1.0 - has_mask, self.label_topk_fraction)
        )

    def train_step(self, data):
        inputs, head_inputs, images, masks, labelled = self._unpack(data)
        # Under a tf.distribute strategy the optimizers sum the replicas' gradients:
        # each replica's mean loss is divided by their number (the global batch's mean).
        replicas = tf.distribute.get_strategy().num_replicas_in_sync

        # One forward pass for both networks' losses: the discriminator's passes on
        # the real and the reconstructed batch serve the generator's feature matching
        # and the discriminator's own loss (the original ran both passes twice; the
        # discriminator's weights do not change in between, so the outputs are equal).
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            g = self._generator_losses(inputs, images, training=True)
            d_loss = g.pop("d_loss")
            g_scaled = self.g_optimizer.scale_loss(g["g_loss"] / replicas)
            d_scaled = self.d_optimizer.scale_loss(d_loss / replicas)

        # Generator: reconstruct the (clean) image, match the discriminator's features.
        g_weights = self.generator.trainable_weights
        self.g_optimizer.apply_gradients(zip(g_tape.gradient(g_scaled, g_weights), g_weights))

        # Discriminator: tell real images from their reconstructions (only its own
        # weights are differentiated: the reconstruction is fixed for it).
        d_weights = self.discriminator.trainable_weights
        self.d_optimizer.apply_gradients(zip(d_tape.gradient(d_scaled, d_weights), d_weights))
        reconstruction = ops.stop_gradient(g["reconstruction"])

        # Defect head: find the synthetic anomalies (and the labelled defects) next to
        # the (fixed) reconstruction.
        if self.head is not None:
            with tf.GradientTape() as h_tape:
                g["head_loss"] = self._head_loss(
                    head_inputs, reconstruction, masks, training=True, labelled=labelled
                )
                h_scaled = self.h_optimizer.scale_loss(g["head_loss"] / replicas)
            h_weights = self.head.trainable_weights
            h_grads = h_tape.gradient(h_scaled, h_weights)
            self.h_optimizer.apply_gradients(zip(h_grads, h_weights))

        reinit = self._reinitialize_if_collapsed(d_loss)
        return self._update_trackers(g, d_loss, reinit)

    def _reinitialize_if_collapsed(self, d_loss):
        """Re-initialises a collapsed discriminator, as the paper's code does; 1.0 if it did.

        The decision is taken on the mean loss of all replicas and the new weights
        are drawn once, in cross-replica context, so every replica keeps the same.
        """
        context = tf.distribute.get_replica_context()
        if context is None:  # called outside a replica (cross-replica context)
            return self._reinitialize_if(d_loss)
        mean_loss = context.all_reduce(tf.distribute.ReduceOp.MEAN, d_loss)
        return context.merge_call(self._merged_reinitialize_if, args=(mean_loss,))

    def _merged_reinitialize_if(self, strategy, loss):
        return self._reinitialize_if(strategy.experimental_local_results(loss)[0])

    def _reinitialize_if(self, d_loss):
        return tf.cond(
            d_loss < D_COLLAPSE_LOSS, self._reinitialize_discriminator, lambda: tf.constant(0.0)
        )

    def evaluation_losses(self, data) -> dict:
        """The loss terms of one batch in inference mode; updates no state.

        Returns:
            ``{"g_loss", "d_loss", "adv_loss", "con_loss", "enc_loss"}`` (and
            ``"head_loss"`` with a defect head), scalars.
        """
        g, d_loss = self._inference_losses(data)
        g.pop("reconstruction")
        return {**g, "d_loss": d_loss}

    def _inference_losses(self, data):
        inputs, head_inputs, images, masks, _ = self._unpack(data)
        g = self._generator_losses(inputs, images, training=False)
        d_loss = g.pop("d_loss")
        if self.head is not None:
            reconstruction = g["reconstruction"]
            g["head_loss"] = self._head_loss(head_inputs, reconstruction, masks, training=False)
        return g, d_loss

    def test_step(self, data):
        g, d_loss = self._inference_losses(data)
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
