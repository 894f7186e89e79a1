"""Built-in dataset ``synthetic:valve-seats``: procedural valve seats with pixel-exact defects.

    from components.sources.valve_seats import generate
    root = generate(Path("data/valve-seats"), n_train=300, n_test=25, size=128, seed=0)

Each image is a valve seat seen from above: a bright machined annulus with fine
concentric grooves around a dark bore, on a dark background, under a random
lighting gradient with small position, radius and brightness jitter and mild
sensor noise. Defective images add one of ``DEFECT_TYPES`` to the seat face and
come with a 0/255 mask of exactly the pixels the defect changed noticeably.

The result is an MVTec AD category (``train/good``, ``test/<class>``,
``ground_truth/<defect>/NNN_mask.png``), written atomically and reused when
generated before with the same parameters. Every image has its own generator
seeded from (seed, split, class, index), so output does not depend on order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from components.sources._cache import save_png, write_once

DEFECT_TYPES = ("scratch", "pit", "chip", "stain")

SOURCE = "synthetic:valve-seats"
# Bump when rendering changes so cached folders from older code are regenerated.
VERSION = 1
# A change below this many gray levels is invisible under the sensor noise, so not masked.
NOTICEABLE = 12.0
_CLASSES = ("good", *DEFECT_TYPES)
_SPLITS = ("train", "test")


@dataclass(frozen=True)
class _Scene:
    """Everything that varies between defect-free seats, in pixels of the final size."""

    cx: float
    cy: float
    r_in: float
    r_out: float
    face: float
    bore: float
    background: float
    groove_period: float
    groove_amp: float
    groove_phase: float
    sheen_amp: float
    sheen_angle: float
    light_amp: float
    light_angle: float
    gain: float
    noise_sigma: float


@dataclass(frozen=True)
class _Grid:
    x: np.ndarray
    y: np.ndarray
    r: np.ndarray
    phi: np.ndarray


def _draw_scene(rng: np.random.Generator, size: int) -> _Scene:
    # Jitter is kept moderate (a few px, a few %) so that normal variation is learnable.
    u = size / 128.0
    jitter = 2.0 * u
    return _Scene(
        cx=size / 2 + rng.uniform(-jitter, jitter),
        cy=size / 2 + rng.uniform(-jitter, jitter),
        r_in=size * 0.22 * (1 + rng.normal(0, 0.01)),
        r_out=size * 0.40 * (1 + rng.normal(0, 0.008)),
        face=rng.uniform(170, 195),
        bore=rng.uniform(10, 22),
        background=rng.uniform(28, 42),
        groove_period=2.6 * u,
        groove_amp=rng.uniform(0.04, 0.08),
        groove_phase=rng.uniform(0, 2 * np.pi),
        sheen_amp=rng.uniform(0.04, 0.09),
        sheen_angle=rng.uniform(0, np.pi),
        light_amp=rng.uniform(0.05, 0.14),
        light_angle=rng.uniform(0, 2 * np.pi),
        gain=rng.uniform(0.93, 1.07),
        noise_sigma=rng.uniform(1.5, 3.0),
    )


def _grid(scene: _Scene, size: int) -> _Grid:
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    dx, dy = x - scene.cx, y - scene.cy
    return _Grid(x=x, y=y, r=np.hypot(dx, dy), phi=np.arctan2(dy, dx))


def _face_tone(scene: _Scene, grid: _Grid, rng: np.random.Generator, size: int) -> np.ndarray:
    """Brightness of the seat face alone: grooves, anisotropic sheen, bevel, mottling."""
    grooves = 1 + scene.groove_amp * np.sin(
        2 * np.pi * grid.r / scene.groove_period + scene.groove_phase
    )
    # Turned surfaces reflect most across the machining direction: a two-lobed sheen.
    sheen = 1 + scene.sheen_amp * np.cos(2 * (grid.phi - scene.sheen_angle))
    bevel_width = 3.0 * size / 128
    bevel = 1 - 0.3 * np.clip(1 - (grid.r - scene.r_in) / bevel_width, 0, 1)
    mottle = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), sigma=3 * size / 128)
    mottle *= 0.03 / (mottle.std() + 1e-9)
    return scene.face * grooves * sheen * bevel * (1 + mottle)


def _face_alpha(scene: _Scene, grid: _Grid) -> np.ndarray:
    # One-pixel linear ramps anti-alias both ring edges.
    inner = np.clip(grid.r - scene.r_in + 0.5, 0, 1)
    outer = np.clip(scene.r_out - grid.r + 0.5, 0, 1)
    return inner * outer


def _compose(scene: _Scene, grid: _Grid, tone: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Noise-free image: face over bore/background, then lighting and gain, clipped."""
    mid = (scene.r_in + scene.r_out) / 2
    under = np.where(grid.r < mid, scene.bore, scene.background)
    image = under + alpha * (tone - under)
    # Pivoting the gradient on the image centre keeps the part's mean brightness in place.
    half = grid.x.shape[0] / 2
    cos, sin = np.cos(scene.light_angle), np.sin(scene.light_angle)
    across = cos * (grid.x - half) + sin * (grid.y - half)
    light = 1 + scene.light_amp * across / (2 * half)
    return np.clip(image * light * scene.gain, 0, 255)


