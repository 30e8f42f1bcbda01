"""Scenes of the synthetic world: objects with shape / colour / size and a start -> end state, rendered to frames.

A clip's object is described by its state at the first and the last frame (centre, radius, colour, opacity); every
frame interpolates between them at ``alpha = t / (T - 1)``. Discrete changes (colour, visibility) switch at
``alpha = 0.5`` and blend exactly there, so ``reverse(spec)`` (start <-> end swapped) renders the time-reversed
clip frame for frame. That is what makes the world *temporal*: a clip and its reversal contain the same set of
frames, so any order-blind video model (a mean of per-frame features) sees them as one video, while their
captions ("moves left" / "moves right") differ.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 45, 45),
    "green": (45, 195, 70),
    "blue": (55, 95, 235),
    "yellow": (235, 215, 45),
    "white": (240, 240, 240),
    "purple": (170, 70, 215),
}
SIZES: dict[str, float] = {"small": 0.13, "big": 0.22}  # radius as a fraction of the frame side
# Motions in time-reversal pairs; "still" is its own reversal.
REVERSE_MOTION: dict[str, str] = {
    "left": "right",
    "right": "left",
    "up": "down",
    "down": "up",
    "grows": "shrinks",
    "shrinks": "grows",
    "appears": "disappears",
    "disappears": "appears",
    "turns": "turns",
    "still": "still",
}
MOTIONS: tuple[str, ...] = tuple(REVERSE_MOTION)
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
TRAVEL = 0.42  # distance moved by "left"/"right"/"up"/"down", as a fraction of the frame side
GROW = 1.9  # radius ratio end/start for "grows"


@dataclass(frozen=True)
class ObjectSpec:
    """One object: start and end state; coordinates and radius are fractions of the frame side."""

    shape: str
    size: str  # the size word of the caption ("small"/"big"); for grows/shrinks the larger end
    motion: str
    start: tuple[float, float]  # centre (x, y) at the first frame
    end: tuple[float, float]  # centre at the last frame
    radius: tuple[float, float]  # (first, last)
    colour: tuple[str, str]  # (first, last) colour names
    opacity: tuple[float, float]  # (first, last): 0 = absent, 1 = present

    def reverse(self) -> ObjectSpec:
        return dataclasses.replace(
            self,
            motion=REVERSE_MOTION[self.motion],
            start=self.end,
            end=self.start,
            radius=self.radius[::-1],
            colour=self.colour[::-1],
            opacity=self.opacity[::-1],
        )

    def state(self, alpha: float) -> tuple[float, float, float, np.ndarray, float]:
        """(x, y, radius, rgb float[3], opacity) at ``alpha`` in [0, 1]."""
        x = self.start[0] + (self.end[0] - self.start[0]) * alpha
        y = self.start[1] + (self.end[1] - self.start[1]) * alpha
        r = self.radius[0] + (self.radius[1] - self.radius[0]) * alpha
        c0, c1 = (np.asarray(COLOURS[c], dtype=np.float64) for c in self.colour)
        rgb, op = (c0, self.opacity[0]) if alpha < 0.5 else (c1, self.opacity[1])
        if alpha == 0.5:  # the exact middle of an odd-length clip: blend, so reversal stays exact
            rgb, op = (c0 + c1) / 2, (self.opacity[0] + self.opacity[1]) / 2
        return x, y, r, rgb, op


@dataclass(frozen=True)
class ClipSpec:
    """A clip: a background colour and 1-2 objects; the first object is the one whose motion the caption names."""

    clip_id: str
    background: tuple[int, int, int]
    objects: tuple[ObjectSpec, ...]
    noise_seed: int  # seeds a static background texture (identical in every frame)

    def reverse(self, clip_id: str) -> ClipSpec:
        return dataclasses.replace(self, clip_id=clip_id, objects=tuple(o.reverse() for o in self.objects))

    @property
    def main(self) -> ObjectSpec:
        return self.objects[0]


def _signed_distance(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Signed distance (pixels, < 0 inside) from a shape of 'radius' r centred at the origin (y grows down)."""
    if shape == "circle":
        return np.hypot(dx, dy) - r
    if shape == "square":
        r = r * 0.85  # same visual area as the circle, roughly
        qx, qy = np.abs(dx) - r, np.abs(dy) - r
        return np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)
    if shape == "triangle":  # equilateral, pointing up (Inigo Quilez's exact SDF, y flipped to point up)
        k = math.sqrt(3.0)
        r = r * 1.25
        px = np.abs(dx) - r
        py = -dy + r / k
        flip = px + k * py > 0
        px, py = np.where(flip, (px - k * py) / 2, px), np.where(flip, (-k * px - py) / 2, py)
        px = px - np.clip(px, -2 * r, 0)
        return -np.hypot(px, py) * np.sign(py)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _background(spec: ClipSpec, size: int) -> np.ndarray:
    rng = np.random.default_rng(spec.noise_seed)
    base = np.asarray(spec.background, dtype=np.float64)
    return base + rng.normal(0.0, 6.0, size=(size, size, 1))


