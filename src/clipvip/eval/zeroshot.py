"""Zero-shot tasks of the paper's Appendix A: action recognition by prompted class texts, and multiple choice.

Both are retrieval in disguise, so both reuse ``retrieval_ranks`` (one definition of rank and of ties):
classification top-k accuracy is R@k of "video -> its class text"; multiple-choice accuracy is R@1 of "video -> its
correct candidate" among that video's candidates.

Label lists are read from the formats the data sets ship (see ``read_labels``); class names become prompt text with
``label_to_text`` ("ApplyEyeMakeup" -> "apply eye makeup", "brush_hair" -> "brush hair") and are prompted with each
template in ``templates`` (default: the paper's "a person [label]"); the template embeddings of a class are averaged
and re-normalised (CLIP's prompt ensembling).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from clipvip.eval.embed import embed_texts
from clipvip.eval.metrics import Ties, retrieval_ranks

PAPER_TEMPLATES: tuple[str, ...] = ("a person {}.",)
# a small ensemble for users who want one; the paper reports the single template above
ENSEMBLE_TEMPLATES: tuple[str, ...] = (
    "a person {}.",
    "a video of a person {}.",
    "a video of {}.",
    "a photo of a person {}.",
    "a person is doing {}.",
)
IDENTITY_TEMPLATES: tuple[str, ...] = ("{}",)  # SSv2-as-choice: the templates are full sentences already


def read_labels(path: str | Path) -> list[str]:
    """Class names in class-index order from any of the common label-list formats:

    * one name per line, index = line number (mmaction2 ``*_label_map.txt``: HMDB51 snake_case, UCF101 CamelCase,
      Kinetics-400 plain words);
    * ``<index> <name>`` per line (UCF101 ``classInd.txt``, 1-based) or ``<index>,<name>`` (Kinetics CSV with an
      optional ``id,name`` header); indices are sorted and must be contiguous;
    * JSON: ``{"name": "index"}`` (SSv2 ``something-something-v2-labels.json``), ``{"index": "name"}`` or a list.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: label list not found")
    text = p.read_text(encoding="utf-8-sig")
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}: invalid JSON label list ({e})") from e
        if isinstance(data, list):
            return [str(x) for x in data]
        if not isinstance(data, dict) or not data:
            raise ValueError(f"{p}: expected a JSON list or a non-empty {{name: index}} object")
        if all(_is_int(v) for v in data.values()):
            pairs = [(int(v), str(k)) for k, v in data.items()]
        elif all(_is_int(k) for k in data):
            pairs = [(int(k), str(v)) for k, v in data.items()]
        else:
            raise ValueError(f"{p}: JSON object must map names to integer indices (or indices to names)")
        return _ordered(pairs, p)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"{p}: empty label list")
    if lines[0].lower().replace(" ", "") in ("id,name", "index,name", "label,name", "id,label"):
        lines = lines[1:]
    indexed = [re.match(r"^(\d+)\s*[,\s]\s*(.+)$", ln) for ln in lines]
    if all(indexed):
        return _ordered([(int(m.group(1)), m.group(2).strip()) for m in indexed if m], p)
    return lines


def _is_int(x: object) -> bool:
    try:
        int(str(x))
        return True
    except ValueError:
        return False


def _ordered(pairs: list[tuple[int, str]], path: Path) -> list[str]:
    pairs.sort()
    idx = [i for i, _ in pairs]
    first = idx[0]
    if first not in (0, 1) or idx != list(range(first, first + len(idx))):
        raise ValueError(f"{path}: class indices must be contiguous from 0 or 1, got {idx[:5]}...")
    return [name for _, name in pairs]


def label_to_text(label: str) -> str:
    """Class name -> words for a prompt: snake_case and CamelCase split, brackets dropped, lower case."""
    s = label.replace("_", " ").replace("[", "").replace("]", "")
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", s)
    return re.sub(r"\s+", " ", s).strip().lower()


