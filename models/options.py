"""The model's and the scorer's options, with their defaults and choice lists, in one place.

    from models.options import ModelOptions, ScoreOptions
    GANomaly(isize=64, channels=1, options=ModelOptions(nz=100))
    Scorer(model, ScoreOptions(kind="residual"))

The pipeline's config sections ``model`` and ``score`` are these dataclasses, so a
default or a choice list is written here once. Plain Python only (no TensorFlow):
reading a config must stay fast.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

# score.kind: how an image is scored (models.scoring describes each).
SCORE_KINDS = (
    "latent",
    "residual",
    "ssim",
    "combined",
    "discriminator",
    "head",
    "head_residual",
)
# The standardised maps each score kind needs; ``latent`` shows the residual map.
MAPS_OF_KIND = {
    "latent": ("residual",),
    "residual": ("residual",),
    "ssim": ("ssim",),
    "combined": ("residual", "ssim"),
    "discriminator": ("discriminator",),
    "head": ("head",),
    "head_residual": ("head", "residual"),
}
# preprocess.resize: how an image is brought to the model's square input.
RESIZE_MODES = ("squash", "letterbox", "center_crop")
# model.head_aspect: the defect head's image shape.
HEAD_ASPECTS = ("square", "keep")
# preprocess.roi: the region of interest.
ROI_SHAPES = ("none", "box", "circle")


def check_share(name: str, value: float) -> None:
    """Raises ValueError, quoting ``value``, unless ``0 < value <= 1`` (a share of a map)."""
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")


def _is_side(value) -> bool:
    """A network side: an int, a multiple of 16 of at least 32 (the U-Nets halve it thrice)."""
    return isinstance(value, int) and value >= 32 and value % 16 == 0


@dataclass
class ModelOptions:
    """GANomaly networks (DCGAN-style, the paper's defaults): the ``model`` config section."""

    nz: int = 100
    ngf: int = 64
    ndf: int = 64
    extra_layers: int = 0
    skip_connections: bool = False  # U-Net skips encoder1 -> decoder (Skip-GANomaly)
    defect_head: bool = False  # a U-Net learns defects from synthetic anomalies (score.kind head)
    head_filters: int = 16  # the defect head's first width (doubled at each of 3 levels)
    # The defect head's image side; 0: the generator's (preprocess.isize). Larger, the
    # head reads a sharper image (thin, small defects) beside the upsampled reconstruction.
    head_isize: int = 0
    # "keep": head_isize is the short side and the head's images keep the training
    # images' median aspect (resize: squash), so a long frame is not squashed twice as hard
    # along its length. head_size is what preprocess resolved: [height, width].
    head_aspect: str = "square"
    head_size: list = field(default_factory=list)

    def check(self) -> None:
        """Raises ValueError, quoting the bad value, for options no network can have."""
        for name in ("nz", "ngf", "ndf", "head_filters"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.extra_layers < 0:
            raise ValueError(f"extra_layers must be >= 0, got {self.extra_layers!r}")
        if self.head_isize and not _is_side(self.head_isize):
            raise ValueError(
                f"head_isize must be 0 or a multiple of 16 of at least 32, got {self.head_isize!r}"
            )
        if self.head_aspect not in HEAD_ASPECTS:
            raise ValueError(f"head_aspect must be one of {HEAD_ASPECTS}, got {self.head_aspect!r}")
        if self.head_size and not (
            len(self.head_size) == 2 and all(_is_side(s) for s in self.head_size)
        ):
            raise ValueError(
                f"head_size must be [height, width], multiples of 16 of at least 32, "
                f"got {self.head_size!r}"
            )

    def head_shape(self, isize: int) -> tuple[int, int]:
        """``(H, W)`` of the defect head's images: ``head_size``, ``head_isize`` or ``isize``."""
        if self.head_size:
            return tuple(int(s) for s in self.head_size)
        side = self.head_isize or isize
        return side, side


@dataclass
class ScoreOptions:
    """How an image (and each pixel) is scored: the ``score`` config section."""

    kind: str = "residual"
    smoothing_sigma: float = 2.0  # Gaussian blur of the generator's maps, in pixels at isize
    # The defect head's map, in its pixels: the head learns where a defect is, so it is not
    # noise to average away, and a blur thins out the few pixels of a thin crack.
    head_smoothing_sigma: float = 2.0
    topk_fraction: float = 0.01  # image score = mean of the top pixels of the map
    pixel_norm: bool = True  # standardise maps per pixel position (README: measurements)

    def check(self) -> None:
        """Raises ValueError, quoting the bad value, for options no scorer can have."""
        if self.kind not in SCORE_KINDS:
            raise ValueError(f"kind must be one of {SCORE_KINDS}, got {self.kind!r}")
        for name in ("smoothing_sigma", "head_smoothing_sigma"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        check_share("topk_fraction", self.topk_fraction)

    @property
    def map_kinds(self) -> tuple[str, ...]:
        """The maps this kind standardises and combines."""
        return MAPS_OF_KIND[self.kind]


def from_dict(cls, values: dict | object | None):
    """``cls`` from a dict (``get_config`` form), an instance, or None (the defaults)."""
    if values is None:
        return cls()
    if isinstance(values, cls):
        return values
    return cls(**values)


def as_dict(options) -> dict:
    return dataclasses.asdict(options)