def render_frame(spec: ClipSpec, alpha: float, size: int, background: np.ndarray | None = None) -> np.ndarray:
    """The scene at time ``alpha`` in [0, 1] -> uint8 [size, size, 3], antialiased (1-pixel soft edge)."""
    img = (_background(spec, size) if background is None else background).copy()
    img = np.broadcast_to(img, (size, size, 3)).copy()
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    for obj in spec.objects:
        x, y, r, rgb, op = obj.state(alpha)
        if op <= 0:
            continue
        d = _signed_distance(obj.shape, xs - x * size, ys - y * size, r * size)
        cover = np.clip(0.5 - d, 0.0, 1.0)[..., None] * op
        img = img * (1 - cover) + rgb * cover
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render_clip(spec: ClipSpec, num_frames: int, size: int) -> np.ndarray:
    """uint8 [T, size, size, 3]. Frame t is the scene at ``alpha = t / (T - 1)``."""
    if num_frames < 2:
        raise ValueError("a clip needs at least 2 frames")
    bg = _background(spec, size)
    return np.stack([render_frame(spec, t / (num_frames - 1), size, bg) for t in range(num_frames)])


def sample_object(
    rng: np.random.Generator,
    motion: str,
    *,
    shape: str | None = None,
    colour: str | None = None,
    size: str | None = None,
    shapes: tuple[str, ...] = SHAPES,
    colours: tuple[str, ...] = tuple(COLOURS),
) -> ObjectSpec:
    """A random object performing ``motion``, kept fully inside the frame for the whole clip."""
    if motion not in REVERSE_MOTION:
        raise ValueError(f"unknown motion {motion!r}; expected one of {MOTIONS}")
    shape = shape or str(rng.choice(shapes))
    colour = colour or str(rng.choice(colours))
    size = size or str(rng.choice(list(SIZES)))
    r = SIZES[size]
    radius = (r, r)
    if motion in ("grows", "shrinks"):
        r = SIZES["big"]
        radius = (r / GROW, r) if motion == "grows" else (r, r / GROW)
        size = "big"
    margin = r * 1.3 + 0.02
    lo, hi = margin, 1 - margin

    def pos() -> float:
        return float(rng.uniform(lo, hi))

    x, y = pos(), pos()
    start, end = (x, y), (x, y)
    if motion in DIRECTIONS:
        along = float(rng.uniform(lo + TRAVEL, hi)) if hi - lo > TRAVEL else 0.5 + TRAVEL / 2
        a0, a1 = along, along - TRAVEL  # "left"/"up": coordinate decreases
        if motion in ("right", "down"):
            a0, a1 = a1, a0
        if motion in ("left", "right"):
            start, end = (a0, y), (a1, y)
        else:
            start, end = (x, a0), (x, a1)
    pair = (colour, colour)
    if motion == "turns":
        pair = (colour, str(rng.choice([c for c in colours if c != colour])))
    opacity = (1.0, 1.0)
    if motion == "appears":
        opacity = (0.0, 1.0)
    elif motion == "disappears":
        opacity = (1.0, 0.0)
    return ObjectSpec(shape, size, motion, start, end, radius, pair, opacity)


def sample_background(rng: np.random.Generator) -> tuple[int, int, int]:
    """A dark, slightly tinted background (all object colours stay readable on it)."""
    g = rng.integers(20, 70)
    tint = rng.integers(-12, 13, size=3)
    return tuple(int(v) for v in np.clip(g + tint, 0, 255))


def sample_clip(
    rng: np.random.Generator,
    clip_id: str,
    motion: str,
    p_second: float = 0.3,
    shapes: tuple[str, ...] = SHAPES,
    colours: tuple[str, ...] = tuple(COLOURS),
    **main_attrs: str,
) -> ClipSpec:
    """A clip whose main object performs ``motion``; with probability ``p_second`` a second, still object."""
    objects = [sample_object(rng, motion, shapes=shapes, colours=colours, **main_attrs)]
    if rng.random() < p_second:
        main = objects[0]
        for _ in range(20):  # keep the still object clear of the main object's whole path (no occlusion)
            other = sample_object(rng, "still", shapes=shapes, colours=colours)
            if (other.shape, other.colour[0]) == (main.shape, main.colour[0]):
                continue  # captions must be able to tell the two objects apart
            gap = max(main.radius) + max(other.radius) + 0.04
            if _segment_distance(other.start, main.start, main.end) > gap:
                objects.append(other)
                break
    return ClipSpec(clip_id, sample_background(rng), tuple(objects), int(rng.integers(0, 2**31 - 1)))


def _segment_distance(p: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    pa, ba = np.subtract(p, a), np.subtract(b, a)
    t = float(np.clip(pa @ ba / max(float(ba @ ba), 1e-12), 0.0, 1.0))
    return float(np.linalg.norm(pa - t * ba))


def sample_image(
    rng: np.random.Generator,
    image_id: str,
    p_second: float = 0.3,
    shapes: tuple[str, ...] = SHAPES,
    colours: tuple[str, ...] = tuple(COLOURS),
) -> ClipSpec:
    """A still scene (every object 'still'), for the image-text stage."""
    return sample_clip(rng, image_id, "still", p_second, shapes, colours)
