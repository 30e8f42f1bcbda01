"""Checkpoint loading against real libraries: open_clip (state dict + TorchScript), transformers CLIPModel folders,
and the official CLIP-ViP release layout (HF names under ``clipmodel.`` + proxies + temporal table)."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import clipvip
from clipvip import CheckpointError
from clipvip.tokenizer import tokenize

pytestmark = pytest.mark.numerics  # re-run under other CPU kernels by `make test` (Makefile)

open_clip = pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")

TEXTS = ["a small red circle moves left", "a dog catches a frisbee", "x"]


def _open_clip_model(quick_gelu: bool = True, text_layers: int = 2):
    torch.manual_seed(0)
    vision = open_clip.CLIPVisionCfg(layers=2, width=128, head_width=64, patch_size=8, image_size=32)
    text = open_clip.CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=text_layers)
    return open_clip.model.CLIP(embed_dim=64, vision_cfg=vision, text_cfg=text, quick_gelu=quick_gelu).eval()


@pytest.fixture(scope="module")
def oc_model():
    return _open_clip_model()


@pytest.fixture(scope="module")
def oc_file(oc_model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("oc") / "openclip.pt"
    torch.save(oc_model.state_dict(), path)
    return path


def _images(n=2):
    return torch.randn(n, 3, 32, 32)


def test_open_clip_state_dict_meanpool_equals_open_clip(oc_model, oc_file):
    model = clipvip.load(oc_file, variant="meanpool")
    img = _images()
    ids = tokenize(TEXTS)
    with torch.no_grad():
        torch.testing.assert_close(
            model.encode_image(img), F.normalize(oc_model.encode_image(img), dim=-1), rtol=1e-5, atol=1e-5
        )
        torch.testing.assert_close(
            model.encode_text(ids), F.normalize(oc_model.encode_text(ids), dim=-1), rtol=1e-5, atol=1e-5
        )
        video = torch.randn(2, 3, 3, 32, 32)
        frames = torch.stack([F.normalize(oc_model.encode_image(video[:, t]), dim=-1) for t in range(3)], 1)
        torch.testing.assert_close(model.encode_video(video), F.normalize(frames.mean(1), dim=-1), rtol=1e-5, atol=1e-5)
    assert model.logit_scale.item() == pytest.approx(oc_model.logit_scale.item())


def test_gelu_open_clip_needs_act(tmp_path):
    oc = _open_clip_model(quick_gelu=False)
    torch.save(oc.state_dict(), tmp_path / "m.pt")
    model = clipvip.load(tmp_path / "m.pt", variant="meanpool", act="gelu")
    img = _images()
    with torch.no_grad():
        torch.testing.assert_close(
            model.encode_image(img), F.normalize(oc.encode_image(img), dim=-1), rtol=1e-5, atol=1e-5
        )


def test_openai_torchscript_archive(oc_model, tmp_path):
    traced = torch.jit.trace(oc_model, (_images(1), tokenize(["a"])), check_trace=False)
    path = tmp_path / "ViT-tiny.pt"
    torch.jit.save(traced, str(path))
    model = clipvip.load(path, variant="meanpool")
    img = _images()
    with torch.no_grad():
        torch.testing.assert_close(
            model.encode_image(img), F.normalize(oc_model.encode_image(img), dim=-1), rtol=1e-5, atol=1e-5
        )


def test_seqtransf_init_matches_clip4clip(tmp_path):
    """CLIP4Clip seqTransf: frame features + frame positions -> text blocks 0..L-1 (no mask) -> + residual ->
    normalise, mean, normalise; initialised from the text tower's first blocks and positions."""
    oc_model = _open_clip_model(text_layers=5)
    torch.save(oc_model.state_dict(), tmp_path / "oc5.pt")
    model = clipvip.load(tmp_path / "oc5.pt", variant="seqtransf")
    layers = model.config.seq_layers
    video = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        feats = torch.stack([oc_model.encode_image(video[:, t]) for t in range(3)], 1)  # [B, T, E]
        h = feats + oc_model.positional_embedding[:3]
        for blk in oc_model.transformer.resblocks[:layers]:
            h = blk(h)
        ref = F.normalize(F.normalize(h + feats, dim=-1).mean(1), dim=-1)
        torch.testing.assert_close(model.encode_video(video), ref, rtol=1e-5, atol=1e-5)


