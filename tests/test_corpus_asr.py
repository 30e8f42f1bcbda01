"""``clipvip corpus --asr``: faster-whisper plumbing with a tiny RANDOM Whisper built and converted here.

No Whisper weights can be downloaded, so this checks the plumbing only (audio decoding, CTranslate2 conversion,
word timestamps -> cues with confidences -> clips -> shards); ASR quality is not measured. The speech is made
with espeak-ng when it is installed (``apt-get install espeak-ng``), else the test is skipped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faster_whisper", reason="the asr extra (faster-whisper) is not installed")
ctranslate2 = pytest.importorskip("ctranslate2")

SPECIALS = [
    "<|endoftext|>", "<|startoftranscript|>", "<|translate|>", "<|transcribe|>", "<|startoflm|>",
    "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>",
]  # fmt: skip


def _tiny_whisper(folder: Path) -> Path:
    """An English-only Whisper (byte-level BPE over the 256 bytes, Whisper's special and 1501 timestamp tokens),
    randomly initialised, then steered to always say the byte "a" (so the decoder emits text, not just EOT), and
    converted to CTranslate2 with the converter faster-whisper documents."""
    import torch
    from ctranslate2.converters import TransformersConverter
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, WhisperConfig, WhisperForConditionalGeneration

    byte_vocab = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(byte_vocab))}
    for t in SPECIALS + [f"<|{i * 0.02:.2f}|>" for i in range(1501)]:
        vocab[t] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    hf_dir = folder / "hf"
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, eos_token="<|endoftext|>", bos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    tok.add_special_tokens({"additional_special_tokens": SPECIALS[1:]})
    eot, sot = vocab["<|endoftext|>"], vocab["<|startoftranscript|>"]
    cfg = WhisperConfig(
        vocab_size=len(vocab), num_mel_bins=80, d_model=32, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_source_positions=1500, max_target_positions=448, pad_token_id=eot, bos_token_id=eot, eos_token_id=eot,
        decoder_start_token_id=sot, suppress_tokens=[], begin_suppress_tokens=[],
    )  # fmt: skip
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(cfg)
    with torch.no_grad():  # constant decoder output b; logits = E @ b: the token "a" wins with a wide margin
        ln = model.model.decoder.layer_norm
        ln.weight.zero_()
        ln.bias.copy_(torch.randn(32))
        emb = model.model.decoder.embed_tokens.weight
        emb.mul_(0.01)
        emb[vocab["a"]] = ln.bias * 2.0
    gc = model.generation_config
    gc.suppress_tokens, gc.begin_suppress_tokens, gc.alignment_heads = [], [], [[0, 0], [0, 1]]
    gc.no_timestamps_token_id, gc.is_multilingual = vocab["<|notimestamps|>"], False
    model.save_pretrained(hf_dir)
    tok.save_pretrained(hf_dir)
    (hf_dir / "preprocessor_config.json").write_text(
        json.dumps({"feature_size": 80, "sampling_rate": 16000, "hop_length": 160, "chunk_length": 30, "n_fft": 400})
    )
    out = folder / "ct2"
    TransformersConverter(str(hf_dir), copy_files=["tokenizer.json", "preprocessor_config.json"]).convert(str(out))
    return out


def _speaking_video(tmp: Path, text: str) -> Path:
    """espeak-ng speech as the AAC track of a small H.264 video as long as the speech."""
    import av

    wav = tmp / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
    with av.open(str(wav)) as c:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
        rate = c.streams.audio[0].rate
    seconds = len(audio) / rate
    out = tmp / "talk.mp4"
    with av.open(str(out), "w") as o:
        vs = o.add_stream("libx264", rate=10)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        a_s = o.add_stream("aac", rate=rate)
        a_s.layout = "mono"
        for i in range(int(seconds * 10) + 1):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), (i * 7) % 255, np.uint8), format="rgb24")
            for p in vs.encode(frame):
                o.mux(p)
        for p in vs.encode():
            o.mux(p)
        pcm = audio.astype(np.int16) if audio.dtype != np.int16 else audio
        step = 1024
        for k in range(0, len(pcm), step):
            af = av.AudioFrame.from_ndarray(pcm[None, k : k + step], format="s16", layout="mono")
            af.sample_rate, af.pts, af.time_base = rate, k, Fraction(1, rate)
            for p in a_s.encode(af):
                o.mux(p)
        for p in a_s.encode():
            o.mux(p)
    return out


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)")
def test_asr_plumbing_with_a_tiny_random_whisper(tmp_path: Path, capsys) -> None:
    from clipvip.corpus.asr import ASRConfig, Transcriber
    from clipvip_apps.cli import main as cli_main

    try:
        model = _tiny_whisper(tmp_path / "whisper")
    except (OSError, ValueError, RuntimeError) as e:  # e.g. a converter that needs the Hub for this config
        pytest.skip(f"cannot build / convert a tiny Whisper offline here: {e}")
    video = _speaking_video(tmp_path, "Hello. This is a test of speech recognition for the corpus builder.")

    cues = Transcriber(ASRConfig(str(model), language=None, beam_size=1)).transcribe(video)
    assert cues, "the steered model should emit text"
    assert all(0 <= c.start <= c.end and 0.0 <= c.confidence <= 1.0 and set(c.text) <= {"a"} for c in cues)

    out = tmp_path / "corpus"
    rc = cli_main(["corpus", str(video), "--out", str(out), "--asr", str(model), "--clip-seconds", "0.5:60"])
    assert rc == 0, capsys.readouterr()
    with tarfile.open(out / "shard-00000.tar") as tf:
        metas = [json.loads(tf.extractfile(m).read()) for m in tf.getmembers() if m.name.endswith(".json")]
    assert metas and all(m["subtitle_source"] == "asr" and 0 < m["asr_confidence"] <= 1 for m in metas)


def test_missing_audio_is_named(tmp_path: Path) -> None:
    from clipvip.corpus.asr import ASRError, Transcriber
    from clipvip.video import write_video

    video = write_video(tmp_path / "silent.mp4", np.zeros((4, 16, 16, 3), np.uint8))
    t = Transcriber.__new__(Transcriber)  # decoding fails before the model is used
    with pytest.raises(ASRError, match="silent.mp4"):
        t.transcribe(video)
