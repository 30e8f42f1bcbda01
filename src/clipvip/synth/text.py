"""The three kinds of text of the synthetic world (paper Sec. 3.2 / 4.1).

- ``caption``: the downstream, MSR-VTT-like description of the whole clip, motion included.
- ``subtitle``: ASR-like pretraining text: lower case, filler words, colloquial synonyms, mis-heard words, and
  sometimes about another clip or about nothing visual at all (the domain gap of Sec. 3.2).
- ``SyntheticFrameCaptioner``: stands in for OFA in the demo. It is NOT an image model: it reads the scene
  description at the middle frame (appearance and position only, never motion). The real path is ``clipvip caption``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clipvip.synth.scene import SIZES, ClipSpec, ObjectSpec

MOTION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("moves to the left", "moves left", "slides to the left", "goes left"),
    "right": ("moves to the right", "moves right", "slides to the right", "goes right"),
    # "to the top" / "to the bottom" first: the canonical (test) phrasing names where the motion ends, in the
    # position words the image-text stage grounds ("at the top"), as "moves to the left" does.
    "up": ("moves to the top", "moves up", "goes up to the top", "rises"),
    "down": ("moves to the bottom", "moves down", "goes down to the bottom", "falls"),
    "grows": ("grows", "gets bigger", "expands", "grows larger"),
    "shrinks": ("shrinks", "gets smaller", "contracts", "shrinks down"),
    "appears": ("appears", "shows up", "comes into view", "pops up"),
    "disappears": ("disappears", "vanishes", "goes out of view", "fades away"),
    "turns": ("turns {c}", "changes colour to {c}", "becomes {c}", "turns into a {c} one"),
    "still": ("stays still", "does not move", "sits still", "stays in place"),
}
_SUB_SHAPE = {
    "circle": ("ball", "dot", "circle", "round thing"),
    "square": ("box", "block", "square"),
    "triangle": ("triangle", "pyramid", "triangle thing"),
}
_SUB_SIZE = {"small": ("little", "tiny", "small", ""), "big": ("big", "huge", "large", "")}
_SUB_COLOUR = {
    "red": ("red", "red", "read"),
    "green": ("green",),
    "blue": ("blue", "blue", "blew"),
    "yellow": ("yellow", "yellow", "yello"),
    "white": ("white", "white", "wide"),
    "purple": ("purple",),
}
_SUB_MOTION: dict[str, tuple[str, ...]] = {
    "left": ("going left", "heading off to the left", "moving left"),
    "right": ("going right", "heading off to the right", "moving right"),
    "up": ("going up", "floating up", "moving up"),
    "down": ("dropping down", "going down", "moving down"),
    "grows": ("getting bigger", "growing"),
    "shrinks": ("getting smaller", "shrinking"),
    "appears": ("popping up", "showing up"),
    "disappears": ("gone", "disappearing"),
    "turns": ("changing to {c}", "going {c}"),
    "still": ("just sitting there", "not moving"),
}
_FILLERS = ("um", "uh", "so", "like", "you know", "okay", "right", "i mean", "basically", "yeah")
_LEADS = ("so here we have", "now look at", "check out", "and then", "this is", "over here", "see")
_CHATTER = (
    "welcome back to the channel",
    "dont forget to subscribe",
    "thanks for watching",
    "let me know in the comments",
    "today we are going to talk about this",
    "okay so where was i",
    "link in the description",
    "hit the like button",
)


def _noun(obj: ObjectSpec, colour: str | None = None, with_size: bool = True) -> str:
    words = [obj.size] if with_size else []
    return " ".join(["a", *words, colour or obj.colour[0], obj.shape])


def describe(obj: ObjectSpec, template: int = 0) -> str:
    """'a small red circle moves to the left' (template picks the phrasing; 0 is the canonical one)."""
    phrase = MOTION_PHRASES[obj.motion][template % len(MOTION_PHRASES[obj.motion])]
    if obj.motion == "turns":
        phrase = phrase.format(c=obj.colour[1])
    size_word = obj.motion not in ("grows", "shrinks")  # the size changes, so it is not an attribute
    return f"{_noun(obj, with_size=size_word)} {phrase}"


def caption(spec: ClipSpec, template: int = 0) -> str:
    """Downstream caption of a clip: the main object's motion, plus 'next to ...' for a second, still object."""
    text = describe(spec.main, template)
    for other in spec.objects[1:]:
        text += f" next to {_noun(other)}"
    return text


