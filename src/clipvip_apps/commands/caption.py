"""``clipvip caption INPUT... --captioner PATH --out captions.jsonl``: auxiliary captions (paper Sec. 4.1).

Captions the middle frame of every clip with a transformers image-to-text model, at most 16 words. Resumable:
rerun the same command after a crash and only missing clips are captioned. Scale out with torchrun, e.g.
``torchrun --nproc-per-node 8 -m clipvip_apps.cli caption shards/{00000..09999}.tar --captioner blip --out c.jsonl``
(every rank writes ``c.jsonl.parts/part-RRRRR-of-WWWWW.jsonl``; the last rank to finish merges them into ``c.jsonl``;
on several machines the output folder must be shared, or run ``--merge-only`` once the parts are gathered).
"""

from __future__ import annotations

import argparse
import json
import os


def register(sub: argparse._SubParsersAction) -> None:
    from clipvip.distributed import default_num_workers

    p = sub.add_parser(
        "caption",
        help="caption the middle frame of every clip with an image captioner (auxiliary captions, paper Sec. 4.1)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="MANIFEST_OR_SHARDS",
        help="jsonl/parquet manifest(s) with clip_id + video path, or WebDataset .tar shards "
        "(files, folders, globs or shard-{00000..00099}.tar)",
    )
    p.add_argument("--out", required=True, help="output jsonl: {clip_id, caption, captioner} per line")
    p.add_argument(
        "--captioner", help="transformers image-to-text model folder or hub name (required unless --merge-only)"
    )
    p.add_argument("--captioner-name", default=None, help="value of the 'captioner' field (default: --captioner)")
    g = p.add_argument_group("generation")
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--num-beams", type=int, default=1, help="1 = greedy (default), >1 = beam search")
    g.add_argument("--max-new-tokens", type=int, default=30)
    g.add_argument("--max-words", type=int, default=16, help="truncate captions to this many words (paper: 16)")
    g.add_argument("--prompt", default=None, help="conditional-captioning prefix, e.g. 'a picture of' (BLIP)")
    g.add_argument("--keep-prompt", action="store_true", help="keep an echoed prompt in the caption")
    g.add_argument(
        "--dtype",
        choices=["auto", "fp32", "bf16", "fp16"],
        default="auto",
        help="auto: bf16 (or fp16) on GPU, fp32 on CPU",
    )
    g.add_argument("--device", default=None, help="default: cuda:LOCAL_RANK if available, else cpu")
    g.add_argument(
        "--frame-size",
        type=int,
        default=None,
        help="side the middle frame is read at (squash resize); default: the captioner's input size",
    )
    d = p.add_argument_group("data")
    d.add_argument("--id-key", default="clip_id", help="clip id field of manifest rows / shard json")
    d.add_argument(
        "--video-key",
        default=None,
        help="manifest column with the video path (default: 'video', else 'path', else CLIP_ID.mp4)",
    )
    d.add_argument("--video-root", default=".", help="root for relative video paths (as the pretraining data set)")
    d.add_argument("--video-template", default=None, help="video path from row fields, e.g. '{root}/{clip_id}.mp4'")
    d.add_argument(
        "--num-workers",
        type=int,
        default=default_num_workers(),
        help="DataLoader workers decoding frames (default: the CPUs available, minus one: %(default)s here)",
    )
    j = p.add_argument_group("job")
    j.add_argument("--rank", type=int, default=None, help="default: $RANK (torchrun) or 0")
    j.add_argument("--world-size", type=int, default=None, help="default: $WORLD_SIZE (torchrun) or 1")
    j.add_argument("--limit", type=int, default=None, help="stop after this many new captions on this rank")
    j.add_argument("--retry-failed", action="store_true", help="retry clips a previous run listed as failed")
    j.add_argument("--no-merge", action="store_true", help="leave the per-rank parts unmerged")
    j.add_argument("--merge-only", action="store_true", help="only merge existing parts into --out")
    p.set_defaults(func=run, on_interrupt="rerun the same command to resume (finished captions are kept)")


def run(args: argparse.Namespace) -> int:
    from clipvip.captioning import (
        Captioner,
        CaptionerConfig,
        CaptionInput,
        CaptionJobConfig,
        ManifestOptions,
        merge_parts,
        run_captioning,
    )

    if args.merge_only:
        m = merge_parts(args.out)
        print(
            f"merged {m.captions} captions into {m.out} ({m.duplicates} duplicates dropped, "
            f"{m.failed} failed clips listed in {m.failed_out})"
        )
        return 0
    if not args.captioner:
        raise ValueError("--captioner is required (a transformers image-to-text model folder or name)")
    inputs = CaptionInput.resolve(
        args.inputs,
        ManifestOptions(
            id_key=args.id_key,
            video_key=args.video_key,
            video_root=args.video_root,
            video_template=args.video_template,
        ),
    )
    captioner = Captioner(
        CaptionerConfig(
            path=args.captioner,
            name=args.captioner_name,
            device=args.device,
            dtype=args.dtype,
            num_beams=args.num_beams,
            max_new_tokens=args.max_new_tokens,
            max_words=args.max_words,
            prompt=args.prompt,
            keep_prompt=args.keep_prompt,
        )
    )
    report = run_captioning(
        inputs,
        args.out,
        captioner,
        CaptionJobConfig(
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            rank=args.rank,
            world_size=args.world_size,
            frame_size=args.frame_size,
            limit=args.limit,
            retry_failed=args.retry_failed,
            merge=not args.no_merge,
        ),
    )
    who = f"rank {report.rank}/{report.world_size}"
    where = f" -> {report.part}" if os.path.exists(report.part) else ""
    print(f"{who}: captioned {report.captioned} clips ({report.already_done} already done){where}")
    if report.num_failed:
        listed = report.merge.failed_out if report.merge else report.part.replace("part-", "failed-")
        print(f"{who}: skipped {report.num_failed} bad videos (listed in {listed}):")
        for rec in report.failed[:20]:
            print("  " + json.dumps(rec, ensure_ascii=False))
        if report.num_failed > 20:
            print(f"  ... and {report.num_failed - 20} more")
    if not report.finished:
        print(f"{who}: stopped at --limit {args.limit}; rerun the same command to continue")
    elif report.merge is not None:
        m = report.merge
        print(
            f"merged {m.captions} captions into {m.out}"
            + (f"; {m.failed} failed clips listed in {m.failed_out}" if m.failed else "")
        )
    elif not args.no_merge:
        print(f"{who}: done; the last rank to finish merges the parts into {args.out}")
    return 0
