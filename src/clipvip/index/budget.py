"""The RAM budget of an on-disk index and the IVF-PQ parameters it buys, chosen the way autofaiss chooses them.

``nlist`` comes from N (about 4 sqrt(N) below 1M, then 16k / 64k / 128k); then the largest PQ code whose index,
``N * (m / 2 + 8) + nlist * d * 4`` bytes (plus list padding), fits the budget, so that the lists a search touches
stay in page cache. The PQ is FAISS's fast-scan PQ: ``m`` sub-quantisers of 4 bits, scanned with SIMD table
lookups. WHY 4-bit fast-scan rather than autofaiss's 8-bit PQ: we re-rank exactly anyway, so at equal bytes the
coarser codes cost no recall after the re-rank, and a scan takes half the time (1M x 512: 0.49x, recall 0.963 for
both; ``benchmarks/bench_scale.py codes``). Half the bytes is 4x faster but lost recall at 10M (0.91), so the budget,
not the speed, picks the code size.
Pure arithmetic, kept apart from the FAISS build (``clipvip.index.ondisk``) so it can be read and tested alone.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

PQ_CHOICES = (256, 128, 64, 48, 32, 24, 16, 8, 4)  # bytes per vector, best first (autofaiss's list); m = 2 * bytes


ID_BYTES = 8  # each inverted-list entry stores an int64 id beside its code

BLOCK = 32  # fast-scan lists hold codes in blocks of 32 vectors; a list's last block is padded


PQ_MIN_VECTORS = 10_000  # below this a PQ cannot be trained well (autofaiss's quantization threshold)


def parse_size(text: str | int) -> int:
    """'4G', '512M', '2.5GB', 1000 -> bytes (powers of 1024)."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kKmMgGtT]?)[bB]?\s*", str(text))
    if not m:
        raise ValueError(f"cannot read memory size {text!r}; use e.g. 4G or 512M")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))


@dataclass
class OnDiskConfig:
    """Budget and search-quality knobs of an on-disk index."""

    max_index_memory: int = 4 << 30  # bytes the index may take in RAM (codes + ids + centroids)
    nlist: int | None = None  # default: from N, as autofaiss
    pq_m: int | None = None  # 4-bit sub-quantisers (code bytes = pq_m / 2); default: the largest that fits
    opq: bool = False  # rotate before PQ (better codes; training costs d^2 per sample and iteration)
    train_per_list: int = 40  # k-means sample = nlist * this (FAISS warns below 39)
    max_train: int = 500_000  # at most this many training vectors
    rerank: tuple[int, ...] = (100, 250, 500, 1000, 2000, 4000)  # re-rank depths tried, cheapest first (each >= 10 * k)
    # Most lists a search may scan; None: max(256, nlist // 8). WHY scaled: on 10M synthetic vectors in 8,192 lists
    # the true top-10 lay in the query's first 256 lists only 85% of the time (96.5% at 1,024), so a fixed 256 capped
    # recall at 0.88 whatever the re-rank depth (benchmarks/bench_scale.py, BENCHMARKS.md).
    max_nprobe: int | None = None
    target_recall: float = 0.97  # recall@10 after re-rank that nprobe is tuned to (margin: tuning queries are a proxy)
    tune_queries: int = 200
    seed: int = 0


@dataclass
class IndexParams:
    nlist: int
    pq_m: int
    opq: bool
    estimated_bytes: int

    @classmethod
    def parse(cls, factory: str, estimated_bytes: int) -> IndexParams:
        """The inverse of ``factory`` (an index's meta file keeps the factory string)."""
        m = re.fullmatch(r"(?:OPQ(\d+),)?IVF(\d+),(?:PQ(\d+)x4fs|Flat)", factory)
        if not m:
            raise ValueError(f"not an on-disk index factory: {factory!r}")
        return cls(int(m.group(2)), int(m.group(3) or 0), m.group(1) is not None, estimated_bytes)

    @property
    def factory(self) -> str:
        if self.pq_m == 0:  # too few vectors to train a PQ: uncompressed (still on-disk) lists
            return f"IVF{self.nlist},Flat"
        return f"{f'OPQ{self.pq_m},' if self.opq else ''}IVF{self.nlist},PQ{self.pq_m}x4fs"


def default_nlist(n: int) -> int:
    """autofaiss's first choice of IVF lists for N vectors, kept trainable (>= 39 points per list)."""
    if n < 1_000_000:
        nlist = 2 ** round(math.log2(4 * math.sqrt(max(n, 1))))
    elif n < 10_000_000:
        nlist = 16_384
    elif n < 300_000_000:
        nlist = 65_536
    else:
        nlist = 131_072
    return int(max(1, min(nlist, n // 39)))


def nprobe_ceiling(nlist: int, cfg: OnDiskConfig) -> int:
    """The most lists the tuner lets a search scan (``OnDiskConfig.max_nprobe``)."""
    return cfg.max_nprobe if cfg.max_nprobe is not None else max(256, nlist // 8)


def estimated_bytes(n: int, d: int, nlist: int, m: int, opq: bool) -> int:
    """RAM of the index if it were loaded whole: codes + ids (with each list's last block padded, at worst),
    centroids, PQ codebooks (16 centroids per sub-quantiser), OPQ matrix (m = 0: fp32 vectors in the lists)."""
    entry = (m // 2 if m else 4 * d) + ID_BYTES
    pad = nlist * (BLOCK - 1) * entry if m else 0
    return n * entry + pad + nlist * d * 4 + (16 * d * 4 if m else 0) + (d * d * 4 if opq else 0)


def choose_params(n: int, d: int, cfg: OnDiskConfig) -> IndexParams:
    """nlist from N; the largest PQ code (bytes per vector) that keeps the index within the budget."""
    nlist = cfg.nlist or default_nlist(n)
    if cfg.pq_m and d % cfg.pq_m:
        raise ValueError(f"a PQ of {cfg.pq_m} sub-quantisers needs a dimension divisible by it; embeddings have {d}")
    if n < PQ_MIN_VECTORS and not cfg.pq_m:
        choices = [0]
    else:
        choices = [cfg.pq_m] if cfg.pq_m else [2 * b for b in PQ_CHOICES if 2 * b <= d and d % (2 * b) == 0]
    for m in choices:
        size = estimated_bytes(n, d, nlist, m, cfg.opq)
        if size <= cfg.max_index_memory:
            return IndexParams(nlist, m, cfg.opq, size)
    need = estimated_bytes(n, d, nlist, choices[-1], cfg.opq)
    raise ValueError(
        f"--max-index-memory {cfg.max_index_memory / 2**30:.2f} GiB is too small for {n} x {d} vectors: "
        f"the smallest index (PQ{choices[-1]}x4fs) needs {need / 2**30:.2f} GiB"
    )
