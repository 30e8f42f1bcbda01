"""Where a model comes from: a local file or folder, a Hugging Face hub id, an open_clip ``NAME:TAG``, or a URL.

``resolve_model(spec)`` turns what a user typed after ``--model`` into a local path (downloading into the owning
library's standard cache when needed) plus what the source itself tells about the weights. The downloads go through
the libraries' own machinery, so their caches, tokens, mirrors and offline switches apply unchanged:

- ``org/name`` or ``hf-hub:org/name[@revision]``: ``huggingface_hub.hf_hub_download`` (``$HF_HUB_CACHE``);
- ``ViT-B-32:openai``: ``open_clip.pretrained.download_pretrained`` with open_clip's registry entry for the tag;
- ``https://...``: ``torch.hub.download_url_to_file`` into ``torch.hub.get_dir()/checkpoints`` (torch's cache).

Offline (``HF_HUB_OFFLINE=1`` or no network) a cached model resolves as usual; a missing one raises
``ModelNotFoundError`` with one line saying what is missing and how to get it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from clipvip.weights.convert import Heads, heads_from_open_clip_name

HF_PREFIX = "hf-hub:"
# Files that make a Hugging Face repo loadable, in order of preference; the first weights file found is used.
HF_CONFIG = "config.json"
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
HF_CARD = "README.md"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_OPEN_CLIP_NAME = re.compile(r"^(?P<name>[\w./-]+):(?P<tag>[\w.-]+)$")
HELP = (
    "a model is a clipvip/Hugging Face folder, a weights file, a Hugging Face id (openai/clip-vit-base-patch32), "
    "an open_clip NAME:TAG (ViT-B-32:openai) or a URL of the official CLIP-ViP release (README: Models)"
)


class ModelNotFoundError(FileNotFoundError):
    """A model spec that names nothing loadable here: one line, for the CLI to print as is."""


@dataclass(frozen=True)
class ModelSource:
    """A resolved model: ``path`` is local; ``kind`` is ``local``, ``hf-hub``, ``open_clip`` or ``url``; ``act``
    is the activation and ``heads`` the attention head counts when the source states them (open_clip's registry
    does; bare state dicts cannot)."""

    spec: str
    path: Path
    kind: str
    act: str | None = None
    revision: str | None = None
    heads: Heads | None = None

    def describe(self) -> str:
        """What a model card or ``/api/info`` calls this source."""
        if self.kind == "local":
            return str(self.path)
        rev = f"@{self.revision}" if self.revision else ""
        return f"{self.kind}:{self.spec}{rev}"

    def to_dict(self) -> dict[str, str | None]:
        return {"spec": self.spec, "kind": self.kind, "path": str(self.path), "revision": self.revision}


def resolve_model(spec: str | Path) -> ModelSource:
    """A model spec -> a local path (see the module docstring). Existing local paths always win."""
    text = str(spec)
    if Path(text).expanduser().exists():
        return ModelSource(text, Path(text).expanduser(), "local")
    if text.startswith(HF_PREFIX):
        return _from_hf(text[len(HF_PREFIX) :])
    if text.startswith(("http://", "https://")):
        return _from_url(text)
    if (m := _OPEN_CLIP_NAME.match(text)) is not None and "/" not in m.group("name"):
        return _from_open_clip(m.group("name"), m.group("tag"))
    if _REPO_ID.match(text.split("@", 1)[0]):
        return _from_hf(text)
    hint = _open_clip_hint(text)
    raise ModelNotFoundError(f"{text}: no such checkpoint file or folder{hint}; {HELP}")


# ----------------------------------------------------------------------------------------------- Hugging Face


def _offline_hint() -> str:
    from huggingface_hub import constants

    where = f"the Hugging Face cache {constants.HF_HUB_CACHE}"
    if constants.is_offline_mode():
        return f"not in {where} and HF_HUB_OFFLINE is set (run once online, or `hf download` it)"
    return f"not in {where} and the hub could not be reached"


def _from_hf(repo: str) -> ModelSource:
    """Download (or find in the cache) the files one repo needs: config.json + one weights file (or open_clip's
    weights file when the repo is an open_clip one); the model card comes along when there is one."""
    try:
        import huggingface_hub as hub
        from huggingface_hub import errors
    except ImportError as e:
        raise ModelNotFoundError(f"{repo}: loading hub ids needs huggingface_hub (pip install 'clipvip[clip]')") from e
    repo_id, _, revision = repo.partition("@")
    revision = revision or None

    unreachable: list[str] = []  # files the hub was not asked for (offline) or could not be reached for

    def get(filename: str, cache_first: bool = True) -> Path | None:
        """One file. Only config.json always asks the hub (that refreshes the revision the cache points at); the
        rest come from the cache when that revision has them, and once the hub proved unreachable only the cache
        is asked: each unreachable try costs ~20 s of huggingface_hub's back-off."""
        if cache_first or unreachable:
            try:
                return Path(hub.hf_hub_download(repo_id, filename, revision=revision, local_files_only=True))
            except errors.LocalEntryNotFoundError:
                if unreachable:
                    return None
        try:
            return Path(hub.hf_hub_download(repo_id, filename, revision=revision))
        except errors.RepositoryNotFoundError as e:
            raise ModelNotFoundError(
                f"{repo_id}: no such local file or folder, nor a model on the Hugging Face hub (private or gated "
                f"ones need HF_TOKEN); {HELP}"
            ) from e
        except errors.RevisionNotFoundError as e:
            raise ModelNotFoundError(f"{repo_id}: no revision {revision!r} on the Hugging Face hub") from e
        except errors.RemoteEntryNotFoundError:
            return None
        except (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled):
            unreachable.append(filename)
            return None

    config = get(HF_CONFIG, cache_first=False)
    weights = next((p for p in map(get, HF_WEIGHTS) if p is not None), None) if config is not None else None
    if config is not None and weights is not None:
        get(HF_CARD)  # optional: kept next to the weights so a clipvip folder's card travels with it
        return ModelSource(repo_id, config.parent, "hf-hub", revision=revision)
    oc = next((p for p in map(get, OPEN_CLIP_WEIGHTS) if p is not None), None)
    if oc is not None:
        return ModelSource(repo_id, oc, "hf-hub", act=_open_clip_repo_act(get), revision=revision)
    if unreachable:  # may also be a mistyped local path that looks like org/name
        raise ModelNotFoundError(f"{repo_id}: no such local file or folder, and {_offline_hint()}")
    wanted = " or ".join((*HF_WEIGHTS, *OPEN_CLIP_WEIGHTS)) if config is not None else HF_CONFIG
    raise ModelNotFoundError(f"{repo_id}: the repo has no {wanted}; not a CLIP model clipvip can read")


