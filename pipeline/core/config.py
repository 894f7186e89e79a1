"""Experiment configuration: one YAML file read into typed dataclasses.

    ganomaly train --config configs/default.yaml --set train.epochs=3

Every key of the YAML and of each ``--set key=value`` override is checked
against the dataclasses below; an unknown key or a value of the wrong type is
a ``ConfigError`` whose one-line message names the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from models.options import RESIZE_MODES, ROI_SHAPES, SCORE_KINDS, ModelOptions, ScoreOptions
from pipeline.core.errors import ConfigError

# data.layout: the dataset layouts ingest reads (components/sources/layouts.py).
LAYOUTS = ("mvtec", "ganomaly", "folders", "csv")
# threshold.method: where the image decision threshold comes from.
THRESHOLD_METHODS = ("f1", "quantile", "fixed")
# train.on_nan: stop (exit 2) or roll back to the last good checkpoint with halved rates.
ON_NAN = ("stop", "restore")
# train.lr_schedule: the learning rate held, or decayed to 0 along a half cosine over the
# run's steps (train.epochs), which ends on a settled model in fewer epochs.
LR_SCHEDULES = ("constant", "cosine")
# train.strategy: one process, all local GPUs, or a cluster described by TF_CONFIG.
STRATEGIES = ("default", "mirrored", "multi_worker")
# train.mixed_precision: float16 (true) with loss scaling, or bfloat16 (float32's range,
# no scaling); both need a GPU, AMX or AVX512-BF16 to be faster than float32.
MIXED_PRECISION = (False, True, "float16", "bfloat16")
# train.cache: auto keeps the training split in memory when it is small enough.
CACHE_MODES = ("auto", "memory", "none")


@dataclass
class DataConfig:
    """Where the images come from and how they are split."""

    source: str = "synthetic:valve-seats"
    layout: str = "auto"  # auto or one of LAYOUTS
    name: str = ""  # experiment name; derived from the source when empty
    val_fraction: float = 0.15
    val_abnormal_fraction: float = 0.0
    # Defective images of each defect type moved from test into training (seeded), where
    # the defect head learns from them; defects under train/<defect>/ count as well.
    labelled_defects: int = 0
    # For measuring robustness only: this share of the training normals becomes defective
    # test images labelled good (the manifest's ``planted`` column names their type).
    contamination: float = 0.0
    seed: int = 0
    on_bad_file: str = "strict"  # strict | skip
    external_symlinks: str = "reject"  # reject | follow: symlinks that leave the source folder
    max_pixels: int = 100_000_000
    synthetic_train: int = 320  # images of the built-in dataset's train/good
    synthetic_test: int = 40  # test images per class of the built-in dataset
    synthetic_size: int = 128


@dataclass
class PreprocessConfig:
    """The one preprocessing function, shared by training and serving."""

    isize: int = 64
    channels: int | str = 1  # 1, 3 or auto: 3 when the training images are colour
    resize: str = "squash"  # one of RESIZE_MODES
    clahe: bool = False
    clahe_clip: float = 3.0
    clahe_tiles: int = 8
    roi: str = "none"  # one of ROI_SHAPES
    roi_box: list = field(default_factory=lambda: [0.0, 0.0, 1.0, 1.0])  # y0 x0 y1 x1
    roi_radius_range: list = field(default_factory=lambda: [0.3, 0.5])  # of the short side
    roi_inner: float = 0.0  # annulus, as a fraction of the found radius
    roi_outer: float = 1.0
    # Native-resolution tiles: [side, overlap] in original pixels ([]: the whole image).
    tiles: list = field(default_factory=list)
    # [H, W] every image is squashed to before tiling ([]: the training images' median size).
    tiles_image: list = field(default_factory=list)
    shard_images: int = 1000


# The model and score sections are the model's own option classes (models/options.py).
ModelConfig = ModelOptions
ScoreConfig = ScoreOptions


@dataclass
class TrainConfig:
    """Optimisation; the loss weights and Adam settings are the paper's."""

    epochs: int = 15
    batch_size: int = 32
    lr: float = 2e-4
    lr_schedule: str = "constant"  # one of LR_SCHEDULES
    beta1: float = 0.5
    w_adv: float = 1.0
    w_con: float = 50.0
    w_enc: float = 1.0
    seed: int = 0
    augment: bool = False
    synthetic_anomalies: float = 0.0  # share of training images given a pasted anomaly
    checkpoint_every_steps: int = 0  # also checkpoint every this many steps (0: each epoch only)
    on_nan: str = "stop"  # one of ON_NAN: what a non-finite loss does
    nan_restores: int = 3  # on_nan: restore rolls back at most this many times
    patience: int = 0  # early stopping: epochs without a better val_con_loss (0: off)
    strategy: str = "default"  # one of STRATEGIES (tf.distribute)
    mixed_precision: bool | str = False  # false, float16 (or true) or bfloat16: MIXED_PRECISION
    cache: str = "auto"  # one of CACHE_MODES: the training split in memory or streamed
    worker_timeout_s: float = 300.0  # multi_worker: fail when the cluster is silent this long


