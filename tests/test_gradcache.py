"""GradCache against the plain full-batch gradient (the reference: one forward/backward over the whole batch).

Tolerances: the model is float64 end to end (encoders and losses keep float64, ``clipvip.numerics``), so the only
differences are summation order: chunked vs whole-batch matmuls, 1 vs 2 threads, AVX2 vs AVX-512 kernels, gloo's
all-reduce. Those move float64 results by ~1e-15 relative. RTOL = 1e-10 leaves five orders of magnitude for that
and still fails on any float32 step in the gradient path, which costs ~1e-7 (the bug behind issue #15).
"""

import pytest
import torch
from support import assert_all_close, run_ranks

from clipvip import CLIPViP, tiny_config, tokenize
from clipvip.distributed import gather_with_grad, init_distributed
from clipvip.gradcache import GradCache, average_gradients, split_batch
from clipvip.losses import info_nce, ocl_loss

pytestmark = pytest.mark.numerics  # re-run under other CPU kernels by `make test` (Makefile)

B = 6
RTOL, ATOL = 1e-10, 1e-13  # see the module docstring


def _batch():
    video = torch.randn(B, 4, 3, 32, 32, dtype=torch.float64)
    subs = tokenize([f"subtitle number {i} says something" for i in range(B)])
    caps = tokenize([f"a caption of clip {i}" for i in range(B)])
    return video, subs, caps


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _middle_frame(video):
    return video[:, video.shape[1] // 2]


@pytest.mark.parametrize("chunk", [4, 1])
def test_infonce_gradient_equals_full_batch(chunk, intra_op_threads):
    model = CLIPViP(tiny_config("vip")).double()
    video, subs, _ = _batch()

    def loss_fn(e):
        return info_nce(e["video"], e["subtitle"], model.logit_scale)

    full = loss_fn({"video": model.encode_video(video), "subtitle": model.encode_text(subs)})
    full.backward()
    ref = _grads(model)
    model.zero_grad()

    gc = GradCache(chunk_size=chunk)
    loss = gc.step(
        {"video": model.encode_video, "subtitle": model.encode_text}, {"video": video, "subtitle": subs}, loss_fn
    )
    got = _grads(model)
    torch.testing.assert_close(loss, full.detach(), rtol=RTOL, atol=ATOL)
    assert "logit_scale" in got and got["logit_scale"].dtype == torch.float64
    assert_all_close(got, ref, RTOL, ATOL, f"chunk {chunk}")


def test_ocl_d_gradient_equals_full_batch(intra_op_threads):
    """OCL (d): video, middle frame (1-frame video), subtitle and caption streams, chunks of uneven size (4 + 2)."""
    model = CLIPViP(tiny_config("vip")).double()
    video, subs, caps = _batch()
    frames = _middle_frame(video)

    def loss_fn(e):
        return ocl_loss(e["video"], e["frame"], e["subtitle"], e["caption"], model.logit_scale, objective="d")

    full = loss_fn(
        {
            "video": model.encode_video(video),
            "frame": model.encode_image(frames),
            "subtitle": model.encode_text(subs),
            "caption": model.encode_text(caps),
        }
    )
    full.backward()
    ref = _grads(model)
    model.zero_grad()

    encoders = {
        "video": model.encode_video,
        "frame": model.encode_image,
        "subtitle": model.encode_text,
        "caption": model.encode_text,
    }
    inputs = {"video": video, "frame": frames, "subtitle": subs, "caption": caps}
    loss = GradCache(chunk_size=4).step(encoders, inputs, loss_fn)
    torch.testing.assert_close(loss, full.detach(), rtol=RTOL, atol=ATOL)
    assert_all_close(_grads(model), ref, RTOL, ATOL, "OCL (d)")


def test_random_state_is_replayed():
    """Dropout inside the encoder: the re-run replays each chunk's mask, so the gradient equals a full graph built
    with the same per-chunk random draws (without the replay the masks, hence the gradients, would differ)."""
    lin = torch.nn.Linear(8, 8).double()
    x = torch.randn(B, 8, dtype=torch.float64)
    y = torch.nn.functional.normalize(torch.randn(B, 8, dtype=torch.float64), dim=-1)

    def enc(t):
        return torch.nn.functional.normalize(torch.nn.functional.dropout(lin(t), 0.5, training=True), dim=-1)

    def loss_fn(e):
        return info_nce(e["x"], e["y"], torch.tensor(2.0))

    torch.manual_seed(1)
    loss_fn({"x": torch.cat([enc(c) for c in x.split(2)]), "y": y}).backward()
    ref = lin.weight.grad.clone()
    lin.zero_grad()
    torch.manual_seed(1)
    GradCache(chunk_size=2).step({"x": enc, "y": lambda t: t}, {"x": x, "y": y}, loss_fn)
    torch.testing.assert_close(lin.weight.grad, ref, rtol=1e-10, atol=1e-12)


def test_bad_inputs():
    with pytest.raises(ValueError, match="chunk_size"):
        GradCache(chunk_size=0)
    with pytest.raises(ValueError, match="name different streams"):
        GradCache(2).step({"a": lambda t: t}, {"b": torch.zeros(2, 2)}, lambda e: e["a"].sum())
    with pytest.raises(ValueError, match="does not use"):
        GradCache(2).step(
            {"a": lambda t: t, "b": lambda t: t},
            {"a": torch.ones(2, 2), "b": torch.ones(2, 2)},
            lambda e: e["a"].sum(),
        )
    assert [len(c) for c in split_batch(["x"] * 5, 2)] == [2, 2, 1]


def _ddp_worker(rank: int, world: int, port: int, out_dir: str, threads: int) -> None:
    import os

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(threads)
    init_distributed("cpu")
    torch.manual_seed(0)
    model = CLIPViP(tiny_config("vip")).double()
    video, subs, _ = _batch()
    n = B // world
    local_v, local_s = video[rank * n : (rank + 1) * n], subs[rank * n : (rank + 1) * n]

    def loss_fn(e):
        return info_nce(gather_with_grad(e["video"]), gather_with_grad(e["subtitle"]), model.logit_scale)

    loss = GradCache(chunk_size=2).step(
        {"video": model.encode_video, "subtitle": model.encode_text}, {"video": local_v, "subtitle": local_s}, loss_fn
    )
    average_gradients(model.parameters())
    torch.save({"loss": loss, "grads": _grads(model)}, f"{out_dir}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_gloo_ranks_equal_one_process_full_batch(tmp_path, intra_op_threads):
    """2 ranks x 3 samples, GradCache chunks of 2, gather_with_grad in the loss, then average_gradients ==
    one process, plain full-batch backward over all 6 samples."""
    run_ranks(_ddp_worker, 2, str(tmp_path), intra_op_threads)

    torch.manual_seed(0)
    model = CLIPViP(tiny_config("vip")).double()
    video, subs, _ = _batch()
    full = info_nce(model.encode_video(video), model.encode_text(subs), model.logit_scale)
    full.backward()
    ref = _grads(model)
    for r in range(2):
        got = torch.load(tmp_path / f"rank{r}.pt", weights_only=True)
        torch.testing.assert_close(got["loss"], full.detach(), rtol=RTOL, atol=ATOL)
        assert_all_close(got["grads"], ref, RTOL, ATOL, f"rank {r}")
