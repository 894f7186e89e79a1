"""The train stage's input: the training normals streamed from TFRecords, epoch by epoch.

    data = TrainingData(config, preprocess_dir, replicas=1)
    for batch in data.epoch(3, skip=5): ...   # epoch 3 from its 6th batch

Each epoch's order, flips and synthetic anomalies are a pure function of
``(train.seed, epoch)``, so a run resumed in the middle of an epoch sees the
same batches as one never interrupted. With ``preprocess.tiles`` the examples
are the tiles of every image (``models.tiling``). ``train.cache``: ``memory`` keeps the
decoded split in memory after the first epoch, ``none`` streams it from the
TFRecords every epoch, ``auto`` keeps it when it takes at most
``CACHE_AUTO_MAX_BYTES``. Where the training split holds labelled defects, each
batch also carries ``labelled_batch_size`` of them (drawn again and again,
flipped, moved onto the batch's normals where they have a mask, seeded by the
epoch): ``(corrupted, clean, masks, defects,
defect_masks, has_mask)``; the defect head learns from them, the generator never.
With a defect head at a larger ``head_isize`` every image is a pair ``(at isize, at
the head's size)``: the synthetic anomalies are pasted at the head's size and their
change, brought down to ``isize``, onto the generator's image; masks are at the
head's size.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import tensorflow as tf

from models.anomalies import KINDS, corrupt, gallery, transplant
from models.tiling import TileGrid
from pipeline.core import records
from pipeline.core.config import Config
from pipeline.core.errors import DataError

SHUFFLE_BUFFER = 4096
# One labelled defect per this many normals in a batch: ten real defects are not
# drowned by hundreds of normals, and no batch is mostly defects either.
NORMALS_PER_LABELLED = 4
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
    pixels += int(np.prod(records.head_size(info) or (0,)))
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


def _flip_one(image: tf.Tensor, seeds: tf.Tensor) -> tf.Tensor:
    # A stateless flip of one image decides by its seed alone, whatever the
    # image's size: the two images of a pair turn together.
    image = tf.image.stateless_random_flip_left_right(image, seeds[0])
    return tf.image.stateless_random_flip_up_down(image, seeds[1])


def _flip(images: tf.data.Dataset, seed: int) -> tf.data.Dataset:
    """Random flips, stateless: seeded by the epoch's seed and the image's position."""

    def flip(index, image):
        seeds = tf.random.experimental.stateless_split(tf.stack([seed, index]), 2)
        return tf.nest.map_structure(lambda one: _flip_one(one, seeds), image)

    return images.enumerate().map(flip, num_parallel_calls=tf.data.AUTOTUNE)


# The validation normals' synthetic anomalies are the same at every epoch: this seed.
VAL_ANOMALY_SEED = 20181202


def _with_synthetic_anomalies(batches: tf.data.Dataset, share: float, seed: int):
    """Batches become ``(corrupted, clean, masks)``: repair and defect-head training.

    With a larger head (batches of pairs): ``((corrupted, head corrupted), clean,
    masks at the head's size)``.
    """

    def corrupted(images, pair):
        if isinstance(images, tuple):
            return _corrupted_pair(*images, share, pair)
        inputs, masks = corrupt(images, share, pair)
        return inputs, images, masks

    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    return tf.data.Dataset.zip(batches, seeds).map(corrupted, num_parallel_calls=tf.data.AUTOTUNE)


def _corrupted_pair(images, head_images, share: float, seed):
    """``_with_synthetic_anomalies`` of a batch of pairs.

    The anomaly is drawn at the head's size; the generator's image gets its change
    (corrupted minus clean) brought down to ``isize``, so a normal keeps exactly the
    image the generator sees at inference.
    """
    head_inputs, masks = corrupt(head_images, share, seed)
    change = tf.image.resize(head_inputs - head_images, tf.shape(images)[1:3], antialias=True)
    inputs = tf.clip_by_value(images + change, -1.0, 1.0)
    return (inputs, head_inputs), images, masks


def labelled_batch_size(batch_size: int, replicas: int) -> int:
    """Labelled defects per batch: a quarter of the normals, at least one per replica."""
    return max(replicas, batch_size // NORMALS_PER_LABELLED)


def labelled_types(preprocess_dir: Path) -> dict[str, dict[str, int]]:
    """``{defect_type: {"images": n, "masked": m}}`` of the training split's labelled defects.

    Counted by preprocess (``preprocess.json``); empty for a run preprocessed
    before labelled defects existed, which had none.
    """
    return records.read_info(preprocess_dir)["splits"]["train"].get("defects", {})


def labelled_defects(preprocess_dir: Path) -> tuple[tf.data.Dataset, int]:
    """The labelled defects ``(image, mask, has_mask)``, or their tiles; and how many."""
    info = records.read_info(preprocess_dir)
    count, grid = info["splits"]["train"].get("abnormal", 0), TileGrid.of(info["spec"])
    data = records.labelled_defects(preprocess_dir)
    if grid is None or count == 0:
        return data, count
    masked = sum(c["masked"] for c in labelled_types(preprocess_dir).values())
    if masked < count:
        raise DataError(
            f"{preprocess_dir}: {count - masked} labelled defect(s) without a "
            "mask; preprocess.tiles cuts them into tiles, where an image label says too "
            "little: give them masks or drop preprocess.tiles"
        )
    data = data.map(lambda x, m, h: (grid.cut(x[None]), grid.cut(m[None]), h))
    data = data.map(lambda x, m, h: (x, m, tf.fill(tf.shape(x)[:1], h))).unbatch()
    return data, count * grid.count


def _flip_labelled(defects: tf.data.Dataset, seed: int) -> tf.data.Dataset:
    """``_flip`` for ``(image, mask, has_mask)``: the mask turns with its image."""

    def flip(index, example):
        image, mask, has_mask = example
        seeds = tf.random.experimental.stateless_split(tf.stack([seed, index]), 2)
        if isinstance(image, tuple):  # (at isize, at the head's size, where the mask is)
            return tuple(_flip_one(one, seeds) for one in image), _flip_one(mask, seeds), has_mask
        both = tf.concat([image, mask], -1)
        both = tf.image.stateless_random_flip_left_right(both, seeds[0])
        both = tf.image.stateless_random_flip_up_down(both, seeds[1])
        return both[..., :-1], both[..., -1:], has_mask

    return defects.enumerate().map(flip, num_parallel_calls=tf.data.AUTOTUNE)


def _transplanted_pair(batch, labelled, size: int, seed):
    """``transplant`` where images are pairs ``(at isize, at the head's size)``.

    Hosts are the batch's head-sized images without a synthetic anomaly (the
    batch carries its clean images at ``isize`` only); the generator's copy of a
    transplanted defect is the head's, brought down to ``isize``.
    """
    (_, head_inputs), _, synthetic_masks = batch[:3]
    (defects, head_defects), masks, has_mask = labelled
    clean_first = tf.argsort(
        tf.cast(tf.reduce_max(synthetic_masks, [1, 2, 3]) > 0, tf.int32), stable=True
    )
    picked = tf.gather(clean_first, tf.range(size) % tf.shape(clean_first)[0])
    hosts = tf.gather(head_inputs, picked)
    head_defects, pasted_masks = transplant(hosts, head_defects, masks, has_mask, seed)
    small = tf.image.resize(head_defects, tf.shape(defects)[1:3], antialias=True)
    keep = tf.reshape(tf.cast(has_mask, tf.bool), [-1, 1, 1, 1])
    return (tf.where(keep, small, defects), head_defects), pasted_masks


def _with_labelled(batches, defects, size: int, seed: int):
    """Each batch gains ``size`` labelled defects, reshuffled and flipped every epoch.

    Always flipped, whatever ``train.augment``: a flipped defect is still a defect,
    and ten images need every variation they can get. A defect with a mask is
    transplanted (``models.anomalies.transplant``) onto one of the batch's clean
    normals at a random place: the head learns the defect, not its image.
    """
    defects = _flip_labelled(defects.shuffle(SHUFFLE_BUFFER, seed=seed).repeat(), seed)
    defects = defects.batch(size, drop_remainder=True)
    seeds = tf.data.Dataset.random(seed=seed + 1).batch(2)

    def joined(batch, labelled, pair):
        if not isinstance(batch, tuple):  # normals without synthetic anomalies
            batch = (batch, batch, tf.zeros_like(batch[..., :1]))
        images, masks, has_mask = labelled
        if isinstance(images, tuple):  # a larger head: transplanted at its size
            images, masks = _transplanted_pair(batch, labelled, size, pair)
            return (*batch, images, masks, has_mask)
        clean = batch[1]
        hosts = tf.gather(clean, tf.range(size) % tf.shape(clean)[0])
        images, masks = transplant(hosts, images, masks, has_mask, pair)
        return (*batch, images, masks, has_mask)

    return tf.data.Dataset.zip(batches, defects, seeds).map(joined)


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
        self.options, self.preprocess_dir = config.train, preprocess_dir
        info = records.read_info(preprocess_dir)
        self._train, self.count = normal_tiles(preprocess_dir, "train")
        self.cached = cache_in_memory(info, "train", self.options.cache)
        if self.cached:
            self._train = self._train.cache()
        val, _ = normal_tiles(preprocess_dir, "val")
        if cache_in_memory(info, "val", self.options.cache):
            val = val.cache()
        self.val = val.batch(self.options.batch_size)
        self.head_sized = bool(records.head_size(info))
        if config.model.defect_head or self.head_sized:
            # The head's validation loss: the same synthetic anomalies every epoch.
            share = self.options.synthetic_anomalies
            self.val = _with_synthetic_anomalies(self.val, share, VAL_ANOMALY_SEED)
        self.val = self.val.prefetch(tf.data.AUTOTUNE)
        self.drop_remainder = replicas > 1
        self.defects, self.labelled_count = labelled_defects(preprocess_dir)
        if self.labelled_count:
            self.defects = self.defects.cache()
        self.labelled_batch = labelled_batch_size(self.options.batch_size, replicas)
        batches = self.count / self.options.batch_size
        self.steps_per_epoch = int(batches) if self.drop_remainder else math.ceil(batches)

    def labelled_types(self) -> dict[str, dict[str, int]]:
        """``{defect_type: {"images": n, "masked": m}}`` of the labelled defects trained on."""
        return labelled_types(self.preprocess_dir)

    def gallery(self) -> np.ndarray:
        """``uint8 [H, W, C]``: each synthetic anomaly kind on the first training images."""
        images = next(iter(self._train.batch(len(KINDS))))
        if isinstance(images, tuple):  # as the head sees them
            images = images[1]
        return gallery(images, tf.constant([self.options.seed, 0], tf.int64)).numpy()

    def epoch(self, epoch: int, skip: int = 0) -> tf.data.Dataset:
        """The batches of ``epoch`` (0-based) from the ``skip``-th on."""
        options, seed = self.options, epoch_seed(self.options.seed, epoch)
        images = self._train.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=False)
        if options.augment:
            images = _flip(images, seed)
        batches = images.batch(options.batch_size, drop_remainder=self.drop_remainder)
        if options.synthetic_anomalies > 0 or self.head_sized:
            batches = _with_synthetic_anomalies(batches, options.synthetic_anomalies, seed)
        if self.labelled_count:
            batches = _with_labelled(batches, self.defects, self.labelled_batch, seed)
        return _sharded_by_data(batches.skip(skip).prefetch(tf.data.AUTOTUNE))
