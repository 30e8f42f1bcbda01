"""Precision rules shared by the encoders and the losses.

WHY one function: embeddings are re-normalised, and contrastive losses are computed, in at least float32, because
a bf16/fp16 tower normalises to ~3 digits and a softmax over a large batch in half precision loses the small
negatives' gradients. "At least" matters as much as "float32": a float64 model (the reference in the exactness
tests: GradCache, ranks against one process, resume) must stay float64 end to end. Casting it down to float32 made
those tests compare float32 roundings of float64 sums, which agree on one CPU and not on another (issue #15).
"""

from __future__ import annotations

import torch
from torch import Tensor


def at_least_fp32(x: Tensor) -> Tensor:
    """``x`` as float32 when it is a lower-precision (or integer) tensor; float64 stays float64."""
    return x if x.dtype == torch.float64 else x.float()
