"""``clipvip encode-video FILE... --model M --out video.npy``: videos (or images) -> L2-normalised embeddings.

Row i of the output is FILE i, and the output says so itself: ``--out x.npy`` writes ``x.paths.txt`` beside it
(line i = the file of row i), ``--out x.npz`` holds ``embeddings`` and ``paths``. A file that cannot be decoded
gets a row of NaN (never a silent zero), is named on stderr, and makes the exit status 1 (2 when nothing could be
read)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from clipvip_apps.commands._inference import add_inference_args, prepare_for_inference


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encode-video", help="encode video/image files to L2-normalised embeddings (.npy)")
    p.add_argument("files", nargs="+", help="video or image files")
    p.add_argument("--model", required=True, help="checkpoint (any format clipvip.load reads)")
    p.add_argument(
        "--out",
        default="video_embeddings.npy",
        help="x.npy (+ x.paths.txt naming each row's file) or x.npz (embeddings + paths)",
    )
    p.add_argument("--num-frames", type=int, default=None, help="frames per video (default: the model's)")
    p.add_argument("--size", type=int, default=None, help="frame size (default: the model's image size)")
    p.add_argument("--resize", choices=["squash", "crop"], default="squash")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds allowed per file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_inference_args(p)
    p.set_defaults(func=run)


def paths_file(out: Path) -> Path:
    """``x.npy`` -> ``x.paths.txt``: the file of each row, one per line."""
    return out.with_name(out.stem + ".paths.txt")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    import clipvip
    from clipvip.io import atomic_path, atomic_save_npy, atomic_write_text
    from clipvip.video import VideoDecodeError, normalize, read_frames

    path = Path(args.out)
    if path.is_dir():  # say so now, not after encoding every file
        raise IsADirectoryError(f"--out {path}: is a folder; give a file name, e.g. {path / 'video_embeddings.npy'}")
    model = prepare_for_inference(clipvip.load(args.model), args)
    num_frames = args.num_frames or model.config.num_frames
    size = args.size or model.config.vision.image_size
    device = next(model.parameters()).device
    rows: list[np.ndarray | None] = [None] * len(args.files)
    failed: list[tuple[str, str]] = []
    batch: list[tuple[int, torch.Tensor]] = []

    def flush() -> None:
        if not batch:
            return
        x = torch.stack([b for _, b in batch]).to(device)
        with torch.inference_mode():
            emb = model.encode_video(x).float().cpu().numpy()
        for (i, _), e in zip(batch, emb):
            rows[i] = e
        batch.clear()

    for i, f in enumerate(tqdm(args.files, desc="videos", unit="file", disable=args.quiet or len(args.files) < 4)):
        try:
            frames = read_frames(f, num_frames=num_frames, size=size, resize=args.resize, timeout=args.timeout).frames
        except VideoDecodeError as e:
            failed.append((f, e.reason))
            print(f"skipped {f}: {e.reason}", file=sys.stderr)
            continue
        if frames.shape[0] != num_frames:  # an image: a 1-frame video, repeated so it batches with videos
            frames = frames.expand(num_frames, -1, -1, -1)
        batch.append((i, normalize(frames)))
        if len(batch) >= args.batch_size:
            flush()
    flush()
    done = [r for r in rows if r is not None]
    if not done:
        print(f"no file could be read ({len(failed)} failed); nothing written", file=sys.stderr)
        return 2
    out = np.full((len(rows), done[0].shape[0]), np.nan, dtype=np.float32)
    for i, r in enumerate(rows):
        if r is not None:
            out[i] = r
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [str(Path(f).resolve()) for f in args.files]
    if path.suffix == ".npz":
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, embeddings=out, paths=np.asarray(names))
        written = f"{path} (embeddings {out.shape} + paths)"
    else:
        ids = paths_file(path)
        atomic_save_npy(path, out)
        atomic_write_text(ids, "".join(n + "\n" for n in names))
        written = f"{path}: {out.shape}; row i is line i of {ids}"
    print(f"wrote {written}" + (f", {len(failed)} file(s) skipped (NaN rows)" if failed else ""))
    return 1 if failed else 0