def test_plain_clip_into_vip(oc_model, oc_file):
    model = clipvip.load(oc_file, num_frames=8)
    assert model.config.variant == "vip" and model.config.temporal_size == 8
    vis = model.visual
    assert torch.equal(vis.added_proxies, vis.class_embedding[None].expand(3, -1))
    assert torch.count_nonzero(vis.temporal_embedding) == 0
    assert model.encode_video(torch.randn(1, 8, 3, 32, 32)).shape == (1, 64)


def _hf_model():
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=49408,
            hidden_size=64,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=1,
            max_position_embeddings=77,
            eos_token_id=49407,
            bos_token_id=49406,
            hidden_act="quick_gelu",
        ),
        vision_config=dict(
            hidden_size=128,
            intermediate_size=512,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
            hidden_act="quick_gelu",
        ),
        projection_dim=64,
    )
    return CLIPModel(cfg).eval()


@pytest.mark.parametrize("safe", [True, False])
def test_hf_clip_folder(tmp_path, safe):
    hf = _hf_model()
    hf.save_pretrained(tmp_path, safe_serialization=safe) if not safe else hf.save_pretrained(tmp_path)
    if not safe and not (tmp_path / "pytorch_model.bin").exists():  # newer transformers always write safetensors
        sd = hf.state_dict()
        (tmp_path / "model.safetensors").unlink()
        torch.save(sd, tmp_path / "pytorch_model.bin")
    model = clipvip.load(tmp_path, variant="meanpool")
    img, ids = _images(), tokenize(TEXTS)
    with torch.no_grad():
        ref_img = hf.get_image_features(pixel_values=img)
        ref_txt = hf.get_text_features(input_ids=ids)
        ref_img = getattr(ref_img, "pooler_output", ref_img)
        ref_txt = getattr(ref_txt, "pooler_output", ref_txt)
        torch.testing.assert_close(model.encode_image(img), F.normalize(ref_img, dim=-1), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.encode_text(ids), F.normalize(ref_txt, dim=-1), rtol=1e-5, atol=1e-5)


def _official_checkpoint(hf, M=4, T0=12, fp16=True):
    sd = {f"clipmodel.{k}": v for k, v in hf.state_dict().items()}
    W = hf.config.vision_config.hidden_size
    sd["clipmodel.vision_model.embeddings.added_cls"] = torch.randn(M - 1, W)
    sd["clipmodel.vision_model.embeddings.temporal_embedding"] = torch.randn(1, T0, W) * 0.1
    sd["clipmodel.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    sd["clipmodel.vision_model.embeddings.position_ids"] = torch.arange(17)[None]
    if fp16:
        sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    return sd


def _hf_vip_reference(hf, sd, video):
    """ViP forward written on top of transformers' own CLIP encoder with a dense additive Eq. 2 mask."""
    vm = hf.vision_model
    emb = vm.embeddings
    B, T = video.shape[:2]
    W = hf.config.vision_config.hidden_size
    added = sd["clipmodel.vision_model.embeddings.added_cls"].float()
    temporal = sd["clipmodel.vision_model.embeddings.temporal_embedding"].float()  # [1, T0, W]
    if T != temporal.shape[1]:
        temporal = F.interpolate(temporal.transpose(1, 2), size=T, mode="linear", align_corners=False).transpose(1, 2)
    patches = emb.patch_embedding(video.flatten(0, 1)).flatten(2).transpose(1, 2)  # [B*T, N, W]
    N = patches.shape[1]
    pos = emb.position_embedding.weight
    patches = patches.reshape(B, T, N, W) + pos[1:] + temporal[0][:, None]
    proxies = torch.cat([emb.class_embedding[None], added]) + pos[0]
    M = proxies.shape[0]
    h = torch.cat([proxies.expand(B, M, W), patches.reshape(B, T * N, W)], 1)
    frame = torch.tensor([-1] * M + [t for t in range(T) for _ in range(N)])
    allowed = (frame[:, None] < 0) | (frame[None] < 0) | (frame[:, None] == frame[None])
    mask = torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))[None, None].expand(B, 1, -1, -1)
    h = vm.encoder(inputs_embeds=vm.pre_layrnorm(h), attention_mask=mask).last_hidden_state
    return F.normalize(hf.visual_projection(vm.post_layernorm(h[:, 0])), dim=-1)