@dataclass
class ThresholdConfig:
    """Where the anomaly/normal decision is made."""

    method: str = "quantile"  # one of THRESHOLD_METHODS
    quantile: float = 0.99
    value: float = 0.0


@dataclass
class EvaluateConfig:
    """Localization settings of the evaluation."""

    map_quantile: float = 0.999  # pixel threshold: this quantile of validation-normal maps
    min_region_area: int = 16  # region rules, in pixels at the original image size
    max_region_area: int = 0  # 0: no upper limit
    min_region_mean: float = 0.0  # mean map value a region needs (0: no rule)
    gallery_size: int = 8


@dataclass
class ExportConfig:
    """SavedModel layout for TensorFlow Serving."""

    model_name: str = "ganomaly"
    version: int = 0  # 0: the next free version; an existing version is never overwritten
    min_image_auroc: float = 0.0  # refuse to export below this test image AUROC (0: no gate)


@dataclass
class Config:
    """A whole experiment."""

    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, object]:
        """``{"train.epochs": 15, ...}``, the form logged as MLflow params."""
        return {f"{s}.{k}": v for s, sec in self.to_dict().items() for k, v in sec.items()}

    def digest(self, sections: typing.Iterable[str] | None = None) -> str:
        """A short hash of the given sections (all by default)."""
        d = self.to_dict()
        picked = {s: d[s] for s in (sections or d)}
        return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:12]

    def experiment_name(self) -> str:
        if self.data.name:
            return self.data.name
        source = self.data.source.rstrip("/")
        if ":" in source and not Path(source).exists():
            return source.replace(":", "-")
        return Path(source).name or "dataset"


# The choices of string options, checked at load time.
CHOICES = {
    "data.layout": ("auto", *LAYOUTS),
    "data.on_bad_file": ("strict", "skip"),
    "data.external_symlinks": ("reject", "follow"),
    "preprocess.resize": RESIZE_MODES,
    "preprocess.roi": ROI_SHAPES,
    "score.kind": SCORE_KINDS,
    "threshold.method": THRESHOLD_METHODS,
    "train.on_nan": ON_NAN,
    "train.lr_schedule": LR_SCHEDULES,
    "train.strategy": STRATEGIES,
    "train.cache": CACHE_MODES,
}


_FIELD_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "list": list}


def _is(value: object, kind: type) -> bool:
    """``isinstance``, except that a bool is not an int."""
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def _coerce(key: str, value: object, annotation: object) -> object:
    """Checks ``value`` against a field's type; ints are accepted for floats.

    A union (``int | str``: ``preprocess.channels`` is a number or ``auto``) takes a
    value of any of its types as it is.
    """
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    names = [part.strip() for part in name.split("|")]
    if not all(part in _FIELD_TYPES for part in names):
        raise ConfigError(f"{key}: unsupported field type {annotation!r}")
    if len(names) > 1:
        if any(_is(value, _FIELD_TYPES[part]) for part in names):
            return value
        expected = " or ".join(names)
        raise ConfigError(f"{key}: expected {expected}, got {type(value).__name__} {value!r}")
    kind = _FIELD_TYPES[names[0]]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str):
        # YAML 1.1 reads "2e-4" (no decimal point) as a string.
        try:
            return float(value)
        except ValueError:
            pass
    if not _is(value, kind):
        raise ConfigError(f"{key}: expected {kind.__name__}, got {type(value).__name__} {value!r}")
    return value


def _apply(config: Config, key: str, value: object) -> None:
    section_name, _, name = key.partition(".")
    section = (
        getattr(config, section_name, None) if section_name in Config.__annotations__ else None
    )
    if section is None or not name:
        raise ConfigError(f"unknown config key {key!r}")
    fields = {f.name: f for f in dataclasses.fields(section)}
    if name not in fields:
        raise ConfigError(f"unknown config key {key!r}")
    value = _coerce(key, value, fields[name].type)
    allowed = CHOICES.get(key)
    if allowed and value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not one of {sorted(allowed)}")
    setattr(section, name, value)


def _validate(config: Config) -> None:
    p = config.preprocess
    if p.isize < 32 or p.isize % 16:
        raise ConfigError(f"preprocess.isize: {p.isize} is not a multiple of 16 of at least 32")
    if p.channels not in (1, 3, "auto"):
        raise ConfigError(f"preprocess.channels: {p.channels!r} is not 1, 3 or auto")
    _validate_tiles(p)
    if not 0.0 <= config.data.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction: {config.data.val_fraction} is not in [0, 1)")
    if not 0.0 <= config.data.val_abnormal_fraction < 1.0:
        raise ConfigError(
            f"data.val_abnormal_fraction: {config.data.val_abnormal_fraction} is not in [0, 1)"
        )
    if config.data.labelled_defects < 0:
        raise ConfigError(
            f"data.labelled_defects: {config.data.labelled_defects} is negative "
            "(defective images of each type to learn from; 0: none)"
        )
    if not 0.0 <= config.data.contamination < 0.5:
        raise ConfigError(f"data.contamination: {config.data.contamination} is not in [0, 0.5)")
    _validate_train(config.train)
    if not 0.0 < config.threshold.quantile < 1.0:
        raise ConfigError(f"threshold.quantile: {config.threshold.quantile} is not in (0, 1)")
    if config.export.version < 0:
        raise ConfigError(f"export.version: {config.export.version} is negative (0: next free)")
    if not 0.0 <= config.export.min_image_auroc <= 1.0:
        raise ConfigError(
            f"export.min_image_auroc: {config.export.min_image_auroc} is not in [0, 1]"
        )
    for section in ("model", "score"):
        try:
            getattr(config, section).check()
        except ValueError as err:
            raise ConfigError(f"{section}.{err}") from None
    _validate_defect_head(config)


