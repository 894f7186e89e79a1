"""models.losses on small hand-made tensors; every expected value is worked out by hand."""

import math

import numpy as np
import pytest
from keras import ops

from models import losses


def _value(tensor) -> float:
    array = ops.convert_to_numpy(tensor)
    assert array.shape == (), f"expected a scalar, got shape {array.shape}"
    return float(array)


def _t(values):
    return ops.convert_to_tensor(np.asarray(values, dtype="float32"))


def test_adversarial_loss_is_mean_squared_feature_distance():
    real = _t([[[[1.0, 2.0]], [[3.0, 4.0]]]])  # [1, 2, 1, 2] feature maps
    fake = _t([[[[0.0, 2.0]], [[3.0, 2.0]]]])
    # differences 1, 0, 0, 2 -> squares 1, 0, 0, 4 -> mean 5 / 4
    assert _value(losses.adversarial_loss(real, fake)) == pytest.approx(1.25)


def test_adversarial_loss_is_zero_for_equal_features():
    features = _t(np.arange(24).reshape(2, 2, 2, 3))
    assert _value(losses.adversarial_loss(features, features)) == 0.0


def test_contextual_loss_is_mean_absolute_error():
    images = _t([[[[1.0], [-1.0]], [[0.5], [0.0]]]])  # [1, 2, 2, 1]
    reconstructions = _t([[[[0.0], [0.0]], [[0.0], [0.25]]]])
    # |1| + |-1| + |0.5| + |-0.25| = 2.75 over 4 pixels -> 0.6875
    assert _value(losses.contextual_loss(images, reconstructions)) == pytest.approx(0.6875)


def test_contextual_loss_is_l1_not_l2():
    images = _t([[[[2.0]]]])
    reconstructions = _t([[[[-1.0]]]])
    # |2 - (-1)| = 3 (an L2 loss would give 9)
    assert _value(losses.contextual_loss(images, reconstructions)) == pytest.approx(3.0)


def test_encoder_loss_is_mean_squared_latent_distance():
    latent_i = _t([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    latent_o = _t([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    # squares: 0, 4, 9 and 1, 1, 1 -> 16 over 6 elements
    assert _value(losses.encoder_loss(latent_i, latent_o)) == pytest.approx(16 / 6)


def test_generator_loss_uses_the_paper_weights_by_default():
    # 1 * 0.5 + 50 * 0.1 + 1 * 2.0 = 7.5
    assert float(losses.generator_loss(0.5, 0.1, 2.0)) == pytest.approx(7.5)
    explicit = losses.generator_loss(0.5, 0.1, 2.0, w_adv=1, w_con=50, w_enc=1)
    assert float(explicit) == pytest.approx(7.5)


def test_generator_loss_custom_weights_on_tensors():
    adv, con, enc = _t(0.5), _t(0.1), _t(2.0)
    # 2 * 0.5 + 10 * 0.1 + 3 * 2.0 = 1 + 1 + 6 = 8
    got = _value(losses.generator_loss(adv, con, enc, w_adv=2.0, w_con=10.0, w_enc=3.0))
    assert got == pytest.approx(8.0, rel=1e-6)


def test_discriminator_loss_of_zero_logits_is_log_2():
    # sigmoid(0) = 1/2: BCE is -log(1/2) = log 2 for both targets
    zeros = _t([0.0, 0.0, 0.0])
    assert _value(losses.discriminator_loss(zeros, zeros)) == pytest.approx(math.log(2), rel=1e-5)


def test_discriminator_loss_by_hand():
    real = _t([0.0, math.log(3.0)])
    fake = _t([0.0, math.log(3.0)])
    # sigmoid(log 3) = 3/4
    # real (target 1): log 2 and -log(3/4) = log(4/3)  -> mean (log 2 + log 4/3) / 2
    # fake (target 0): log 2 and -log(1/4) = log 4     -> mean (log 2 + log 4) / 2
    # loss = half of their sum
    expected = 0.5 * ((math.log(2) + math.log(4 / 3)) / 2 + (math.log(2) + math.log(4)) / 2)
    assert _value(losses.discriminator_loss(real, fake)) == pytest.approx(expected, rel=1e-5)


def test_discriminator_loss_is_small_for_a_perfect_discriminator_and_large_when_fooled():
    confident_real, confident_fake = _t([20.0, 20.0]), _t([-20.0, -20.0])
    # -log(sigmoid(20)) = log(1 + e^-20) ~ 2e-9
    assert _value(losses.discriminator_loss(confident_real, confident_fake)) < 1e-6
    # swapped: each BCE is about 20, their half-sum about 20
    fooled = _value(losses.discriminator_loss(confident_fake, confident_real))
    assert fooled == pytest.approx(20.0, rel=1e-3)


def test_labelled_segmentation_loss_weighs_a_small_defect_as_much_as_a_large_one():
    # A 2x2 and a 16x16 defect on 32x32 images: missing either one costs about the same
    # (summed over the batch, missing the small one cost a hundredth of the large one).
    masks = np.zeros((2, 32, 32), "float32")
    masks[0, :2, :2] = 1.0
    masks[1, :16, :16] = 1.0
    hit, miss = np.where(masks > 0, 10.0, -10.0), np.full((2, 32, 32), -10.0)
    weights = _t([1.0, 1.0])
    miss_small = losses.labelled_segmentation_loss(_t(masks), _t([miss[0], hit[1]]), weights)
    miss_large = losses.labelled_segmentation_loss(_t(masks), _t([hit[0], miss[1]]), weights)
    found_both = losses.labelled_segmentation_loss(_t(masks), _t(hit), weights)
    assert _value(found_both) < 0.05
    assert _value(miss_small) == pytest.approx(_value(miss_large), rel=0.1)
    assert _value(miss_small) > 2.0


def test_top_k_label_loss_pools_the_share_it_is_given():
    # One pixel of 100 says defect (logit 10), the rest say not (-10). Pooling the top 1%
    # reads that pixel alone: the image label is met. The top 10% averages it with nine
    # others to (10 - 90) / 10 = -8: the loss is about BCE(1, -8) = 8.
    logits = np.full((2, 10, 10), -10.0, "float32")
    logits[:, 4, 4] = 10.0
    weights = _t([1.0, 0.0])  # the second image is not image-labelled: it does not count
    assert _value(losses.top_k_label_loss(_t(logits), weights, fraction=0.01)) < 1e-3
    pooled_wide = _value(losses.top_k_label_loss(_t(logits), weights, fraction=0.1))
    assert pooled_wide == pytest.approx(8.0 + math.log1p(math.exp(-8.0)), rel=1e-4)