def class_text_embeddings(
    model: nn.Module,
    class_names: Sequence[str],
    templates: Sequence[str] = PAPER_TEMPLATES,
    *,
    context_length: int | None = None,
    batch_size: int = 256,
    convert: bool = True,
    progress: bool = False,
) -> Tensor:
    """[C, E] L2-normalised class embeddings: mean over ``templates`` of the prompted text embeddings."""
    if not class_names:
        raise ValueError("no class names")
    if not templates or any("{}" not in t for t in templates):
        raise ValueError(f"every template needs a '{{}}' placeholder, got {list(templates)}")
    words = [label_to_text(c) if convert else c for c in class_names]
    prompts = [t.format(w) for w in words for t in templates]
    emb = embed_texts(model, prompts, batch_size, context_length, progress=progress)
    emb = emb.view(len(words), len(templates), -1).mean(dim=1)
    return torch.nn.functional.normalize(emb, dim=-1)


def zero_shot_classify(
    video_emb: Tensor, class_emb: Tensor, labels: Sequence[int] | np.ndarray | Tensor, ties: Ties = "optimistic"
) -> dict[str, float]:
    """{"top1", "top5" (percent), "n"}: rank of each video's true class among all class texts."""
    if len(video_emb) != len(labels):
        raise ValueError(f"{len(video_emb)} videos but {len(labels)} labels")
    ranks = retrieval_ranks(video_emb.float() @ class_emb.float().T, labels, ties=ties)
    return {"top1": float(100 * np.mean(ranks <= 1)), "top5": float(100 * np.mean(ranks <= 5)), "n": len(ranks)}


def multiple_choice_accuracy(
    video_emb: Tensor, candidate_emb: Tensor, answers: Sequence[int] | np.ndarray | Tensor, ties: Ties = "mean"
) -> dict[str, float]:
    """{"accuracy" (percent), "n"}: video i picks the candidate ``candidate_emb[i, k]`` with the highest similarity.

    Ties default to "mean" here, i.e. a tie between the answer and c other candidates earns 1/(c+1) (the expected
    accuracy of a random tie-break), so a degenerate model cannot score by tying everything.
    """
    if candidate_emb.ndim != 3 or candidate_emb.shape[0] != video_emb.shape[0]:
        raise ValueError(f"candidate_emb must be [N, K, E] for N videos, got {tuple(candidate_emb.shape)}")
    scores = torch.einsum("ne,nke->nk", video_emb.float(), candidate_emb.float())
    ranks = retrieval_ranks(scores, answers, ties="optimistic")
    if ties != "optimistic":
        # expected accuracy: 1/(1 + tied wrong candidates) for answers that no candidate beats
        best = scores.numpy()
        ans = np.asarray(answers)
        target = best[np.arange(len(ans)), ans]
        tied = (best == target[:, None]).sum(1)  # includes the answer
        acc = np.where(ranks <= 1, 1.0 / tied if ties == "mean" else (tied == 1).astype(float), 0.0)
    else:
        acc = (ranks <= 1).astype(float)
    return {"accuracy": float(100 * acc.mean()), "n": int(len(acc))}


def multiple_choice(
    model: nn.Module,
    video_emb: Tensor,
    candidates: Sequence[Sequence[str]],
    answers: Sequence[int],
    *,
    context_length: int | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> dict[str, float]:
    """MSR-VTT MC / LSMDC MC / SSv2 with filled placeholders: each video has its own candidate sentences (5 in MC);
    accuracy of picking the answer."""
    k = len(candidates[0]) if candidates else 0
    if not candidates or any(len(c) != k for c in candidates):
        raise ValueError("every video needs the same number of candidate sentences")
    flat = [s for c in candidates for s in c]
    # candidate sets repeat sentences (SSv2's filled templates, shared distractors): embed each distinct one once
    unique = list(dict.fromkeys(flat))
    where = {s: i for i, s in enumerate(unique)}
    text_emb = embed_texts(model, unique, batch_size, context_length, progress=progress)
    idx = torch.tensor([where[s] for s in flat], dtype=torch.long)
    return multiple_choice_accuracy(video_emb, text_emb[idx].view(len(candidates), k, -1), answers)
