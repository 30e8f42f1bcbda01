"""``clipvip embed``: a resumable, sharded video -> embedding job (inputs, output layout, engines)."""

from clipvip.embedjob.decode import decode_sample
from clipvip.embedjob.inputs import PartSource, Sample, iter_samples, plan_parts
from clipvip.embedjob.job import EmbedConfig, EmbedJob, Encoder, prepare_job
from clipvip.embedjob.layout import EmbeddingFolder, emb_path, metadata_path, read_embed_meta, stats_path

__all__ = [
    "EmbedConfig",
    "EmbedJob",
    "EmbeddingFolder",
    "Encoder",
    "PartSource",
    "Sample",
    "decode_sample",
    "emb_path",
    "iter_samples",
    "metadata_path",
    "plan_parts",
    "prepare_job",
    "read_embed_meta",
    "stats_path",
]