@pytest.mark.parametrize("T", [12, 6, 1])
def test_official_clipvip_release(tmp_path, T):
    hf = _hf_model().float()
    hf.config._attn_implementation = "eager"
    sd = _official_checkpoint(hf)
    hf.load_state_dict(
        {
            k[len("clipmodel.") :]: v.float()
            for k, v in sd.items()
            if not k.endswith(("added_cls", "temporal_embedding"))
        },
        strict=False,
    )
    torch.save(sd, tmp_path / "pretrain_clipvip_base_32.pt")
    model = clipvip.load(tmp_path / "pretrain_clipvip_base_32.pt")
    assert model.config.variant == "vip" and model.config.num_proxies == 4 and model.config.temporal_size == 12
    video = torch.randn(2, T, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_video(video), _hf_vip_reference(hf, sd, video), rtol=1e-4, atol=1e-5)


def test_roundtrip_and_cli_convert(oc_file, tmp_path):
    from clipvip_apps.cli import main

    assert main(["convert", str(oc_file), str(tmp_path / "conv"), "--num-frames", "6"]) == 0
    a = clipvip.load(oc_file, num_frames=6)
    b = clipvip.load(tmp_path / "conv")
    assert b.config == a.config
    video, ids = torch.randn(2, 6, 3, 32, 32), tokenize(TEXTS)
    with torch.no_grad():
        assert torch.equal(a.encode_video(video), b.encode_video(video))
        assert torch.equal(a.encode_text(ids), b.encode_text(ids))
    b.save_pretrained(tmp_path / "again")
    c = clipvip.load(tmp_path / "again", variant="fullattn")
    assert c.config.variant == "fullattn"


def test_strict_errors_name_the_keys(oc_model, tmp_path):
    sd = dict(oc_model.state_dict())
    sd.pop("visual.ln_post.weight")
    sd["visual.extra_thing"] = torch.zeros(3)
    sd["ln_final.bias"] = torch.zeros(7)
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as e:
        clipvip.load(path, variant="meanpool")
    msg = str(e.value)
    assert "bad.pt" in msg and "visual.ln_post.weight" in msg and "visual.extra_thing" in msg
    assert "text.ln_final.bias" in msg and "(7,)" in msg


