"""2 gloo processes (batch 4 each, under DDP) == 1 process with batch 8: same loss, same gradients.

The per-rank step is the trainer's own (``Embedder`` under DDP + ``contrastive_loss``, which gathers with
gradients); the reference is a plain single-process forward/backward of the whole batch of 8.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from support import assert_all_close, run_ranks

import clipvip
from clipvip.distributed import gather_with_grad, init_distributed, is_distributed
from clipvip_apps.train import TrainConfig, contrastive_loss, embed_batch
from clipvip_apps.train.step import Embedder

pytestmark = pytest.mark.numerics  # re-run under other CPU kernels by `make test` (Makefile)

# These tests run the trainer's own float32 model (the dtype users train in), so results agree to float32
# rounding, not bitwise: 2 ranks x 4 samples and 1 process x 8 sum in different orders (and with 1 or 2 threads,
# AVX2 or AVX-512 kernels). The loss is one softmax over 8 rows: ~1e-6 relative. Gradients pass through 2 small
# transformer towers and AdamW's division by sqrt(v), which amplifies relative error where v is tiny: 1e-4.
# The float64 equalities (rtol 1e-10) live in test_gradcache.py.
FP32_RTOL, FP32_GRAD_RTOL, FP32_ATOL = 1e-5, 1e-4, 1e-6


def _batch(n: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    ids = torch.zeros(n, 6, dtype=torch.long)
    ids[:, 0], ids[:, 1], ids[:, 2], ids[:, 3] = 49406, torch.arange(n) + 300, torch.arange(n) % 3 + 500, 49407
    ids2 = ids.clone()
    ids2[:, 1] += 1000
    return {
        "video": torch.randn(n, 4, 3, 32, 32, generator=g),
        "frame": torch.randn(n, 3, 32, 32, generator=g),
        "text": ids,
        "subtitle": ids,
        "caption": ids2,
    }


def _model() -> clipvip.CLIPViP:
    torch.manual_seed(0)
    return clipvip.CLIPViP(clipvip.tiny_config())


def _cfgs() -> list[TrainConfig]:
    return [TrainConfig(stage="finetune"), TrainConfig(stage="pretrain", ocl_objective="d")]


def _slice(batch: dict, lo: int, hi: int) -> dict:
    return {k: v[lo:hi] for k, v in batch.items()}


def _worker(rank: int, world: int, port: int, out_dir: str, threads: int, splits: list[list[int]]) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(threads)
    info = init_distributed("cpu")
    assert info.world_size == world and is_distributed()
    results = []
    for cfg, (lo, hi) in zip(_cfgs(), splits):
        model = _model()
        ddp = torch.nn.parallel.DistributedDataParallel(Embedder(model, cfg))
        embs, scale = ddp(_slice(_batch(), lo, hi))
        loss = contrastive_loss(embs, scale, cfg)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append({"loss": loss.detach(), "grads": grads})
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_gloo_ranks_match_one_process(tmp_path: Path, intra_op_threads: int) -> None:
    # finetune: 4 + 4; pretrain OCL (d): 3 + 5 (unequal ranks, as when collate dropped bad samples).
    splits_per_rank = [[[0, 4], [0, 3]], [[4, 8], [3, 8]]]
    run_ranks(_worker, 2, str(tmp_path), intra_op_threads, per_rank=[(splits_per_rank[r],) for r in range(2)])
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]

    for i, cfg in enumerate(_cfgs()):
        model = _model()
        embs = embed_batch(model, _batch(), cfg.stage, cfg.context_length, cfg.ocl_objective)
        loss = contrastive_loss(embs, model.logit_scale, cfg)
        loss.backward()
        ref = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        for r in range(2):
            got = ranks[r][i]
            torch.testing.assert_close(got["loss"], loss.detach(), rtol=FP32_RTOL, atol=FP32_ATOL)
            assert_all_close(got["grads"], ref, FP32_GRAD_RTOL, FP32_ATOL, f"{cfg.stage} rank {r}")


def test_single_process_is_identity() -> None:
    assert not is_distributed()
    x = torch.randn(3, 4, requires_grad=True)
    assert gather_with_grad(x) is x
    info = init_distributed("cpu")
    assert info.world_size == 1 and info.rank == 0 and info.device.type == "cpu"


class _FixedToy(torch.utils.data.Dataset):
    """Deterministic per index (no global RNG), so ranks and the single process see identical samples."""

    def __len__(self) -> int:
        return 24

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        ids = torch.zeros(6, dtype=torch.long)
        ids[0], ids[1], ids[2] = 49406, 100 + i % 6, 49407
        return {"video": torch.randn(4, 3, 32, 32, generator=g) + i % 6, "text": ids}


def _collate(items: list[dict]) -> dict:
    return {**{k: torch.stack([it[k] for it in items]) for k in items[0]}, "skipped": []}


def _train_cfg(run_dir: str, batch_size: int, grad_cache_chunk: int | None = None) -> TrainConfig:
    return TrainConfig(
        stage="finetune",
        run_dir=run_dir,
        arch="tiny",
        batch_size=batch_size,
        max_steps=3,
        lr=1e-4,
        weight_decay=0.1,
        warmup_steps=1,
        save_every=None,
        log_every=1,
        device="cpu",
        seed=5,
        grad_cache_chunk=grad_cache_chunk,
    )


def _train_worker(rank: int, world: int, port: int, out_dir: str, threads: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(threads)
    from clipvip_apps.train import train

    for chunk in (None, 3):  # DDP, then GradCache (chunks 3 + 1 of each rank's 4; gradients all-reduced by hand)
        res = train(
            _train_cfg(str(Path(out_dir) / f"ddp{chunk}"), 4, chunk),
            train_dataset=_FixedToy(),
            collate_fn=_collate,
            progress=False,
        )
        torch.save(
            {"state": res.model.state_dict(), "losses": [h["loss"] for h in res.history]},
            Path(out_dir) / f"train{rank}_{chunk}.pt",
        )
    torch.distributed.destroy_process_group()


def test_trainer_two_ranks_match_one_process(tmp_path: Path, intra_op_threads: int) -> None:
    """The whole trainer (sampler split, DDP, gathered loss, AdamW, schedule, checkpoint) under 2 gloo ranks x
    batch 4 ends at the weights of 1 process x batch 8 (to float tolerance: reduction order differs); the same with
    GradCache instead of DDP."""
    from clipvip_apps.train import train

    run_ranks(_train_worker, 2, str(tmp_path), intra_op_threads)
    assert (tmp_path / "ddpNone" / "checkpoints" / "last.pt").exists()
    single = train(
        _train_cfg(str(tmp_path / "single"), 8), train_dataset=_FixedToy(), collate_fn=_collate, progress=False
    )
    ref = single.model.state_dict()
    for r, chunk in [(0, None), (1, None), (0, 3), (1, 3)]:
        got = torch.load(tmp_path / f"train{r}_{chunk}.pt", weights_only=True)
        assert got["losses"] == pytest.approx([h["loss"] for h in single.history], rel=FP32_RTOL)
        assert_all_close(got["state"], ref, FP32_GRAD_RTOL, 2e-6, f"rank {r} chunk {chunk}")
