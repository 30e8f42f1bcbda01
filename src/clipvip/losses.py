"""Contrastive losses of CLIP-ViP (paper Sec. 4.3, Eq. 3-4): InfoNCE, the Omnisource Cross-modal Learning (OCL)
variants, and an optional dual-softmax (DSL) weighted InfoNCE for fine-tuning.

All functions take ALREADY-GATHERED, L2-normalised [B, D] embeddings (``clipvip.distributed.gather_with_grad``), so
the similarity matrix spans the global batch, and the model's log-space ``logit_scale`` (``exp`` is applied here,
after clamping at ln(100) as CLIP does, so the temperature never drops below 0.01).

Every loss is the plain MEAN of its cross-entropy terms, each term weighted equally, as the released code does:

=======  ==============================================  =====
obj.     terms                                           count
=======  ==============================================  =====
vs       V->S, S->V                                      2
a        V->S, S->V, F->C, C->F                          4
b        V->S, S->V, V->C, C->V                          4
c        V->S, S->V, V->C, C->V, F->C, C->F              6
d        V->S|{S,C}, V->C|{S,C} (Eq. 4), S->V, C->V,
         F->C, C->F                                      6
=======  ==============================================  =====

In (d) the video->text direction uses Eq. 4: for video i the positive subtitle s_i competes with every subtitle s_j
AND every other clip's caption c_j (j != i); symmetrically for the positive caption c_i. Its own other text (c_i for
the subtitle term, s_i for the caption term) is a positive too, so it is left out of the denominator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from clipvip.numerics import at_least_fp32

MAX_LOGIT_SCALE = math.log(100.0)

# The embedding streams each OCL objective reads (module table): callers embed exactly these and nothing else.
OCL_STREAMS: dict[str, frozenset[str]] = {
    "vs": frozenset({"video", "subtitle"}),
    "a": frozenset({"video", "subtitle", "frame", "caption"}),
    "b": frozenset({"video", "subtitle", "caption"}),
    "c": frozenset({"video", "subtitle", "frame", "caption"}),
    "d": frozenset({"video", "subtitle", "frame", "caption"}),
}
OCL_OBJECTIVES: tuple[str, ...] = tuple(OCL_STREAMS)


def scale_from_log(logit_scale: Tensor | float) -> Tensor:
    """exp(clamp(logit_scale, max=ln 100)): CLIP's temperature rule. Gradient is zero while clamped."""
    if not isinstance(logit_scale, Tensor):
        logit_scale = torch.tensor(float(logit_scale))
    return at_least_fp32(logit_scale).clamp(max=MAX_LOGIT_SCALE).exp()


def _ce_diag(logits: Tensor) -> Tensor:
    """Cross-entropy of each row against its diagonal column, averaged over rows."""
    target = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, target)


def _check(name: str, x: Tensor | None, ref: Tensor) -> Tensor:
    if x is None:
        raise ValueError(f"this loss needs the {name!r} embeddings, got None")
    if x.shape != ref.shape:
        raise ValueError(f"{name!r} embeddings have shape {tuple(x.shape)}, expected {tuple(ref.shape)}")
    return at_least_fp32(x)


