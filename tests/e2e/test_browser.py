"""End to end in a real browser: Playwright drives headless Debian chromium against `clipvip serve`'s app.

Needs (skips cleanly otherwise): ``pip install playwright`` and ``apt-get install -y chromium`` (Playwright's own
browser download is not used: we launch /usr/bin/chromium). The screenshot lands in tests/artifacts/.

With an untrained tiny model no query "means" anything, so the expected first result is computed independently:
among a few candidate queries we take the one whose brute-force best video (text embedding . stored video
embeddings, in NumPy) wins by the largest margin, and check the page shows that video first.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from support import serve_in_thread

import clipvip
from clipvip.index import IndexConfig, VideoIndex, build_index
from clipvip.video import write_video

CHROMIUM = os.environ.get("CLIPVIP_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")
if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
    pytest.skip(f"{CHROMIUM} not found (apt-get install -y chromium)", allow_module_level=True)


@contextlib.contextmanager
def browser_page(width: int) -> Iterator[tuple[Any, list[str]]]:
    """A headless chromium page and the list its uncaught page errors go to; closed afterwards."""
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": 700})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            yield page, errors
        finally:
            browser.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):

    from clipvip_apps.web import create_app_from_path

    root = tmp_path_factory.mktemp("e2e")
    torch.manual_seed(0)
    clipvip.CLIPViP(clipvip.tiny_config()).save_pretrained(root / "model")
    rng = np.random.default_rng(1)
    for i in range(6):
        x = np.repeat(rng.integers(0, 256, (16, 4, 4, 3), dtype=np.uint8), 16, axis=1).repeat(16, axis=2)
        write_video(root / "videos" / f"scene_{i}.mp4", x, fps=8)
    x = np.repeat(rng.integers(0, 256, (48, 4, 4, 3), dtype=np.uint8), 16, axis=1).repeat(16, axis=2)
    write_video(root / "videos" / "long_scene.mp4", x, fps=8)  # 6 s -> three 2-s windows
    build_index(
        root / "videos",
        root / "idx",
        clipvip.load(root / "model"),
        root / "model",
        IndexConfig(window=2.0),
        progress=False,
    )
    with serve_in_thread(create_app_from_path(root / "idx")) as base_url:
        yield root, base_url


def _pick_query(root: Path) -> tuple[str, str, str, float]:
    """By brute force over the stored embeddings: (query, expected first video, expected first video of "more
    like this" on it, start time of the long video's best window for the query)."""
    index = VideoIndex.open(root / "idx")
    model = clipvip.load(root / "model")
    emb = np.asarray(index.emb, dtype=np.float64)
    paths = index.rows["path"].tolist()
    names = sorted(set(paths))
    candidates = [
        "a dog catches a frisbee",
        "a red car on a road",
        "someone cooking pasta",
        "waves on a beach",
        "a cat sleeping",
        "people dancing at night",
        "a man playing guitar",
        "snow falling on trees",
    ]
    with torch.inference_mode():
        t = model.encode_text(candidates).numpy().astype(np.float64)
    s = t @ emb.T  # [queries, rows]
    per_video = np.stack([s[:, [r for r, p in enumerate(paths) if p == n]].max(1) for n in names], 1)
    top2 = np.sort(per_video, 1)[:, -2:]
    best = int(np.argmax(top2[:, 1] - top2[:, 0]))  # the query whose winner wins by the largest margin
    top_video = names[int(np.argmax(per_video[best]))]
    top_row = max((r for r, p in enumerate(paths) if p == top_video), key=lambda r: s[best, r])
    sim = emb @ emb[top_row]
    sim[[r for r, p in enumerate(paths) if p == top_video]] = -np.inf
    long_rows = [r for r, p in enumerate(paths) if p.endswith("long_scene.mp4")]
    long_start = float(index.rows.at[max(long_rows, key=lambda r: s[best, r]), "start"])
    return candidates[best], Path(top_video).name, Path(paths[int(np.argmax(sim))]).name, long_start


def test_type_query_and_see_expected_result_first(served):
    root, url = served
    query, expected, expected_similar, long_start = _pick_query(root)
    with browser_page(1100) as (page, errors):
        page.goto(url)
        sync_api.expect(page.locator("#status")).to_contain_text("7 videos indexed")
        page.fill("#q", query)
        page.press("#q", "Enter")
        cards = page.locator("#results .card")
        sync_api.expect(cards).to_have_count(7)
        assert cards.first.locator(".name").inner_text() == expected
        page.wait_for_function(
            "() => [...document.querySelectorAll('.card .thumb')].every(i => i.complete && i.naturalWidth > 0)"
        )
        page.screenshot(path=str(ARTIFACTS / "e2e_search.png"), full_page=True)

        # click the thumbnail: the player opens on that video
        cards.first.locator(".thumb").click()
        sync_api.expect(page.locator("#player")).to_be_visible()
        page.wait_for_function("() => document.getElementById('video').readyState >= 1")
        assert page.locator("#player-title").inner_text().startswith(expected)
        page.screenshot(path=str(ARTIFACTS / "e2e_player.png"))
        page.click("#close")
        sync_api.expect(page.locator("#player")).to_be_hidden()

        # the long video plays from its best-matching window (not its start: checked below)
        assert long_start > 0, "pick a seed where the best window of long_scene.mp4 is not the first"
        cards.filter(has_text="long_scene.mp4").locator(".thumb").click()
        page.wait_for_function(f"() => Math.abs(document.getElementById('video').currentTime - {long_start}) < 0.3")
        page.click("#close")

        # "more like this" on the first result: video-to-video, itself excluded
        cards.first.locator(".more").click()
        sync_api.expect(page.locator("#status")).to_contain_text(f"like {expected}")
        sync_api.expect(cards).to_have_count(6)
        assert cards.first.locator(".name").inner_text() == expected_similar

        # an over-long query is refused in the page and by the server, and the page keeps working
        page.evaluate("document.getElementById('q').removeAttribute('maxlength')")
        page.fill("#q", "x" * 500)
        page.press("#q", "Enter")
        sync_api.expect(page.locator("#status")).to_contain_text("too long")
        assert not errors, errors


def test_xvid_avi_plays_through_a_transcode(tmp_path, monkeypatch):
    """The real XviD AVI fixture: the page asks /api/media, gets a converted copy of the matched window, says so,
    and the browser decodes it (video frames with a size, time advancing). Without an encoder it shows frames."""
    from conftest import FIXTURES

    from clipvip_apps.web import WebConfig, create_app_from_path
    from clipvip_apps.web.media import MediaConfig

    avi = FIXTURES / "videos" / "mmaction2_test.avi"
    if not avi.is_file():
        pytest.skip("../shared/fixtures is not present")
    torch.manual_seed(0)
    clipvip.CLIPViP(clipvip.tiny_config()).save_pretrained(tmp_path / "model")
    (tmp_path / "videos").mkdir()
    os.symlink(avi, tmp_path / "videos" / avi.name)
    build_index(
        tmp_path / "videos", tmp_path / "idx", clipvip.load(tmp_path / "model"), tmp_path / "model", progress=False
    )
    cfg = WebConfig(media=MediaConfig(transcode_dir=tmp_path / "tc"))
    with serve_in_thread(create_app_from_path(tmp_path / "idx", cfg=cfg)) as url:
        with browser_page(900) as (page, errors):
            page.goto(f"{url}/?q=anything")
            page.locator("#results .card .thumb").first.click()
            sync_api.expect(page.locator("#player-note")).to_contain_text("converted copy")
            page.wait_for_function(
                "() => { const v = document.getElementById('video');"
                " return v.dataset.mode === 'transcode' && v.readyState >= 2 && v.videoWidth === 320; }",
                timeout=30000,
            )
            page.wait_for_function("() => document.getElementById('video').currentTime > 0.2", timeout=15000)
            page.screenshot(path=str(ARTIFACTS / "e2e_avi_transcoded.png"))
            page.click("#close")

            # a server without any encoder: a strip of the window's frames, and the reason
            monkeypatch.setattr("clipvip_apps.web.media.available_encoder", lambda: None)
            page.locator("#results .card .thumb").first.click()
            sync_api.expect(page.locator("#player-note")).to_contain_text("no H.264/VP8/VP9 encoder")
            page.wait_for_function(
                "() => { const s = document.getElementById('strip'); return !s.hidden && s.naturalWidth === 720; }"
            )
            assert page.locator("#video").is_hidden()
            page.screenshot(path=str(ARTIFACTS / "e2e_avi_strip.png"))
            assert not errors, errors
