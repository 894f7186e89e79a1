"""GANomaly's losses as pure functions of tensors.

    from models import losses
    g_loss = losses.generator_loss(adv, con, enc, w_adv=1, w_con=50, w_enc=1)

Each returns a scalar averaged over the batch and the elements, as the
original PyTorch code does (``nn.L1Loss``, ``l2_loss``, ``nn.BCELoss``).
"""

from __future__ import annotations

from keras import ops

from models.scoring import topk_mean


def adversarial_loss(real_features, fake_features):
    """Feature matching: mean squared distance of the discriminator's features."""
    return ops.mean(ops.square(real_features - fake_features))


def contextual_loss(images, reconstructions):
    """Mean absolute (L1) difference between image and reconstruction."""
    return ops.mean(ops.abs(images - reconstructions))


def encoder_loss(latent_i, latent_o):
    """Mean squared (L2) difference between the two latent codes."""
    return ops.mean(ops.square(latent_i - latent_o))


def generator_loss(adv, con, enc, w_adv: float = 1.0, w_con: float = 50.0, w_enc: float = 1.0):
    """The paper's weighted sum ``w_adv * adv + w_con * con + w_enc * enc``."""
    return w_adv * adv + w_con * con + w_enc * enc


def _bce_with_logits(logits, target: float):
    labels = ops.full_like(logits, target)
    return ops.mean(ops.binary_crossentropy(labels, logits, from_logits=True))


def discriminator_loss(real_logits, fake_logits):
    """Binary cross-entropy, real -> 1 and reconstruction -> 0, averaged."""
    return 0.5 * (_bce_with_logits(real_logits, 1.0) + _bce_with_logits(fake_logits, 0.0))


def segmentation_loss(masks, logits):
    """The defect head's loss: per-pixel BCE plus soft Dice over the whole batch.

    Defect pixels are few: the BCE alone would be content to say "no defect"
    everywhere, the Dice term (taken over the batch, so a batch of normal images
    does not divide by zero) rewards finding them.

    Args:
        masks: ``[B, H, W]`` targets in {0, 1}.
        logits: ``[B, H, W]`` the head's logits.
    """
    bce = ops.mean(ops.binary_crossentropy(masks, logits, from_logits=True))
    probability = ops.sigmoid(logits)
    overlap = ops.sum(probability * masks)
    dice = (2.0 * overlap + 1.0) / (ops.sum(probability) + ops.sum(masks) + 1.0)
    return bce + (1.0 - dice)


def labelled_segmentation_loss(masks, logits, weights):
    """``segmentation_loss`` over the examples whose ``weights [B]`` are 1 (0 if none).

    The labelled defects with a mask: their own term, so a few real defects are
    not averaged away among a batch of normals. Per image (BCE balanced between the
    defect's pixels and the rest, Dice per image), so an 8-pixel blowhole weighs as much
    as a large uneven region: summed over the batch, the head never learnt the small ones
    (Magnetic Tile, 10 per type: image / pixel AUROC 0.731 / 0.702 -> 0.896 / 0.762).
    """
    per_pixel = ops.binary_crossentropy(masks, logits, from_logits=True)
    # Balanced per image: a defect's pixels weigh as much as its background, however few.
    inside = ops.sum(per_pixel * masks, axis=(1, 2)) / (ops.sum(masks, axis=(1, 2)) + 1e-6)
    outside = ops.sum(per_pixel * (1.0 - masks), axis=(1, 2)) / (
        ops.sum(1.0 - masks, axis=(1, 2)) + 1e-6
    )
    bce = ops.sum(0.5 * (inside + outside) * weights) / (ops.sum(weights) + 1e-6)
    probability = ops.sigmoid(logits)
    overlap = ops.sum(probability * masks, axis=(1, 2))
    dice = (2.0 * overlap + 1.0) / (
        ops.sum(probability, axis=(1, 2)) + ops.sum(masks, axis=(1, 2)) + 1.0
    )
    dice_loss = ops.sum((1.0 - dice) * weights) / (ops.sum(weights) + 1e-6)
    return ops.where(ops.sum(weights) > 0, bce + dice_loss, 0.0)


def top_k_label_loss(logits, weights, fraction: float = 0.01):
    """Multiple-instance loss of image-labelled defects: their top pixels must say defect.

    Only the image is known to be defective, not where: the mean logit of its
    ``fraction`` highest pixels (``scoring.topk_mean``, the image score's pooling)
    is pushed towards 1.

    Args:
        logits: ``[B, H, W]`` the head's logits.
        weights: ``[B]``, 1 for the image-labelled defects, 0 for the rest.
        fraction: share of the pixels pooled (``score.topk_fraction``).
    """
    pooled = topk_mean(logits, fraction)
    bce = ops.binary_crossentropy(ops.ones_like(pooled)[:, None], pooled[:, None], True)[:, 0]
    return ops.sum(bce * weights) / (ops.sum(weights) + 1e-6)