def captions(spec: ClipSpec, n: int) -> list[str]:
    """``n`` differently phrased captions (the first is the canonical one), like MSR-VTT's 20 per video."""
    return [caption(spec, i) for i in range(n)]


def subtitle(
    spec: ClipSpec,
    rng: np.random.Generator,
    other: ClipSpec | None = None,
    p_other: float = 0.2,
    p_chatter: float = 0.2,
    p_motion: float = 0.5,
) -> str:
    """An ASR-like line for the clip: about it, about ``other`` (a clip nearby in the 'video'), or chatter."""
    u = rng.random()
    if u < p_chatter:
        return _with_fillers(str(rng.choice(_CHATTER)), rng)
    target = other if (other is not None and u < p_chatter + p_other) else spec
    obj = target.main
    words = [str(rng.choice(_LEADS)), "the"]
    size = str(rng.choice(_SUB_SIZE[obj.size]))
    if size and obj.motion not in ("grows", "shrinks"):
        words.append(size)
    words += [str(rng.choice(_SUB_COLOUR[obj.colour[0]])), str(rng.choice(_SUB_SHAPE[obj.shape]))]
    if rng.random() < p_motion:
        words.append(str(rng.choice(_SUB_MOTION[obj.motion])).format(c=obj.colour[1]))
    return _with_fillers(" ".join(words), rng)


def _with_fillers(text: str, rng: np.random.Generator) -> str:
    words = text.split()
    for _ in range(int(rng.integers(1, 4))):
        words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(_FILLERS)))
    return " ".join(words).lower()


def position_phrase(x: float, y: float) -> str:
    """Coarse 3x3 position words for a centre in [0, 1]^2."""
    col = "left" if x < 1 / 3 else ("right" if x > 2 / 3 else "")
    row = "top" if y < 1 / 3 else ("bottom" if y > 2 / 3 else "")
    if row and col:
        return f"at the {row} {col}"
    if row:
        return f"at the {row}"
    if col:
        return f"on the {col}"
    return "in the middle"


def static_description(objects: list[tuple[ObjectSpec, float]], with_position: bool = True) -> str:
    """Describe objects frozen at one instant: (object, alpha) -> 'a big blue square at the top left and ...'."""
    parts = []
    for obj, alpha in objects:
        x, y, r, _, op = obj.state(alpha)
        if op < 0.5:
            continue
        colour = obj.colour[0] if alpha < 0.5 else obj.colour[1]
        size = "big" if r >= (SIZES["small"] + SIZES["big"]) / 2 else "small"
        text = f"a {size} {colour} {obj.shape}"
        parts.append(f"{text} {position_phrase(x, y)}" if with_position else text)
    return " and ".join(parts) if parts else "an empty dark background"


@dataclass(frozen=True)
class SyntheticFrameCaptioner:
    """DEMO-ONLY stand-in for an image captioner (OFA in the paper): describes a clip's middle frame.

    It reads the scene description at frame ``num_frames // 2`` (the middle-frame rule), so like a real image
    captioner it sees appearance and position but never motion. It does not look at pixels; the real path for
    real videos is ``clipvip caption``."""

    num_frames: int
    name: str = "synthetic-frame-captioner (demo only: scene description of the middle frame)"

    def __call__(self, spec: ClipSpec) -> str:
        alpha = (self.num_frames // 2) / (self.num_frames - 1)
        return static_description([(o, alpha) for o in spec.objects])


def motion_prompts(motion: str, shapes: tuple[str, ...], colours: tuple[str, ...]) -> list[str]:
    """Label prompts for zero-shot classification of a clip's motion, ensembled like CLIP's prompt templates: the
    canonical caption of ``motion`` for every shape x colour (x size, x end colour for "turns") of the world, so
    the class embedding names the motion and averages the appearance out."""
    if motion not in MOTION_PHRASES:
        raise ValueError(f"unknown motion {motion!r}; expected one of {tuple(MOTION_PHRASES)}")
    ends = (
        [(c0, c1) for c0 in colours for c1 in colours if c1 != c0] if motion == "turns" else [(c, c) for c in colours]
    )
    out = []
    for shape in shapes:
        for c0, c1 in ends:
            for size in SIZES:
                obj = ObjectSpec(shape, size, motion, (0.5, 0.5), (0.5, 0.5), (0.1, 0.1), (c0, c1), (1.0, 1.0))
                out.append(describe(obj))
    return list(dict.fromkeys(out))  # grows/shrinks carry no size word: drop the repeats
