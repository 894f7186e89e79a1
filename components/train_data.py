"""The train stage's input: the training normals streamed from TFRecords, epoch by epoch.

    data = TrainingData(config, preprocess_dir, replicas=1)
    for batch in data.epoch(3, skip=5): ...   # epoch 3 from its 6th batch

Each epoch's order, flips and synthetic anomalies are a pure function of
``(train.seed, epoch)``, so a run resumed in the middle of an epoch sees the
same batches as one never interrupted. With ``preprocess.tiles`` the examples
are the tiles of every image (``models.tiling``). ``train.cache``: ``memory`` keeps the
decoded split in memory after the first epoch, ``none`` streams it from the
TFRecords every epoch, ``auto`` keeps it when it takes at most
``CACHE_AUTO_MAX_BYTES``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import tensorflow as tf

from models.anomalies import KINDS, corrupt, gallery
from models.tiling import TileGrid
from pipeline.core import records
from pipeline.core.config import Config

SHUFFLE_BUFFER = 4096
CACHE_AUTO_MAX_BYTES = 1 << 30  # train.cache: auto keeps a split of up to 1 GiB in memory


def epoch_seed(seed: int, epoch: int) -> int:
    """A 31-bit seed of its own for every ``(train.seed, epoch)``."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] >> 1)


def cache_in_memory(info: dict, split: str, mode: str) -> bool:
    """Whether ``train.cache`` (``auto``, ``memory``, ``none``) keeps ``split`` in memory."""
    if mode != "auto":
        return mode == "memory"
    spec, grid = info["spec"], TileGrid.of(info["spec"])
    pixels = grid.count * spec["isize"] ** 2 if grid else spec["isize"] ** 2
    size = info["splits"][split]["normal"] * pixels * spec["channels"] * 4
    return size <= CACHE_AUTO_MAX_BYTES


def normal_tiles(preprocess_dir: Path, split: str) -> tuple[tf.data.Dataset, int]:
    """A split's normal images, or their tiles with ``preprocess.tiles``; and how many."""
    info = records.read_info(preprocess_dir)
    images, count = records.normal_images(preprocess_dir, split), info["splits"][split]["normal"]
    grid = TileGrid.of(info["spec"])
    if grid is None:
        return images, count
    count *= grid.count
    tiles = images.map(lambda image: grid.cut(image[None])).unbatch()
    return tiles.apply(tf.data.experimental.assert_cardinality(count)), count


def _flip(images: tf.data.Dataset, seed: int) -> tf.data.Dataset:
    """Random flips, stateless: seeded by the epoch's seed and the image's position."""

    def flip(index, image):
        seeds = tf.random.experimental.stateless_split(tf.stack([seed, index]), 2)
        image = tf.image.stateless_random_flip_left_right(image, seeds[0])
        return tf.image.stateless_random_flip_up_down(image, seeds[1])

    return images.enumerate().map(flip, num_parallel_calls=tf.data.AUTOTUNE)


# The validation normals' synthetic anomalies are the same at every epoch: this seed.
VAL_ANOMALY_SEED = 20181202


def _with_synthetic_anomalies(batches: tf.data.Dataset, share: float, seed: int):
    """Batches become ``(corrupted, clean, masks)``: repair and defect-head training."""

    def corrupted(images, pair):
        inputs, masks = corrupt(images, share, pair)
        return inputs, images, masks

    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    return tf.data.Dataset.zip(batches, seeds).map(corrupted, num_parallel_calls=tf.data.AUTOTUNE)


def _sharded_by_data(data: tf.data.Dataset) -> tf.data.Dataset:
    """Each worker of a cluster takes its share of every global batch."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return data.with_options(options)


class TrainingData:
    """The training and validation normals of a preprocess output.

    Args:
        config: the run's config (``train`` section).
        preprocess_dir: the preprocess stage's folder.
        replicas: replicas in sync; above 1 a last partial batch is dropped, so
            no replica gets an empty one.
    """

    def __init__(self, config: Config, preprocess_dir: Path, replicas: int = 1):
        self.options = config.train
        info = records.read_info(preprocess_dir)
        self._train, self.count = normal_tiles(preprocess_dir, "train")
        self.cached = cache_in_memory(info, "train", self.options.cache)
        if self.cached:
            self._train = self._train.cache()
        val, _ = normal_tiles(preprocess_dir, "val")
        if cache_in_memory(info, "val", self.options.cache):
            val = val.cache()
        self.val = val.batch(self.options.batch_size)
        if config.model.defect_head:
            # The head's validation loss: the same synthetic anomalies every epoch.
            share = self.options.synthetic_anomalies
            self.val = _with_synthetic_anomalies(self.val, share, VAL_ANOMALY_SEED)
        self.val = self.val.prefetch(tf.data.AUTOTUNE)
        self.drop_remainder = replicas > 1
        batches = self.count / self.options.batch_size
        self.steps_per_epoch = int(batches) if self.drop_remainder else math.ceil(batches)

    def gallery(self) -> np.ndarray:
        """``uint8 [H, W, C]``: each synthetic anomaly kind on the first training images."""
        images = next(iter(self._train.batch(len(KINDS))))
        return gallery(images, tf.constant([self.options.seed, 0], tf.int64)).numpy()

    def epoch(self, epoch: int, skip: int = 0) -> tf.data.Dataset:
        """The batches of ``epoch`` (0-based) from the ``skip``-th on."""
        options, seed = self.options, epoch_seed(self.options.seed, epoch)
        images = self._train.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=False)
        if options.augment:
            images = _flip(images, seed)
        batches = images.batch(options.batch_size, drop_remainder=self.drop_remainder)
        if options.synthetic_anomalies > 0:
            batches = _with_synthetic_anomalies(batches, options.synthetic_anomalies, seed)
        return _sharded_by_data(batches.skip(skip).prefetch(tf.data.AUTOTUNE))
