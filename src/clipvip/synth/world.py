"""A seeded synthetic video-language world written to real files (videos, images, manifests).

Layout of ``root`` (every manifest is JSON lines; videos are ``videos/{split}/{clip_id}.mp4``, images ``images/{id}.png``):

- ``images.jsonl``   {"clip_id", "text"}: still scenes and static captions (the image-text "CLIP" stage)
- ``pretrain.jsonl`` {"clip_id", "subtitle", "caption", "captioner"}: the post-pretraining corpus; ``caption``
  is the synthetic middle-frame captioner's output (see ``clipvip.synth.text.SyntheticFrameCaptioner``)
- ``train.jsonl``    {"clip_id", "text": [captions]}: downstream fine-tuning set
- ``test.jsonl``     {"clip_id", "text", "motion", "twin"}: downstream test set, one caption per clip, built from
  time-reversal twin pairs (``twin`` names the other clip of the pair; all captions are distinct)
- ``val.jsonl``      the same for the validation split (``num_val_pairs``; drawn after the test pairs, so adding a
  validation split leaves the test split unchanged; no caption is shared with the test split)
- ``world.json``     the config and every clip's scene spec

Generation is resumable: files already written (atomically) are kept when the config is unchanged.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from clipvip.io import atomic_path, atomic_write_json, write_jsonl
from clipvip.synth.scene import (
    COLOURS,
    DIRECTIONS,
    MOTIONS,
    REVERSE_MOTION,
    SHAPES,
    ClipSpec,
    ObjectSpec,
    render_clip,
    render_frame,
    sample_clip,
    sample_image,
)
from clipvip.synth.text import SyntheticFrameCaptioner, caption, captions, static_description, subtitle

# Lossless (crf 0): a clip and its time-reversed twin decode to exactly reversed frames. One keyframe per clip
# (no scene-cut I-frames): 8-frame clips gain nothing from more, and it keeps decoding to one sequential pass.
VIDEO_OPTIONS: dict[str, str] = {"crf": "0", "x264-params": "scenecut=0"}


@dataclass
class WorldConfig:
    """Sizes of the world. Defaults fit the CPU demo; ``frame_size`` must be even (H.264)."""

    seed: int = 0
    frame_size: int = 32
    num_frames: int = 8
    fps: float = 8.0
    num_images: int = 1500
    num_pretrain: int = 1000
    num_train: int = 300
    num_test_pairs: int = 60
    num_val_pairs: int = 0  # held-out pairs for choosing settings (the demo never tunes on the test split)
    captions_per_train_clip: int = 4
    p_second_object: float = 0.3
    p_image_position: float = 1.0  # an image caption names where the object is ("on the left")
    direction_weight: float = 3.0  # left/right/up/down are drawn this many times as often as other motions
    p_subtitle_other: float = 0.2  # the subtitle talks about another clip
    p_subtitle_chatter: float = 0.2  # the subtitle says nothing visual
    p_subtitle_motion: float = 0.5  # an on-topic subtitle mentions the motion
    # Share of train clips that come with their time-reversed twin (also a train clip, with its own captions):
    # the only batches in which "moves left" vs "moves right" can be told apart by ORDER alone are those holding
    # the same scene both ways, so these pairs are the contrastive signal for frame order (a hard negative each).
    train_twin_fraction: float = 0.0
    motions: tuple[str, ...] = MOTIONS
    shapes: tuple[str, ...] = SHAPES
    # Few appearance combinations => clips in a batch often share appearance, so the text must name the motion.
    colours: tuple[str, ...] = ("red", "green", "blue")
    test_motions: tuple[str, ...] = tuple(m for m in MOTIONS if m != "still")

    def __post_init__(self) -> None:
        self.motions = tuple(self.motions)
        self.shapes, self.colours = tuple(self.shapes), tuple(self.colours)
        if not set(self.shapes) <= set(SHAPES) or not set(self.colours) <= set(COLOURS) or len(self.colours) < 2:
            raise ValueError(f"shapes must be among {SHAPES} and 2+ colours among {tuple(COLOURS)}")
        self.test_motions = tuple(self.test_motions)
        if self.frame_size % 2:
            raise ValueError(f"frame_size must be even for H.264, got {self.frame_size}")
        if self.num_frames < 2:
            raise ValueError("num_frames must be >= 2")
        bad = [m for m in (*self.motions, *self.test_motions) if m not in REVERSE_MOTION]
        if bad:
            raise ValueError(f"unknown motions {bad}; expected some of {MOTIONS}")
        if not 0.0 <= self.train_twin_fraction <= 1.0:
            raise ValueError(f"train_twin_fraction must be in [0, 1], got {self.train_twin_fraction}")
        if "still" in self.test_motions:
            raise ValueError("test clips come in time-reversal twin pairs; 'still' has no distinct twin")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("motions", "test_motions", "shapes", "colours"):
            d[k] = list(d[k])
        return d


@dataclass
class World:
    """What ``generate_world`` wrote: paths plus the in-memory specs and texts."""

    root: Path
    config: WorldConfig
    images: list[dict[str, Any]] = field(default_factory=list)
    pretrain: list[dict[str, Any]] = field(default_factory=list)
    train: list[dict[str, Any]] = field(default_factory=list)
    test: list[dict[str, Any]] = field(default_factory=list)
    val: list[dict[str, Any]] = field(default_factory=list)
    specs: dict[str, ClipSpec] = field(default_factory=dict)
    split_of: dict[str, str] = field(default_factory=dict)  # clip id -> "pretrain" / "train" / "test" / "val"

    @property
    def video_dir(self) -> Path:
        return self.root / "videos"

    @property
    def image_dir(self) -> Path:
        return self.root / "images"

    def video_path(self, clip_id: str) -> Path:
        """``videos/{split}/{clip_id}.mp4``: one folder per split, so e.g. the test folder can be indexed alone."""
        return self.video_dir / self.split_of[clip_id] / f"{clip_id}.mp4"

    def image_path(self, image_id: str) -> Path:
        return self.image_dir / f"{image_id}.png"

    def manifest(self, split: str) -> Path:
        return self.root / f"{split}.jsonl"


def _spec_to_dict(spec: ClipSpec) -> dict[str, Any]:
    return dataclasses.asdict(spec)


def spec_from_dict(d: dict[str, Any]) -> ClipSpec:
    objs = tuple(ObjectSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in o.items()}) for o in d["objects"])
    return ClipSpec(d["clip_id"], tuple(d["background"]), objs, int(d["noise_seed"]))


def _write_png(path: Path, frame: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, keep_suffix=True) as tmp:
        Image.fromarray(frame).save(tmp)


def plan_world(config: WorldConfig, root: str | Path = ".") -> World:
    """Sample every spec and text of the world (no files written). Deterministic in ``config.seed``."""
    cfg = config
    world = World(Path(root), cfg)
    rng = np.random.default_rng(cfg.seed)
    captioner = SyntheticFrameCaptioner(cfg.num_frames)

    for i in range(cfg.num_images):
        spec = sample_image(rng, f"img{i:05d}", cfg.p_second_object, cfg.shapes, cfg.colours)
        objs = [(o, 0.0) for o in spec.objects]
        world.specs[spec.clip_id] = spec
        text = static_description(objs, with_position=bool(rng.random() < cfg.p_image_position))
        world.images.append({"clip_id": spec.clip_id, "text": text})

    def clip(clip_id: str, motion: str) -> ClipSpec:
        return sample_clip(rng, clip_id, motion, cfg.p_second_object, cfg.shapes, cfg.colours)

    weights = np.array([cfg.direction_weight if m in DIRECTIONS else 1.0 for m in cfg.motions])
    weights /= weights.sum()

    def motion() -> str:
        return str(rng.choice(cfg.motions, p=weights))

    pre = [clip(f"pre{i:05d}", motion()) for i in range(cfg.num_pretrain)]
    for i, spec in enumerate(pre):
        world.specs[spec.clip_id] = spec
        world.split_of[spec.clip_id] = "pretrain"
        # "another clip" = a neighbour in the stream, as ASR drifts across cuts of one long video
        other = pre[(i + int(rng.choice([-1, 1]))) % len(pre)]
        sub = subtitle(spec, rng, other, cfg.p_subtitle_other, cfg.p_subtitle_chatter, cfg.p_subtitle_motion)
        world.pretrain.append(
            {"clip_id": spec.clip_id, "subtitle": sub, "caption": captioner(spec), "captioner": captioner.name}
        )

    train_specs: list[ClipSpec] = []
    while len(train_specs) < cfg.num_train:
        spec = clip(f"train{len(train_specs):05d}", motion())
        train_specs.append(spec)
        reversible = spec.main.motion != "still"  # a still scene reversed is the same scene
        if cfg.train_twin_fraction > 0 and reversible and len(train_specs) < cfg.num_train:
            if rng.random() < cfg.train_twin_fraction:
                train_specs.append(spec.reverse(f"train{len(train_specs):05d}"))
    for spec in train_specs:
        world.specs[spec.clip_id] = spec
        world.split_of[spec.clip_id] = "train"
        world.train.append({"clip_id": spec.clip_id, "text": captions(spec, cfg.captions_per_train_clip)})

    seen: set[str] = set()
    _twin_pairs(world, clip, "test", cfg.num_test_pairs, seen)
    _twin_pairs(world, clip, "val", cfg.num_val_pairs, seen)
    return world


def _twin_pairs(world: World, clip: Any, split: str, num_pairs: int, seen: set[str]) -> None:
    """Append ``num_pairs`` (clip, time-reversed twin) pairs, balanced over test motions, with captions unseen so
    far, to ``world.<split>``."""
    cfg = world.config
    rows = getattr(world, split)
    pairs = tries = 0
    while pairs < num_pairs:
        tries += 1
        if tries > 100 * num_pairs + 1000:
            raise ValueError(f"cannot draw {num_pairs} {split} pairs with distinct captions; lower it")
        motion = cfg.test_motions[pairs % len(cfg.test_motions)]  # balanced over motions
        a = clip(f"{split}{2 * pairs:05d}", motion)
        b = a.reverse(f"{split}{2 * pairs + 1:05d}")
        ca, cb = caption(a), caption(b)
        if ca in seen or cb in seen or ca == cb:
            continue
        seen.update((ca, cb))
        for spec, text, twin in ((a, ca, b.clip_id), (b, cb, a.clip_id)):
            world.specs[spec.clip_id] = spec
            world.split_of[spec.clip_id] = split
            rows.append({"clip_id": spec.clip_id, "text": text, "motion": spec.main.motion, "twin": twin})
        pairs += 1


def generate_world(config: WorldConfig, root: str | Path, progress: bool = True) -> World:
    """Plan the world and write it under ``root``; files of a previous run with the same config are reused."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    world = plan_world(config, root)
    meta_path = root / "world.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old.get("config") != config.to_dict() or old.get("video_options") != VIDEO_OPTIONS:
            raise ValueError(f"{meta_path}: a world with a different config is already there; use another folder")
    from clipvip.video import write_video

    cfg = config
    todo_img = [s for s in world.images if not world.image_path(s["clip_id"]).exists()]
    for row in tqdm(todo_img, desc="world: images", disable=not progress or not todo_img, leave=False):
        spec = world.specs[row["clip_id"]]
        _write_png(world.image_path(row["clip_id"]), render_frame(spec, 0.0, cfg.frame_size))
    clip_ids = [r["clip_id"] for split in (world.pretrain, world.train, world.test, world.val) for r in split]
    todo = [c for c in clip_ids if not world.video_path(c).exists()]
    for cid in tqdm(todo, desc="world: videos", disable=not progress or not todo, leave=False):
        frames = render_clip(world.specs[cid], cfg.num_frames, cfg.frame_size)
        write_video(world.video_path(cid), frames, fps=cfg.fps, options=VIDEO_OPTIONS)
    for split in ("images", "pretrain", "train", "test", "val"):
        write_jsonl(world.manifest(split), getattr(world, split))
    meta = {
        "config": cfg.to_dict(),
        "video_options": VIDEO_OPTIONS,
        "specs": {k: _spec_to_dict(v) for k, v in world.specs.items()},
    }
    atomic_write_json(meta_path, meta, indent=None)  # per-call temporary: concurrent demo workers do not clobber
    return world