def _point_on_face(rng: np.random.Generator, scene: _Scene, margin: float) -> tuple[float, float]:
    """Pick a random point on the seat face at least ``margin`` px from both edges."""
    radius = rng.uniform(scene.r_in + margin, scene.r_out - margin)
    angle = rng.uniform(0, 2 * np.pi)
    return scene.cx + radius * np.cos(angle), scene.cy + radius * np.sin(angle)


def _disc(grid: _Grid, cx: float, cy: float, radius: float) -> np.ndarray:
    return np.clip(radius + 0.5 - np.hypot(grid.x - cx, grid.y - cy), 0, 1)


Modifier = Callable[
    [np.random.Generator, _Scene, _Grid, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]
]


def _scratch(rng, scene, grid, tone, alpha):
    """Draw a straight line segment long enough to cross most of the ring width."""
    u = grid.x.shape[0] / 128
    # Centred near mid-ring and at least 30 degrees off radial, so it crosses the face
    # at a slant instead of mostly running off into the bore or background.
    radius = (scene.r_in + scene.r_out) / 2 + rng.uniform(-0.2, 0.2) * (scene.r_out - scene.r_in)
    theta = rng.uniform(0, 2 * np.pi)
    mx, my = scene.cx + radius * np.cos(theta), scene.cy + radius * np.sin(theta)
    angle = theta + rng.choice([-1, 1]) * rng.uniform(np.pi / 6, np.pi / 2)
    half = rng.uniform(0.12, 0.2) * grid.x.shape[0]
    width = rng.uniform(2.0, 3.0) * u
    ux, uy = np.cos(angle), np.sin(angle)
    along = np.clip((grid.x - mx) * ux + (grid.y - my) * uy, -half, half)
    dist = np.hypot(grid.x - (mx + along * ux), grid.y - (my + along * uy))
    line = np.clip(width / 2 + 0.5 - dist, 0, 1)
    if rng.random() < 0.75:
        tone = tone * (1 - rng.uniform(0.6, 0.8) * line)
    else:
        # Bright scratches catch the light: push toward white rather than scale.
        tone = tone + (255 - tone) * rng.uniform(0.75, 1.0) * line
    return tone, alpha


def _pit(rng, scene, grid, tone, alpha):
    """Add one to three small dark round spots."""
    u = grid.x.shape[0] / 128
    spots = np.zeros_like(tone)
    for _ in range(rng.integers(1, 4)):
        radius = rng.uniform(3.0, 5.5) * u
        cx, cy = _point_on_face(rng, scene, margin=radius + 1.5 * u)
        spots = np.maximum(spots, _disc(grid, cx, cy, radius))
    return tone * (1 - rng.uniform(0.55, 0.8) * spots), alpha


def _chip(rng, scene, grid, tone, alpha):
    """Bite an elliptical notch out of the outer (mostly) or inner edge."""
    u = grid.x.shape[0] / 128
    outer = rng.random() < 0.7
    angle = rng.uniform(0, 2 * np.pi)
    edge = scene.r_out if outer else scene.r_in
    cx, cy = scene.cx + edge * np.cos(angle), scene.cy + edge * np.sin(angle)
    tangential, radial = rng.uniform(5, 10) * u, rng.uniform(4, 8) * u
    # Coordinates in the notch frame: axis 1 along the edge, axis 2 across it.
    dx, dy = grid.x - cx, grid.y - cy
    t = -dx * np.sin(angle) + dy * np.cos(angle)
    n = dx * np.cos(angle) + dy * np.sin(angle)
    ellipse = np.hypot(t / tangential, n / radial)
    notch = np.clip((1 - ellipse) * min(tangential, radial) + 0.5, 0, 1)
    return tone, alpha * (1 - notch)