def _positive_ints(values: list, count: int) -> bool:
    return len(values) == count and all(_is(v, int) and v > 0 for v in values)


def _validate_tiles(p: PreprocessConfig) -> None:
    if not p.tiles:
        return
    side, overlap = (p.tiles + [None, None])[:2]
    if not (len(p.tiles) == 2 and _is(side, int) and _is(overlap, int) and 0 <= overlap < side):
        raise ConfigError(
            f"preprocess.tiles: {p.tiles!r} is not [side, overlap] in pixels "
            "with 0 <= overlap < side (e.g. [256, 32])"
        )
    if p.tiles_image and not _positive_ints(p.tiles_image, 2):
        raise ConfigError(f"preprocess.tiles_image: {p.tiles_image!r} is not [height, width]")
    if p.resize != "squash":
        raise ConfigError(
            f"preprocess.resize: {p.resize!r} does not go with tiles, which cover the whole "
            "image; use squash (the tiles keep the aspect when tiles_image does)"
        )


def _validate_defect_head(config: Config) -> None:
    head = config.model.defect_head
    if head and not config.train.synthetic_anomalies > 0:
        raise ConfigError(
            "model.defect_head: true learns from synthetic anomalies; set "
            "train.synthetic_anomalies to the share of images that get one (e.g. 0.5)"
        )
    if "head" in config.score.map_kinds and not head:
        raise ConfigError(
            f"score.kind: {config.score.kind!r} reads the defect head; set model.defect_head: true"
        )


def _validate_train(train: TrainConfig) -> None:
    if train.epochs < 1 or train.batch_size < 1:
        raise ConfigError("train.epochs and train.batch_size must be at least 1")
    for key in ("checkpoint_every_steps", "nan_restores", "patience"):
        if getattr(train, key) < 0:
            raise ConfigError(f"train.{key}: {getattr(train, key)!r} is negative")
    if not 0.0 <= train.synthetic_anomalies <= 1.0:
        raise ConfigError(
            f"train.synthetic_anomalies: {train.synthetic_anomalies!r} is not in [0, 1]"
        )
    if train.mixed_precision not in MIXED_PRECISION:
        raise ConfigError(
            f"train.mixed_precision: {train.mixed_precision!r} is not false, float16 or bfloat16"
        )
    if not train.worker_timeout_s > 0:
        raise ConfigError(f"train.worker_timeout_s: {train.worker_timeout_s!r} is not positive")


def check_source(config: Config) -> None:
    """Fails, naming the value, when ``data.source`` is neither a built-in dataset nor a path.

    Called before any stamp, MLflow run or stage folder is touched, so a typo
    costs nothing.
    """
    source = config.data.source
    if source in ("synthetic:valve-seats", "elpv"):
        return
    if source.startswith("mnist:"):
        digit = source.partition(":")[2]
        if not (digit.isdigit() and 0 <= int(digit) <= 9):
            raise ConfigError(f"data.source {source!r}: expected mnist:<digit 0-9>")
        return
    if not Path(source).expanduser().exists():
        raise ConfigError(
            f"data.source: {source} does not exist (a folder, a CSV file, or one of "
            "synthetic:valve-seats, mnist:<digit>, elpv)"
        )


def parse_override(text: str) -> tuple[str, object]:
    """``"train.epochs=3"`` -> ``("train.epochs", 3)``; the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected key=value")
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_config(path: str | Path | None, overrides: typing.Sequence[str] = ()) -> Config:
    """Reads a YAML config file and applies ``key=value`` overrides.

    Args:
        path: the YAML file, or None for the defaults.
        overrides: strings like ``"train.epochs=3"``.

    Returns:
        The checked Config.

    Raises:
        ConfigError: with a one-line message naming the file or key.
    """
    config = Config()
    if path is not None:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except OSError as err:
            raise ConfigError(f"{path}: cannot read config ({err.strerror})") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: invalid YAML ({str(err).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of sections")
        for section, values in raw.items():
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: section {section!r} is not a mapping")
            for name, value in values.items():
                _apply(config, f"{section}.{name}", value)
    for text in overrides:
        _apply(config, *parse_override(text))
    _validate(config)
    return config


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
