// clipvip search page: plain JS, no build step. All text goes through textContent (never innerHTML).
"use strict";
const $ = (id) => document.getElementById(id);
let info = { max_query_chars: 200, default_k: 24, windowed: false };

function fmtTime(t) {
  if (t === null || t === undefined) return "?";
  const m = Math.floor(t / 60), s = t - 60 * m;
  return `${m}:${s.toFixed(1).padStart(4, "0")}`;
}

function setStatus(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.className = isError ? "error" : "";
}

async function getJSON(url) {
  const r = await fetch(url);
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const d = body.detail;
    throw new Error(typeof d === "string" ? d : (Array.isArray(d) && d[0] && d[0].msg) || `HTTP ${r.status}`);
  }
  return body;
}

// A strip of frames instead of the player, with the reason (a file no browser plays and no way to convert it).
function showStrip(url, why) {
  const v = $("video");
  v.hidden = true;
  v.removeAttribute("src");
  $("strip").src = url;
  $("strip").hidden = false;
  $("player-note").textContent = why;
}

// Ask the server how to play this hit: the file itself, a converted copy of the window, or a frame strip.
async function play(hit) {
  const v = $("video");
  $("player-title").textContent = `${hit.name}  (from ${fmtTime(hit.start)})`;
  $("player-note").textContent = "";
  $("strip").hidden = true;
  v.hidden = false;
  $("player").hidden = false;
  const q = `start=${hit.start || 0}` + (hit.end !== null && hit.end !== undefined ? `&end=${hit.end}` : "");
  let media = { mode: "direct", url: hit.video_url, start: hit.start || 0, note: null, strip_url: null };
  try {
    media = await getJSON(`/api/media/${hit.video}?${q}`);
  } catch (e) {
    $("player-note").textContent = `cannot ask how to play this file: ${e.message}`;
  }
  if (media.mode === "strip") { showStrip(media.strip_url, media.note); return; }
  $("player-note").textContent = media.note || "";
  v.dataset.mode = media.mode;
  v.onerror = () => {
    if (media.strip_url) showStrip(media.strip_url, `the browser cannot play this (${media.note || "unsupported format"}): showing frames`);
  };
  v.onloadedmetadata = () => { v.currentTime = media.start || 0; v.play().catch(() => {}); };
  v.src = media.url;
}

function closePlayer() {
  const v = $("video");
  v.pause();
  v.onerror = null;
  v.removeAttribute("src");
  v.load();
  $("strip").hidden = true;
  $("player").hidden = true;
}

function card(hit) {
  const el = document.createElement("div");
  el.className = "card";
  el.dataset.row = hit.row;
  el.dataset.name = hit.name;
  const img = document.createElement("img");
  img.className = "thumb";
  img.alt = hit.name;
  img.loading = "lazy";
  if (hit.thumb_url) img.src = hit.thumb_url;
  img.addEventListener("click", () => play(hit));
  const meta = document.createElement("div");
  meta.className = "meta";
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = hit.name;
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = `score ${hit.score.toFixed(3)}`;
  meta.append(name, score);
  if (info.windowed) {
    const when = document.createElement("span");
    when.className = "when";
    when.textContent = `${fmtTime(hit.start)} – ${fmtTime(hit.end)}`;
    meta.append(when);
  }
  const more = document.createElement("button");
  more.className = "more";
  more.type = "button";
  more.textContent = "More like this";
  more.addEventListener("click", () => runSimilar(hit.row));
  el.append(img, meta, more);
  return el;
}

function show(data, label) {
  const grid = $("results");
  grid.replaceChildren(...data.results.map(card));
  setStatus(data.results.length ? `${data.results.length} results ${label}` : `no results ${label}`);
}

async function runSearch(q) {
  q = q.trim();
  if (!q) return;
  if (q.length > info.max_query_chars) {
    setStatus(`query too long (max ${info.max_query_chars} characters)`, true);
    return;
  }
  setStatus("searching…");
  try {
    const data = await getJSON(`/api/search?q=${encodeURIComponent(q)}&k=${info.default_k}`);
    show(data, `for “${data.query}”`);
    history.replaceState(null, "", `?q=${encodeURIComponent(q)}`);
  } catch (e) {
    setStatus(`search failed: ${e.message}`, true);
  }
}

async function runSimilar(row) {
  setStatus("searching…");
  try {
    const data = await getJSON(`/api/similar?row=${row}&k=${info.default_k}`);
    show(data, `like ${data.query}`);
  } catch (e) {
    setStatus(`search failed: ${e.message}`, true);
  }
}

async function init() {
  try {
    info = await getJSON("/api/info");
    $("q").maxLength = info.max_query_chars;
    setStatus(`${info.videos} videos indexed (${info.search} search)`);
  } catch (e) {
    setStatus(`server unavailable: ${e.message}`, true);
  }
  $("search-form").addEventListener("submit", (ev) => { ev.preventDefault(); runSearch($("q").value); });
  $("close").addEventListener("click", closePlayer);
  $("player").addEventListener("click", (ev) => { if (ev.target === $("player")) closePlayer(); });
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") closePlayer(); });
  const q = new URLSearchParams(location.search).get("q");
  if (q) { $("q").value = q; runSearch(q); }
}

init();