def info_nce_terms(x: Tensor, y: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
    """(L_x2y, L_y2x) of Eq. 3 for paired rows of x [B, D] and y [B, D]; ``scale`` = 1/tau (already exp'ed)."""
    logits = scale * at_least_fp32(x) @ at_least_fp32(y).T
    return _ce_diag(logits), _ce_diag(logits.T)


def info_nce(a: Tensor, b: Tensor, logit_scale: Tensor | float) -> Tensor:
    """Symmetric InfoNCE (the fine-tuning loss): mean of a->b and b->a cross-entropies over the diagonal pairs."""
    _check("b", b, a)
    t1, t2 = info_nce_terms(a, b, scale_from_log(logit_scale).to(a.device))
    return (t1 + t2) / 2


def dsl_info_nce(a: Tensor, b: Tensor, logit_scale: Tensor | float, dsl_temp: float = 1000.0) -> Tensor:
    """Dual-softmax weighted InfoNCE (Cheng et al. 2021, CAMoE's ``DualSoftmaxLoss``), symmetric.

    Each direction's logits are re-weighted by a softmax over the OTHER axis (a prior that a query's match should
    also prefer that query), ``L * softmax(L / dsl_temp, dim=0) * B``, before the row-wise cross-entropy. Use it as
    an optional training loss; at test time ``clipvip.eval.dsl`` is the separate post-processing step."""
    _check("b", b, a)
    logits = scale_from_log(logit_scale).to(a.device) * at_least_fp32(a) @ at_least_fp32(b).T

    def one(lg: Tensor) -> Tensor:
        return _ce_diag(lg * F.softmax(lg / dsl_temp, dim=0) * lg.shape[0])

    return (one(logits) + one(logits.T)) / 2


def _v2t_joint(v: Tensor, s: Tensor, c: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
    """Eq. 4: video->subtitle and video->caption terms, each against all subtitles + all OTHER clips' captions
    (resp. all captions + other clips' subtitles)."""
    B = v.shape[0]
    ls = scale * v @ s.T  # [B, B]
    lc = scale * v @ c.T
    eye = torch.eye(B, dtype=torch.bool, device=v.device)
    neg_inf = torch.finfo(ls.dtype).min
    # Positive in column i of the first block; the other text of the same clip is masked out of the second block.
    sub = torch.cat([ls, lc.masked_fill(eye, neg_inf)], dim=1)
    cap = torch.cat([lc, ls.masked_fill(eye, neg_inf)], dim=1)
    return _ce_diag(sub), _ce_diag(cap)


def ocl_loss(
    video: Tensor,
    frame: Tensor | None,
    subtitle: Tensor,
    caption: Tensor | None,
    logit_scale: Tensor | float,
    objective: str = "d",
) -> Tensor:
    """Omnisource Cross-modal Learning loss (paper Sec. 4.3) on gathered, L2-normalised [B, D] embeddings.

    ``objective`` in {"vs", "a", "b", "c", "d"}: the paper's OCL variants (a)-(d) of Table 3, plus subtitles only
    (see the module table; "objective", because "variant" names the vision tower). ``frame`` (middle-frame
    embedding, the same vision tower on a 1-frame input) and ``caption`` (auxiliary caption) may be None where the
    objective does not use them. Returns the mean of the objective's equally weighted cross-entropy terms.
    """
    if objective not in OCL_OBJECTIVES:
        raise ValueError(f"unknown OCL objective {objective!r}; expected one of {OCL_OBJECTIVES}")
    v = at_least_fp32(video)
    s = _check("subtitle", subtitle, video)
    scale = scale_from_log(logit_scale).to(v.device)
    terms: list[Tensor] = []
    if objective == "d":
        c = _check("caption", caption, video)
        terms.extend(_v2t_joint(v, s, c, scale))
        terms.append(info_nce_terms(v, s, scale)[1])  # S->V
        terms.append(info_nce_terms(v, c, scale)[1])  # C->V
    else:
        terms.extend(info_nce_terms(v, s, scale))
        if objective in ("b", "c"):
            terms.extend(info_nce_terms(v, _check("caption", caption, video), scale))
    if objective in ("a", "c", "d"):
        terms.extend(info_nce_terms(_check("frame", frame, video), _check("caption", caption, video), scale))
    return torch.stack(terms).mean()


@dataclass(frozen=True)
class FinetuneLoss:
    """A fine-tuning loss ``fn(video, text, logit_scale, **options)`` and the names of its options, so a trainer
    passes each loss the config fields it takes without knowing any loss by name."""

    fn: Callable[..., Tensor]
    options: tuple[str, ...] = ()


# Fine-tuning losses keyed by the name a config gives.
FINETUNE_LOSSES: dict[str, FinetuneLoss] = {
    "infonce": FinetuneLoss(info_nce),
    "dsl": FinetuneLoss(dsl_info_nce, ("dsl_temp",)),
}