def test_refuses_pickled_objects_and_garbage(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"state_dict": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"evil\.pt: holds pickled Python objects") as e:
        clipvip.load(tmp_path / "evil.pt")
    assert "weights_only" not in str(e.value) and "\n" not in str(e.value)  # never advise unsafe loading
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pt: not a weights file"):
        clipvip.load(tmp_path / "junk.pt")
    torch.save({"foo": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="unrecognised"):
        clipvip.load(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        clipvip.load(tmp_path / "missing.pt")


@pytest.mark.parametrize("drop", ["added_cls", "temporal_embedding"])
def test_partial_official_release_is_refused(tmp_path, drop):
    """Some ViP keys but not others: a broken file, refused with its name and the missing key (issue #15), never
    loaded as plain CLIP with fresh proxies nor a bare KeyError."""
    sd = _official_checkpoint(_hf_model())
    sd.pop(f"clipmodel.vision_model.embeddings.{drop}")
    torch.save(sd, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError) as e:
        clipvip.load(tmp_path / "partial.pt")
    msg = str(e.value)
    assert "partial.pt" in msg and f"missing clipmodel.vision_model.embeddings.{drop}" in msg


def test_partial_vip_state_dict_in_our_layout_is_refused(oc_model, tmp_path):
    model = clipvip.load(_save(oc_model, tmp_path), num_frames=4)
    sd = {k: v for k, v in model.state_dict().items() if k != "visual.added_proxies"}
    from clipvip.weights.convert import adapt_to_variant

    with pytest.raises(CheckpointError, match="visual.added_proxies"):
        adapt_to_variant(sd, model.config)


def _save(oc_model, tmp_path) -> Path:
    path = tmp_path / "oc.pt"
    torch.save(oc_model.state_dict(), path)
    return path


def test_plain_clip_adaptation_warns(oc_file, caplog):
    with caplog.at_level("WARNING", logger="clipvip.weights.convert"):
        clipvip.load(oc_file, num_frames=4)
    assert any("plain CLIP weights" in r.message and r.levelname == "WARNING" for r in caplog.records)


def _non64_open_clip():
    """An open_clip model whose heads are not 64-dim: vision 128 wide with 32-dim heads (4), text 64 wide, 4 heads."""
    torch.manual_seed(0)
    vision = open_clip.CLIPVisionCfg(layers=2, width=128, head_width=32, patch_size=8, image_size=32)
    text = open_clip.CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=4, layers=2)
    return open_clip.model.CLIP(embed_dim=64, vision_cfg=vision, text_cfg=text, quick_gelu=True).eval()


def test_open_clip_heads_from_option_or_sidecar_config(tmp_path, caplog):
    """Head counts are not in the weights: with 64-dim heads assumed the towers compute another function (said in
    a warning); with --heads, or open_clip's own open_clip_config.json beside the file, they equal open_clip's."""
    import json

    from clipvip.weights import Heads

    oc = _non64_open_clip()
    path = tmp_path / "plain" / "open_clip_pytorch_model.bin"
    path.parent.mkdir()
    torch.save(oc.state_dict(), path)
    img, ids = _images(), tokenize(TEXTS)
    with torch.no_grad():
        ref_img, ref_txt = F.normalize(oc.encode_image(img), dim=-1), F.normalize(oc.encode_text(ids), dim=-1)

    with caplog.at_level("WARNING", logger="clipvip.weights.convert"):
        guessed = clipvip.load(path, variant="meanpool")
    assert any("does not record its head counts" in r.message for r in caplog.records)
    assert (guessed.config.vision.heads, guessed.config.text.heads) == (2, 1)
    with torch.no_grad():
        assert not torch.allclose(guessed.encode_text(ids), ref_txt, atol=1e-3)

    given = clipvip.load(path, variant="meanpool", heads=Heads(4, 4))
    sidecar_dir = tmp_path / "hub"
    sidecar_dir.mkdir()
    torch.save(oc.state_dict(), sidecar_dir / "open_clip_pytorch_model.bin")
    model_cfg = {
        "embed_dim": 64,
        "vision_cfg": {"layers": 2, "width": 128, "head_width": 32, "patch_size": 8, "image_size": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
    }
    (sidecar_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    from_sidecar = clipvip.load(sidecar_dir / "open_clip_pytorch_model.bin", variant="meanpool")
    for model in (given, from_sidecar):
        with torch.no_grad():
            torch.testing.assert_close(model.encode_image(img), ref_img, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(model.encode_text(ids), ref_txt, rtol=1e-5, atol=1e-5)


def test_heads_option_parsing_and_named_open_clip_models():
    from clipvip.weights import Heads, heads_from_open_clip_name

    assert Heads.parse("16,12") == Heads(16, 12)
    with pytest.raises(ValueError, match="VISION,TEXT"):
        Heads.parse("16")
    assert heads_from_open_clip_name("ViT-B-32") == Heads(12, 8)
    assert heads_from_open_clip_name("ViT-H-14") == Heads(16, 16)  # 1280 wide, head_width 80: not 1280 // 64
    with pytest.raises(CheckpointError, match="unknown open_clip model"):
        heads_from_open_clip_name("ViT-Nope")


def test_width_without_a_64_dim_split_is_refused(tmp_path):
    torch.manual_seed(0)
    vision = open_clip.CLIPVisionCfg(layers=1, width=96, head_width=32, patch_size=8, image_size=32)
    text = open_clip.CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=2, layers=1)
    oc = open_clip.model.CLIP(embed_dim=64, vision_cfg=vision, text_cfg=text, quick_gelu=True)
    torch.save(oc.state_dict(), tmp_path / "w96.pt")
    with pytest.raises(CheckpointError, match=r"w96\.pt: vision width 96 is not a multiple of 64"):
        clipvip.load(tmp_path / "w96.pt")
    assert clipvip.load(tmp_path / "w96.pt", heads=clipvip.weights.Heads(3, 2)).config.vision.heads == 3
