"""The demo's seeds in worker processes: seeds are independent given the image-text CLIP, so each seed's Table 2 and
Tables 3-4 parts run as separate units in ``cfg.workers`` spawned processes of ``cfg.threads`` torch threads. Two
1-thread processes use 2 cores better than one 2-thread process (OpenMP threads spin while their partner waits).
"""

from __future__ import annotations

import dataclasses
import logging
import resource
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from clipvip.io import atomic_write_json
from clipvip.synth import plan_world
from clipvip_apps.demo.config import DemoConfig

log = logging.getLogger(__name__)


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and its finished children: the load-independent cost."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _seed_worker(cfg: DemoConfig, seed: int, part: str, out: str, clip_dir: str) -> dict[str, Any]:
    """One part of one seed in its own process: the world the parent wrote is re-planned (read only: workers
    must not rewrite its manifests concurrently), its clips decoded again."""
    from clipvip_apps.demo.pipeline import build_data, run_seed  # the worker runs the pipeline's own seed code

    torch.set_num_threads(cfg.threads)
    world = plan_world(cfg.world, Path(out) / "world")
    quiet = dataclasses.replace(cfg, progress=False)
    # decode only this part's clips: no still images (the CLIP stage ran in the parent), and no post-pretraining
    # clips for Table 2 (all of it is ~5,000 files: 11 s in the parent on a quiet machine)
    needed = quiet if part == "table34" else dataclasses.replace(quiet, pretrain_settings=())
    data = build_data(needed, world, with_images=False)
    return run_seed(quiet, data, seed, Path(out) / "runs" / f"seed{seed}", clip_dir, (part,))


def _merge_parts(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One seed's result from its parts (each a ``run_seed`` dict of the same seed)."""
    merged: dict[str, Any] = {"seed": results[0]["seed"]}
    for key in ("table2", "table34", "curves", "models", "seconds"):
        merged[key] = {k: v for r in results for k, v in r[key].items()}
    return merged


def run_seeds_in_workers(
    cfg: DemoConfig,
    todo: list[int],
    out: Path,
    clip: dict[str, Any],
    partial_path: Path,
    done: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Seeds are independent given the CLIP: run them, Table 2 and Tables 3-4 of a seed as separate units, in
    ``cfg.workers`` processes (``cfg.threads`` torch threads each). Finished seeds are written to the partial
    results in seed order as soon as the ones before them are."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    units = [(s, "table34") for s in todo] + [(s, "table2") for s in todo if s < cfg.table2_seeds]
    needed = {s: sum(1 for u in units if u[0] == s) for s in todo}
    parts: dict[int, list[dict[str, Any]]] = {s: [] for s in todo}
    new: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=cfg.workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_seed_worker, cfg, s, part, str(out), clip["dir"]): s for s, part in units}
        failed: list[BaseException] = []
        for fut in tqdm(as_completed(futures), total=len(futures), desc="seed parts", disable=not cfg.progress):
            try:
                parts[futures[fut]].append(fut.result())
            except Exception as e:  # keep the other units' work; report after all of them ran
                log.error("seed %d: a part failed: %s", futures[fut], e)
                failed.append(e)
                continue
            while len(new) < len(todo) and len(parts[todo[len(new)]]) == needed[todo[len(new)]]:
                new.append(_merge_parts(parts[todo[len(new)]]))
            atomic_write_json(partial_path, {"config": cfg.to_dict(), "clip": clip, "seeds": done + new}, default=str)
    if failed:
        raise RuntimeError(f"{len(failed)} seed part(s) failed (finished seeds kept in {partial_path}): {failed[0]}")
    return new
