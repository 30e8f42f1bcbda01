"""Models by name: Hugging Face hub ids, open_clip ``NAME:TAG``, release URLs (``clipvip.weights.hub``), and the
model card ``save_pretrained`` writes (``clipvip.weights.card``).

Nothing is downloaded: each test fills a Hugging Face cache in huggingface_hub's real on-disk layout
(``models--org--name/{blobs,snapshots/<commit>,refs/main}``) with tiny models saved by the real libraries, turns
``HF_HUB_OFFLINE`` on, and lets ``huggingface_hub.hf_hub_download`` / ``open_clip.pretrained.download_pretrained``
find them as they would after a real download.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_weights import _hf_model, _images, _official_checkpoint, _open_clip_model

import clipvip
from clipvip.tokenizer import tokenize
from clipvip.weights.hub import ModelNotFoundError, resolve_model, url_cache_path

hub = pytest.importorskip("huggingface_hub")
hub_constants = pytest.importorskip("huggingface_hub.constants")
RELEASE_B32 = (
    "https://hdvila.blob.core.windows.net/dataset/pretrain_clipvip_base_32.pt?sp=r&st=2023-03-16T05:02:41Z"
    "&se=2027-05-31T13:02:41Z&spr=https&sv=2021-12-02&sr=b&sig=x"
)


def put_in_hf_cache(cache: Path, repo_id: str, files: dict[str, Path]) -> Path:
    """What ``hf_hub_download`` leaves behind: content-addressed blobs, a snapshot folder of symlinks to them
    named by the commit, and ``refs/main`` holding that commit. Returns the snapshot folder."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snap = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        data = Path(src).read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / name).symlink_to(os.path.relpath(blob, snap))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snap


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache, offline (huggingface_hub reads both settings from ``constants`` per call)."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    return cache


def _assert_same_as_hf(model, hf) -> None:
    img, ids = _images(), tokenize(["a dog catches a frisbee", "x"])
    with torch.no_grad():
        ref_img = hf.get_image_features(pixel_values=img)
        ref_txt = hf.get_text_features(input_ids=ids)
        ref_img = F.normalize(getattr(ref_img, "pooler_output", ref_img), dim=-1)
        ref_txt = F.normalize(getattr(ref_txt, "pooler_output", ref_txt), dim=-1)
        torch.testing.assert_close(model.encode_image(img), ref_img, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.encode_text(ids), ref_txt, rtol=1e-5, atol=1e-5)


def test_hf_hub_id_from_cache_offline(hf_cache, tmp_path):
    hf = _hf_model()
    hf.save_pretrained(tmp_path / "saved")
    snap = put_in_hf_cache(
        hf_cache,
        "openai/clip-vit-base-patch32",
        {n: tmp_path / "saved" / n for n in ("config.json", "model.safetensors")},
    )
    for spec in ("openai/clip-vit-base-patch32", "hf-hub:openai/clip-vit-base-patch32"):
        src = resolve_model(spec)
        assert src.kind == "hf-hub" and src.path == snap
        model = clipvip.load(spec, variant="meanpool")
        _assert_same_as_hf(model, hf)
    assert model.provenance["source"]["spec"] == "openai/clip-vit-base-patch32"


def test_no_network_cached_model_works_missing_one_is_one_line(hf_cache, tmp_path, monkeypatch):
    """Not offline mode but no network (the hub endpoint refuses connections): huggingface_hub falls back to its
    cache, and a model absent from it is one line saying the hub could not be reached."""
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "ENDPOINT", "http://127.0.0.1:9")
    backoff = []  # huggingface_hub retries a refused connection with sleeps of 1+2+4+8+8 s: count, do not wait
    monkeypatch.setattr("huggingface_hub.utils._http.time.sleep", backoff.append)
    hf = _hf_model()
    hf.save_pretrained(tmp_path / "saved")
    put_in_hf_cache(hf_cache, "org/cached", {n: tmp_path / "saved" / n for n in ("config.json", "model.safetensors")})
    _assert_same_as_hf(clipvip.load("org/cached", variant="meanpool"), hf)
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model("org/not-cached")
    assert "\n" not in str(e.value) and "could not be reached" in str(e.value)
    assert len(backoff) == 2 * 5, backoff  # one retry sequence per model (its config.json), not one per file


