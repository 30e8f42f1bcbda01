"""How the demo scores a model: text-to-video retrieval with the twin and direction measures, label-prompt
classification (the Table 7 analogue), the image-text stage's position-word probes, and the example searches over
an index of the test clips.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

import clipvip
from clipvip.data import collate
from clipvip.synth import DIRECTIONS, World, WorldConfig
from clipvip.synth.text import motion_prompts
from clipvip_apps.demo.data import CaptionedClips, GalleryClips, swap_words


def evaluate(
    model: torch.nn.Module,
    gallery: GalleryClips,
    test_rows: list[dict[str, Any]],
    label_prompts: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """Text->video retrieval on the whole evaluation set, on motion-direction queries, and twin accuracy; with
    ``label_prompts`` ({motion: prompts}) also zero-shot label classification of each clip's motion.

    Ties are scored as the mean rank over the tied block (``ties="mean"``): an order-blind model scores a clip
    and its time-reversed twin (nearly) the same, and must not be credited for that. Twin accuracy: the share of
    queries whose own clip scores higher than its time-reversed twin (a tie counts half); chance is 50%.
    Classification: each class embedding is the normalised mean of its prompts' embeddings (CLIP's prompt
    ensembling); a clip is assigned the class of highest cosine; chance is 1 / number of classes."""
    from clipvip.eval import compute_embeddings, metrics_from_ranks, score_retrieval

    text_emb, video_emb, _ = compute_embeddings(model, gallery, batch_size=64, progress=False, collate_fn=collate)
    res = score_retrieval(text_emb, video_emb, gallery.text_to_video, ties="mean", keep_ranks=True)
    ranks = res.pop("ranks")["t2v"]
    sim = (text_emb @ video_emb.T).numpy()
    index = {r["clip_id"]: i for i, r in enumerate(test_rows)}
    direction = np.array([r["motion"] in DIRECTIONS for r in test_rows])
    twin_scores = []
    for k, r in enumerate(test_rows):
        own, other = sim[k, k], sim[k, index[r["twin"]]]
        twin_scores.append(1.0 if own > other + 1e-6 else (0.5 if abs(own - other) <= 1e-6 else 0.0))
    twin = np.asarray(twin_scores)
    out = {
        "t2v": res["t2v"],
        "v2t": res["v2t"],
        "t2v_direction": metrics_from_ranks(ranks[direction]),
        "twin_accuracy": 100.0 * float(twin.mean()),
        "twin_accuracy_direction": 100.0 * float(twin[direction].mean()),
        "counts": res["counts"],
    }
    if label_prompts:
        out["label_accuracy"] = label_accuracy(model, video_emb, test_rows, label_prompts)
    return out


def label_predictions(
    model: torch.nn.Module, video_emb: torch.Tensor, label_prompts: dict[str, list[str]]
) -> list[str]:
    """Prompt-ensembled zero-shot labels of ``video_emb`` (L2-normalised video embeddings): each label's prompts
    are encoded, averaged and normalised; the nearest label wins."""
    labels = list(label_prompts)
    model.eval()
    with torch.no_grad():
        classes = []
        for m in labels:
            e = model.encode_text(label_prompts[m]).mean(0)
            classes.append(e / e.norm())
    return [labels[p] for p in (video_emb @ torch.stack(classes).T).argmax(1).tolist()]


def label_accuracy(
    model: torch.nn.Module, video_emb: torch.Tensor, rows: list[dict[str, Any]], label_prompts: dict[str, list[str]]
) -> float:
    """Top-1 accuracy (%) of ``label_predictions`` against ``rows[i]["motion"]``."""
    pred = label_predictions(model, video_emb, label_prompts)
    return 100.0 * float(np.mean([p == r["motion"] for p, r in zip(pred, rows, strict=True)]))


def world_label_prompts(cfg: WorldConfig) -> dict[str, list[str]]:
    """{motion: prompts} over the world's test motions (the classes of the zero-shot classification task)."""
    return {m: motion_prompts(m, cfg.shapes, cfg.colours) for m in cfg.test_motions}


def position_word_accuracy(
    model: torch.nn.Module, images: CaptionedClips, pair: tuple[str, str] = ("left", "right"), limit: int = 400
) -> dict[str, Any]:
    """Does the image-text CLIP ground a pair of position words? Share of still images (whose caption names exactly
    one of the two) whose own caption outscores the same caption with the two words swapped; chance = 50.

    Motion direction can only be read from frame order if the towers know where things are: "moves to the left"
    has to mean "ends on the left". This probe measures that precondition on the CLIP stage itself."""
    a, b = pair
    idx = [j for j, t in enumerate(images.texts) if (a in t[0].split()) != (b in t[0].split())][:limit]
    if not idx:
        return {"accuracy": float("nan"), "n": 0}
    model.eval()
    with torch.no_grad():
        video = torch.stack([images[j]["video"] for j in idx])
        v = torch.cat([model.encode_video(video[k : k + 64]) for k in range(0, len(idx), 64)])
        own = model.encode_text([images.texts[j][0] for j in idx])
        swapped = model.encode_text([swap_words(images.texts[j][0], pair) for j in idx])
    wins = ((v * own).sum(-1) > (v * swapped).sum(-1)).float()
    return {"accuracy": 100.0 * float(wins.mean()), "n": len(idx)}


def run_queries(
    model_dir: str | Path, world: World, out: Path, queries: tuple[str, ...], k: int, progress: bool = True
) -> dict[str, Any]:
    """Index the test clips with ``clipvip.index`` and answer ``queries``: {query: [hit dicts + caption]}."""
    from clipvip.index import IndexConfig, VideoIndex, build_index

    model = clipvip.load(model_dir)
    index_dir = out / "index"
    if index_dir.exists():  # a previous demo's index was built with another model: start over
        shutil.rmtree(index_dir)
    report = build_index(
        world.video_dir / "test",
        index_dir,
        model,
        model_dir,
        IndexConfig(thumb_size=world.config.frame_size, decode_workers=1),
        progress=progress,
    )
    index = VideoIndex.open(index_dir)
    caption_of = {str(world.video_path(r["clip_id"]).resolve()): r["text"] for r in world.test}
    answers: dict[str, Any] = {"index": str(index_dir), "summary": report.summary(), "queries": {}}
    with torch.no_grad():
        q_emb = model.encode_text(list(queries)).numpy()
    for q, e in zip(queries, q_emb):
        hits = []
        for h in index.search(e, k=k):
            d = h.to_dict()
            d["caption"] = caption_of.get(str(Path(h.path).resolve()), "?")
            d["correct"] = d["caption"] == q
            hits.append(d)
        answers["queries"][q] = hits
    return answers
