"""A seeded synthetic video-language world for the CPU demo (``clipvip demo``) and for tests.

Clips of simple shapes with colour / size and a motion, written as real video files; downstream captions, noisy
ASR-like subtitles and a clearly-labelled synthetic middle-frame captioner. Motions come in time-reversal pairs
(left/right, up/down, grows/shrinks, appears/disappears, turns colour), so an order-blind video model cannot tell
a test clip from its twin: the temporal structure the Video Proxy mechanism is meant to capture.
"""

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
from clipvip.synth.world import World, WorldConfig, generate_world, plan_world, spec_from_dict

__all__ = [
    "COLOURS",
    "DIRECTIONS",
    "MOTIONS",
    "REVERSE_MOTION",
    "SHAPES",
    "ClipSpec",
    "ObjectSpec",
    "SyntheticFrameCaptioner",
    "World",
    "WorldConfig",
    "caption",
    "captions",
    "generate_world",
    "plan_world",
    "render_clip",
    "render_frame",
    "sample_clip",
    "sample_image",
    "spec_from_dict",
    "static_description",
    "subtitle",
]
