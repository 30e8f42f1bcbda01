"""The synthetic world: exact time-reversal twins, captions / subtitles / middle-frame captions, files on disk."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clipvip.synth import (
    COLOURS,
    DIRECTIONS,
    MOTIONS,
    REVERSE_MOTION,
    SyntheticFrameCaptioner,
    WorldConfig,
    caption,
    generate_world,
    plan_world,
    render_clip,
    sample_clip,
    subtitle,
)
from clipvip.synth.world import spec_from_dict

FILLERS = {"um", "uh", "so", "like", "you", "know", "okay", "right", "i", "mean", "basically", "yeah"}


@pytest.mark.parametrize("motion", MOTIONS)
@pytest.mark.parametrize("num_frames", [8, 9])  # odd T has an exact middle frame (the blend rule)
def test_reverse_renders_the_reversed_frames(motion: str, num_frames: int) -> None:
    rng = np.random.default_rng(hash((motion, num_frames)) % 2**32)
    spec = sample_clip(rng, "a", motion, p_second=1.0)
    frames = render_clip(spec, num_frames, 32)
    twin = render_clip(spec.reverse("b"), num_frames, 32)
    np.testing.assert_array_equal(twin, frames[::-1])
    assert spec.reverse("b").main.motion == REVERSE_MOTION[motion]


def _centroid_x(frame: np.ndarray, rgb: tuple[int, int, int]) -> float:
    mask = np.abs(frame.astype(int) - np.asarray(rgb)).sum(-1) < 60
    assert mask.any()
    return float(np.nonzero(mask)[1].mean())


def test_motion_left_moves_the_object_left_in_pixels() -> None:
    rng = np.random.default_rng(1)
    spec = sample_clip(rng, "a", "left", p_second=0.0, colour="red")
    frames = render_clip(spec, 8, 48)
    xs = [_centroid_x(f, COLOURS["red"]) for f in frames]
    assert all(b < a for a, b in zip(xs, xs[1:]))  # strictly leftwards, frame after frame
    assert caption(spec).endswith("moves to the left") and "red" in caption(spec)


def test_mean_frame_cannot_tell_a_clip_from_its_twin() -> None:
    """The structural point of the world: an order-blind summary (mean of frames) is identical for the twins."""
    spec = sample_clip(np.random.default_rng(2), "a", "right")
    a, b = render_clip(spec, 8, 32), render_clip(spec.reverse("b"), 8, 32)
    np.testing.assert_array_equal(a.astype(np.int64).sum(0), b.astype(np.int64).sum(0))
    assert caption(spec) != caption(spec.reverse("b"))


def test_frame_captioner_sees_appearance_not_motion() -> None:
    rng = np.random.default_rng(3)
    cap = SyntheticFrameCaptioner(num_frames=8)
    for motion in DIRECTIONS + ("grows", "turns"):
        spec = sample_clip(rng, "a", motion, p_second=0.0)
        text = cap(spec)
        assert spec.main.shape in text
        for word in ("moves", "grows", "turns", "shrinks", "appears"):
            assert word not in text
    # "turns": the middle frame (index 4 of 8, alpha 4/7 > 0.5) already shows the new colour
    spec = sample_clip(rng, "a", "turns", p_second=0.0)
    assert spec.main.colour[1] in cap(spec) and spec.main.colour[0] not in cap(spec)
    assert "demo only" in cap.name


def test_subtitles_are_noisy_asr_text() -> None:
    rng = np.random.default_rng(4)
    specs = [sample_clip(rng, f"c{i}", str(rng.choice(MOTIONS))) for i in range(300)]
    subs = [subtitle(s, rng, other=specs[(i + 1) % 300]) for i, s in enumerate(specs)]
    assert all(s == s.lower() for s in subs)
    assert all(any(w in FILLERS for w in s.split()) for s in subs)
    on_topic = sum(s.main.shape in sub or s.main.colour[0] in sub for s, sub in zip(specs, subs))
    assert 0.3 * len(subs) < on_topic < 0.95 * len(subs)  # mostly about the clip, but far from always


def test_world_on_disk(tmp_path) -> None:
    from clipvip.video import read_frames

    cfg = WorldConfig(num_images=6, num_pretrain=6, num_train=4, num_test_pairs=5, frame_size=32, num_frames=8)
    world = generate_world(cfg, tmp_path / "w", progress=False)
    rows = {
        s: [json.loads(x) for x in (tmp_path / "w" / f"{s}.jsonl").read_text().splitlines()]
        for s in ("images", "pretrain", "train", "test")
    }
    assert [len(rows[s]) for s in ("images", "pretrain", "train", "test")] == [6, 6, 4, 10]
    assert all({"clip_id", "subtitle", "caption", "captioner"} <= set(r) for r in rows["pretrain"])
    assert all(len(r["text"]) == cfg.captions_per_train_clip for r in rows["train"])
    texts = [r["text"] for r in rows["test"]]
    assert len(set(texts)) == len(texts)
    by_id = {r["clip_id"]: r for r in rows["test"]}
    for r in rows["test"]:
        assert by_id[r["twin"]]["twin"] == r["clip_id"]
        assert REVERSE_MOTION[r["motion"]] == by_id[r["twin"]]["motion"]
    # the written, decoded twins are exactly reversed (lossless H.264, one keyframe)
    a, b = rows["test"][0]["clip_id"], rows["test"][0]["twin"]
    fa = read_frames(world.video_path(a), num_frames=8, size=32).frames
    fb = read_frames(world.video_path(b), num_frames=8, size=32).frames
    assert fa.shape == (8, 3, 32, 32)
    assert bool((fa.flip(0) == fb).all())
    # the decoded first frame matches the renderer (up to yuv420p chroma rounding)
    spec = spec_from_dict(json.loads((tmp_path / "w" / "world.json").read_text())["specs"][a])
    ref = render_clip(spec, 8, 32)[0].astype(int)
    assert np.abs(fa[0].permute(1, 2, 0).numpy().astype(int) - ref).mean() < 6
    assert read_frames(world.image_path(rows["images"][0]["clip_id"]), size=32).frames.shape == (1, 3, 32, 32)
    # resumable: a second call with the same config writes nothing new; another config is refused
    mtime = world.video_path(a).stat().st_mtime_ns
    generate_world(cfg, tmp_path / "w", progress=False)
    assert world.video_path(a).stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="different config"):
        generate_world(WorldConfig(num_images=7, num_pretrain=6, num_train=4, num_test_pairs=5), tmp_path / "w")


def test_plan_is_seeded() -> None:
    cfg = WorldConfig(num_images=3, num_pretrain=5, num_train=3, num_test_pairs=4)
    a, b = plan_world(cfg), plan_world(cfg)
    assert a.pretrain == b.pretrain and a.test == b.test
    c = plan_world(WorldConfig(seed=1, num_images=3, num_pretrain=5, num_train=3, num_test_pairs=4))
    assert c.pretrain != a.pretrain


def test_validation_split_is_held_out_and_leaves_test_unchanged(tmp_path) -> None:
    base = dict(num_images=3, num_pretrain=5, num_train=3, num_test_pairs=9)
    plain = plan_world(WorldConfig(**base))
    world = plan_world(WorldConfig(**base, num_val_pairs=6))
    assert world.test == plain.test and world.train == plain.train  # drawn after the test pairs
    assert len(world.val) == 12 and not plain.val
    val_texts = {r["text"] for r in world.val}
    assert len(val_texts) == 12 and not val_texts & {r["text"] for r in world.test}
    by_id = {r["clip_id"]: r for r in world.val}
    for r in world.val:
        assert world.split_of[r["clip_id"]] == "val" and by_id[r["twin"]]["twin"] == r["clip_id"]
        assert REVERSE_MOTION[r["motion"]] == by_id[r["twin"]]["motion"]
    assert [r["motion"] for r in world.val[::2]] == list(world.config.test_motions[:6])  # balanced, as test
    small = WorldConfig(num_images=1, num_pretrain=1, num_train=1, num_test_pairs=1, num_val_pairs=1)
    w = generate_world(small, tmp_path / "w", progress=False)
    assert all(w.video_path(r["clip_id"]).is_file() for r in w.val)
    assert [json.loads(x)["clip_id"] for x in (tmp_path / "w" / "val.jsonl").read_text().splitlines()] == [
        r["clip_id"] for r in w.val
    ]


def test_motion_prompts_are_the_world_captions_of_that_motion() -> None:
    from clipvip.synth.text import motion_prompts

    world = plan_world(WorldConfig(num_images=1, num_pretrain=1, num_train=1, num_test_pairs=45))
    cfg = world.config
    prompts = {m: set(motion_prompts(m, cfg.shapes, cfg.colours)) for m in cfg.test_motions}
    # every one-object test caption is one of its own motion's prompts, and of no other motion's
    single = [r for r in world.test if "next to" not in r["text"]]
    assert len(single) >= 20
    for r in single:
        assert [m for m, p in prompts.items() if r["text"] in p] == [r["motion"]]
    assert len(prompts["left"]) == len(cfg.shapes) * len(cfg.colours) * 2  # x 2 sizes
    assert len(prompts["grows"]) == len(cfg.shapes) * len(cfg.colours)  # no size word
    with pytest.raises(ValueError, match="unknown motion"):
        motion_prompts("jumps", cfg.shapes, cfg.colours)


def test_bad_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="even"):
        WorldConfig(frame_size=33)
    with pytest.raises(ValueError, match="twin"):
        WorldConfig(test_motions=("left", "still"))
    with pytest.raises(ValueError, match="unknown motions"):
        WorldConfig(motions=("left", "teleports"))


def test_train_twins_are_time_reversed_pairs() -> None:
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up", "grows": "shrinks"}
    cfg = WorldConfig(num_images=2, num_pretrain=2, num_train=40, num_test_pairs=4, train_twin_fraction=1.0)
    world = plan_world(cfg)
    assert len(world.train) == 40
    specs = [world.specs[r["clip_id"]] for r in world.train]
    pairs, i = 0, 0
    while i < len(specs) - 1:
        a, b = specs[i].main, specs[i + 1].main
        if a.motion == "still":
            i += 1
            continue
        # the twin: same scene, start and end swapped (checked field by field, not via ObjectSpec.reverse)
        assert (b.start, b.end, b.radius, b.shape) == (a.end, a.start, a.radius[::-1], a.shape)
        if a.motion in opposite:
            assert b.motion == opposite[a.motion]
            assert world.train[i]["text"][0] != world.train[i + 1]["text"][0]
        pairs, i = pairs + 1, i + 2
    assert pairs >= 15
    # the default world has no twins in train (and is unchanged by the option's existence)
    plain = plan_world(WorldConfig(num_images=2, num_pretrain=2, num_train=40, num_test_pairs=4))
    s = [plain.specs[r["clip_id"]].main for r in plain.train]
    assert not any(x.motion != "still" and (y.start, y.end) == (x.end, x.start) for x, y in zip(s, s[1:]))
    with pytest.raises(ValueError, match="train_twin_fraction"):
        WorldConfig(train_twin_fraction=1.5)
