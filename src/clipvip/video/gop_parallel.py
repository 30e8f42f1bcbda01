"""GOP-parallel decoding: when the wanted frames span several keyframe intervals, runs of whole GOPs decode
concurrently, each by its own container and decoder.

FFmpeg decodes with the GIL released, and frame threading alone parallelises a chain of P-frames poorly. Each run
is the same sequential :func:`decode_by_pts`, so the frames are bit-identical to ``threads=1``, which never
starts a thread (the setting for DataLoader workers).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable

import numpy as np

from clipvip.distributed import available_cpus
from clipvip.video.backend import Cancelled, Deadline
from clipvip.video.decode import decode_by_pts
from clipvip.video.keyframes import key_before
from clipvip.video.pyav_stream import Convert, Opened, setup_decoder

# decode work (in frames) that opening one more container costs: a GOP worker must save more than this
OPEN_COST_FRAMES = 12


def parallel_workers(threads: int | None) -> int:
    """How many GOP runs may decode at once: ``threads`` if given, else the CPUs this process may use (max 4)."""
    if threads is not None:
        return max(threads, 1)
    return max(1, min(available_cpus(), 4))


def plan_chunks(targets: list[int], keys: list[int], all_pts: list[int], workers: int) -> list[list[int]]:
    """Split the sorted target pts into at most ``workers`` runs of whole keyframe intervals (GOPs), balancing
    the decode work of each run (frames from the GOP's keyframe to its last target: what a sequential decode
    that seeks between GOPs would decode). One run (sequential decoding) unless splitting lowers the largest
    run's work by more than the cost of opening the extra containers."""
    groups: list[list[int]] = []
    costs: list[int] = []
    last_key = None
    for t in targets:
        key = key_before(keys, t)
        if key != last_key:
            groups.append([])
            costs.append(0)
            last_key = key
        groups[-1].append(t)
        costs[-1] = max(1, bisect.bisect_left(all_pts, t) - bisect.bisect_left(all_pts, key) + 1)
    g = len(groups)
    workers = min(workers, g)
    total = sum(costs)
    if workers < 2:
        return [targets]
    prefix = [0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    # best[k][i]: smallest possible largest run when groups[:i] form k runs (g and workers are small)
    inf = float("inf")
    best = [[inf] * (g + 1) for _ in range(workers + 1)]
    cut = [[0] * (g + 1) for _ in range(workers + 1)]
    best[0][0] = 0
    for k in range(1, workers + 1):
        for i in range(1, g + 1):
            for j in range(k - 1, i):
                v = max(best[k - 1][j], prefix[i] - prefix[j] + OPEN_COST_FRAMES)
                if v < best[k][i]:
                    best[k][i], cut[k][i] = v, j
    k = min(range(1, workers + 1), key=lambda k: (best[k][g], k))
    if k < 2 or best[k][g] >= total:
        return [targets]
    bounds = []
    i = g
    for kk in range(k, 0, -1):
        bounds.append((cut[kk][i], i))
        i = cut[kk][i]
    return [[t for grp in groups[a:b] for t in grp] for a, b in reversed(bounds)]


def decode_parallel(
    chunks: list[list[int]],
    opener: Callable[[int | None], Opened],
    keys: list[int],
    deadline: Deadline,
    make_convert: Callable[[], Convert],
    opened: Opened | None,
    decoder_threads: int | None,
) -> dict[int, np.ndarray]:
    """Decode runs of GOPs concurrently, one container + decoder per run (PyAV releases the GIL while
    FFmpeg decodes and scales), the first run on this thread. Each run is the sequential ``decode_by_pts``,
    so seeking checks and fallbacks are unchanged; the first failure (in run order) is raised after every
    worker has stopped (a failure cancels the others at their next packet)."""
    cancel = threading.Event()
    results: list[dict[int, np.ndarray] | None] = [None] * len(chunks)
    errors: list[BaseException | None] = [None] * len(chunks)

    def run(i: int, pre: Opened | None) -> None:
        try:
            results[i] = decode_by_pts(
                lambda: opener(decoder_threads), chunks[i], keys, deadline.sharing(cancel), make_convert(),
                allow_seek=True, opened=pre,
            )  # fmt: skip
        except BaseException as e:  # noqa: BLE001  (re-raised on the calling thread below)
            errors[i] = e
            cancel.set()

    if opened is not None:
        setup_decoder(opened[1], decoder_threads)
    workers = [threading.Thread(target=run, args=(i, None), daemon=True) for i in range(1, len(chunks))]
    for w in workers:
        w.start()
    try:
        run(0, opened)
    finally:
        for w in workers:
            w.join()
    real = [e for e in errors if e is not None and not isinstance(e, Cancelled)]
    if real:
        raise real[0]
    out: dict[int, np.ndarray] = {}
    for r in results:
        assert r is not None
        out.update(r)
    return out