def _open_clip_repo_act(get) -> str | None:  # noqa: ANN001 - the local ``get`` above
    import json

    cfg = get("open_clip_config.json")
    if cfg is None:
        return None
    model_cfg = json.loads(cfg.read_text()).get("model_cfg", {})
    return "quick_gelu" if model_cfg.get("quick_gelu") else "gelu"


# ----------------------------------------------------------------------------------------------- open_clip


def _open_clip_hint(text: str) -> str:
    """For a bare open_clip model name (``ViT-B-32``): the tags it can be loaded with."""
    try:
        from open_clip.pretrained import list_pretrained_tags_by_model
    except ImportError:
        return ""
    tags = list_pretrained_tags_by_model(text)
    if not tags:
        return ""
    shown = ", ".join(f"{text}:{t}" for t in tags[:4])
    return f" (an open_clip model name needs a pretrained tag: {shown}{', ...' if len(tags) > 4 else ''})"


def _from_open_clip(name: str, tag: str) -> ModelSource:
    """open_clip's registry entry for ``name:tag`` -> its own download (hub first, then its URL) into its cache."""
    try:
        from open_clip.pretrained import download_pretrained, get_pretrained_cfg, list_pretrained_tags_by_model
    except ImportError as e:
        raise ModelNotFoundError(f"{name}:{tag}: loading open_clip names needs open_clip_torch (clipvip[clip])") from e
    cfg = get_pretrained_cfg(name, tag)
    if not cfg:
        tags = list_pretrained_tags_by_model(name)
        known = f"its tags: {', '.join(tags)}" if tags else "no such open_clip model"
        raise ModelNotFoundError(f"{name}:{tag}: not an open_clip pretrained tag ({known})")
    act = "quick_gelu" if cfg.get("quick_gelu") or name.endswith("-quickgelu") else "gelu"
    try:
        path = download_pretrained(cfg)
    except Exception as e:  # noqa: BLE001 - open_clip raises FileNotFoundError/RuntimeError/URLError with pages of text
        where = f"hf-hub:{cfg['hf_hub'].rstrip('/')}" if cfg.get("hf_hub") else cfg.get("url")
        why = _offline_hint() if cfg.get("hf_hub") else _first_line(e)
        raise ModelNotFoundError(f"{name}:{tag}: open_clip could not get {where}: {why}") from e
    if not path:
        raise ModelNotFoundError(f"{name}:{tag}: open_clip has no download for this tag")
    return ModelSource(f"{name}:{tag}", Path(path), "open_clip", act=act, heads=heads_from_open_clip_name(name))


# ----------------------------------------------------------------------------------------------- URL


def url_cache_path(url: str) -> Path:
    """Where a URL's file lands: torch's hub cache, named by the URL's file name (query strings, such as the
    release's Azure SAS tokens, dropped)."""
    import torch.hub

    name = Path(unquote(urlparse(url).path)).name
    if not name:
        raise ModelNotFoundError(f"{url}: the URL names no file")
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def _from_url(url: str) -> ModelSource:
    """Download once into torch's hub cache (``torch.hub.download_url_to_file``: a temp file renamed at the end)."""
    import torch.hub

    dst = url_cache_path(url)
    if not dst.is_file():
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(dst), progress=True)
        except Exception as e:  # noqa: BLE001 - urllib raises URLError/HTTPError/timeouts
            raise ModelNotFoundError(
                f"{urlparse(url).netloc}/{dst.name}: download failed ({_first_line(e)}) and it is not in {dst.parent}; "
                f"download it by hand and pass the file"
            ) from e
    return ModelSource(url.split("?", 1)[0], dst, "url")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]