def test_missing_hub_model_offline_is_one_line(hf_cache, tmp_path, capsys):
    from clipvip_apps.cli import main

    with pytest.raises(ModelNotFoundError) as e:
        resolve_model("openai/clip-vit-base-patch16")
    msg = str(e.value)
    assert "\n" not in msg and "HF_HUB_OFFLINE" in msg and str(hf_cache) in msg
    assert main(["convert", "openai/clip-vit-base-patch16", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("clipvip convert: error: openai/clip-vit-base-patch16")
    assert not (tmp_path / "out").exists()


def test_unknown_names_say_what_a_model_is(hf_cache):
    with pytest.raises(ModelNotFoundError, match=r"vip-b32: no such checkpoint.*Hugging Face id"):
        resolve_model("vip-b32")
    with pytest.raises(ModelNotFoundError, match=r"needs a pretrained tag: ViT-B-32:openai"):
        resolve_model("ViT-B-32")
    with pytest.raises(ModelNotFoundError, match=r"ViT-B-32:nosuchtag: not an open_clip pretrained tag.*openai"):
        resolve_model("ViT-B-32:nosuchtag")


@pytest.mark.parametrize(
    ("spec", "quick_gelu"),
    [("ViT-B-32:openai", True), ("ViT-B-16:laion2b_s34b_b88k", False)],
)
def test_open_clip_name_through_its_own_download(hf_cache, tmp_path, spec, quick_gelu):
    """open_clip's registry sends both tags to the hub (``hf_hub`` entries); the activation and the head counts come
    from the registry too (OpenAI tags are QuickGELU, LAION ones GELU; ViT-B has 12 vision and 8 text heads), so
    neither ``act=`` nor ``heads=`` is needed. The stand-in is tiny but has ViT-B's head counts with 16-dim and
    8-dim heads, so the 64-dim guess (3 and 1 heads) would compute another function."""
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg
    from safetensors.torch import save_file

    torch.manual_seed(0)
    oc = open_clip.model.CLIP(
        embed_dim=64,
        vision_cfg=open_clip.CLIPVisionCfg(layers=2, width=192, head_width=16, patch_size=8, image_size=32),
        text_cfg=open_clip.CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=8, layers=2),
        quick_gelu=quick_gelu,
    ).eval()
    save_file({k: v.contiguous() for k, v in oc.state_dict().items()}, str(tmp_path / "w.safetensors"))
    repo_id = get_pretrained_cfg(*spec.split(":"))["hf_hub"].rstrip("/")
    put_in_hf_cache(hf_cache, repo_id, {"open_clip_model.safetensors": tmp_path / "w.safetensors"})
    model = clipvip.load(spec, variant="meanpool")
    assert model.config.act == ("quick_gelu" if quick_gelu else "gelu")
    assert (model.config.vision.heads, model.config.text.heads) == (12, 8)
    img, ids = _images(), tokenize(["a dog runs on the beach"])
    with torch.no_grad():
        ref = F.normalize(oc.encode_image(img), dim=-1)
        torch.testing.assert_close(model.encode_image(img), ref, rtol=1e-5, atol=1e-5)
        ref_t = F.normalize(oc.encode_text(ids), dim=-1)
        torch.testing.assert_close(model.encode_text(ids), ref_t, rtol=1e-5, atol=1e-5)


def test_open_clip_name_missing_offline(hf_cache):
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model("ViT-B-16:openai")
    msg = str(e.value)
    assert "\n" not in msg and "timm/vit_base_patch16_clip_224.openai" in msg and "HF_HUB_OFFLINE" in msg


def test_release_url_uses_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch-hub"))
    dst = url_cache_path(RELEASE_B32)
    assert dst == tmp_path / "torch-hub" / "checkpoints" / "pretrain_clipvip_base_32.pt"
    dst.parent.mkdir(parents=True)
    torch.save(_official_checkpoint(_hf_model()), dst)  # as a finished download leaves it
    model = clipvip.load(RELEASE_B32)
    assert model.config.variant == "vip" and model.config.num_proxies == 4
    assert model.provenance["source"]["kind"] == "url" and "sig=" not in model.provenance["source"]["spec"]
    with pytest.raises(ModelNotFoundError) as e:  # not cached, and this host cannot reach the URL
        resolve_model("https://127.0.0.1:9/pretrain_clipvip_base_16.pt")
    assert "\n" not in str(e.value) and "download it by hand" in str(e.value)


def test_save_pretrained_card_and_hf_hub_roundtrip(hf_cache, tmp_path):
    """The saved folder carries a card (architecture, source, conversion, weights sha256), which
    huggingface_hub parses; the folder, as a hub repo, loads back bit for bit and keeps naming its origin."""
    from clipvip.weights.card import record_eval

    oc = _open_clip_model()
    torch.save(oc.state_dict(), tmp_path / "ViT-tiny.pt")
    model = clipvip.load(tmp_path / "ViT-tiny.pt", num_frames=6)
    out = tmp_path / "my-vip"
    model.save_pretrained(out)
    card_text = (out / "README.md").read_text()
    sha = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    assert sha in card_text and "ViT-tiny.pt" in card_text and "variant=vip" in card_text
    assert "Not evaluated" in card_text
    card = hub.ModelCard.load(out / "README.md")
    assert card.data.library_name == "clipvip" and "video-text-retrieval" in card.data.tags

    result = {
        "t2v": {"R@1": 12.5, "R@5": 40.0, "R@10": 60.0, "MdR": 8.0, "MnR": 10.2},
        "v2t": {"R@1": 11.0, "R@5": 39.0, "R@10": 58.0, "MdR": 9.0, "MnR": 11.0},
        "settings": {"preset": "msvd", "annotation": "mine.json", "num_frames": 6},
    }
    assert record_eval(out, result) == out / "README.md"
    card_text = (out / "README.md").read_text()
    assert "msvd (mine.json, 6 frames)" in card_text and "12.5" in card_text
    assert record_eval("openai/clip-vit-base-patch32", result) is None  # not a local folder: nothing to update

    put_in_hf_cache(hf_cache, "me/my-vip", {n: out / n for n in ("config.json", "model.safetensors", "README.md")})
    back = clipvip.load("hf-hub:me/my-vip")
    assert back.config == model.config
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    assert back.provenance["source"]["path"] == str(tmp_path / "ViT-tiny.pt")
    assert back.provenance["loaded_from"] == "hf-hub:me/my-vip"
    assert len(back.provenance["conversion"]) == 2
    assert json.loads((out / "config.json").read_text())["provenance"]["source"]["kind"] == "local"


def test_index_records_a_hub_id_and_reloads_it_offline(hf_cache, tmp_path, capsys):
    """``clipvip index --model org/name`` keeps the id as typed (not a path under the current folder), and
    ``search``/``serve`` load it again from the cache."""
    from clipvip.index import VideoIndex, load_index_model
    from clipvip.video import write_video
    from clipvip_apps.cli import main

    hf = _hf_model()
    hf.save_pretrained(tmp_path / "saved")
    put_in_hf_cache(
        hf_cache, "org/tiny-clip", {n: tmp_path / "saved" / n for n in ("config.json", "model.safetensors")}
    )
    x = torch.randint(0, 256, (8, 32, 32, 3), dtype=torch.uint8).numpy()
    write_video(tmp_path / "v" / "a.mp4", x, fps=8)
    idx = tmp_path / "idx"
    assert main(["index", str(tmp_path / "v"), "--model", "org/tiny-clip", "--out", str(idx), "--quiet"]) == 0
    meta = VideoIndex.open(idx).meta["model"]
    assert meta["path"] == "org/tiny-clip" and meta["source"]["kind"] == "hf-hub"
    assert load_index_model(VideoIndex.open(idx)).config.vision.image_size == 32
    assert main(["search", str(idx), "a frisbee"]) == 0
    assert "a.mp4" in capsys.readouterr().out