def _stain(rng, scene, grid, tone, alpha):
    """Add a soft blotch of overlapping Gaussian blobs, darker or (sometimes) lighter."""
    u = grid.x.shape[0] / 128
    cx, cy = _point_on_face(rng, scene, margin=5 * u)
    blob = np.zeros_like(tone)
    for _ in range(rng.integers(2, 5)):
        bx, by = cx + rng.normal(0, 4 * u), cy + rng.normal(0, 4 * u)
        sigma = rng.uniform(3.5, 7.0) * u
        blob = np.maximum(blob, np.exp(-((grid.x - bx) ** 2 + (grid.y - by) ** 2) / (2 * sigma**2)))
    strength = rng.uniform(0.4, 0.6)
    if rng.random() < 0.7:
        return tone * (1 - strength * blob), alpha
    return tone * (1 + 0.6 * strength * blob), alpha


_MODIFIERS: dict[str, Modifier] = {
    "scratch": _scratch,
    "pit": _pit,
    "chip": _chip,
    "stain": _stain,
}


def render(
    rng: np.random.Generator, size: int, defect: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """Render one valve seat, with or without a defect.

    The scene, the defect and the noise use separate child generators, so the
    same ``rng`` state gives the same seat and noise whatever ``defect`` is;
    the defect-free rendering is then the exact reference for the mask.

    Args:
        rng: Source of randomness; consumed.
        size: Height and width in pixels.
        defect: One of ``DEFECT_TYPES``, or None for a good part.

    Returns:
        (uint8 image [size, size], uint8 mask [size, size] with 0/255).

    """
    if defect is not None and defect not in _MODIFIERS:
        raise ValueError(f"unknown defect {defect!r}; expected one of {DEFECT_TYPES}")
    scene_rng, defect_rng, noise_rng = rng.spawn(3)
    scene = _draw_scene(scene_rng, size)
    grid = _grid(scene, size)
    tone, alpha = _face_tone(scene, grid, scene_rng, size), _face_alpha(scene, grid)
    clean = _compose(scene, grid, tone, alpha)
    image, mask = clean, np.zeros((size, size), dtype=np.uint8)
    if defect is not None:
        image = _compose(scene, grid, *_MODIFIERS[defect](defect_rng, scene, grid, tone, alpha))
        mask = np.where(np.abs(image - clean) > NOTICEABLE, 255, 0).astype(np.uint8)
    noisy = image + noise_rng.normal(0, scene.noise_sigma, image.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8), mask


def _image_rng(seed: int, split: str, cls: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLITS.index(split), _CLASSES.index(cls), index])


def _write_class(root: Path, split: str, cls: str, count: int, size: int, seed: int) -> None:
    digits = max(3, len(str(count - 1)))
    for index in range(count):
        name = f"{index:0{digits}d}"
        image, mask = render(
            _image_rng(seed, split, cls, index), size, None if cls == "good" else cls
        )
        save_png(root / split / cls / f"{name}.png", image)
        if cls != "good":
            save_png(root / "ground_truth" / cls / f"{name}_mask.png", mask)


def generate(root: Path, n_train: int, n_test: int, size: int = 128, seed: int = 0) -> Path:
    """Write an MVTec AD category into root and return root.

    Args:
        root: Category folder to create (replaced unless already complete with these parameters).
        n_train: Number of good training images.
        n_test: Number of good test images, and of test images per defect type.
        size: Image height and width in pixels (at least 32).
        seed: Base seed; equal parameters give byte-identical files.

    Returns:
        ``root``.

    """
    if size < 32:
        raise ValueError(f"size must be at least 32, got {size}")
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be at least 1, got {n_train} and {n_test}")
    params = {
        "source": SOURCE,
        "version": VERSION,
        "n_train": n_train,
        "n_test": n_test,
        "size": size,
        "seed": seed,
    }

    def build(tmp: Path) -> None:
        _write_class(tmp, "train", "good", n_train, size, seed)
        for cls in _CLASSES:
            _write_class(tmp, "test", cls, n_test, size, seed)

    return write_once(Path(root), params, build)
