import Hummingbird

// MARK: - The kiosk page
//
// One self-contained document (no CDN, no framework, no web fonts): it must work with the network
// unplugged. It is compiled into the binary and is the only file the server serves, so no request path can
// reach the file system.

enum Page {
    static func response() -> Response {
        Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-cache"],
                 body: .init(byteBuffer: ByteBuffer(string: html)))
    }

    static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1, viewport-fit=cover">
<title>blip2 kiosk</title>
<style>
:root {
  --bg: #0f1419; --panel: #182029; --panel2: #1f2933; --line: #2c3a47; --text: #e8edf2; --muted: #93a4b5;
  --accent: #4fb3ff; --accent2: #7ee2b8; --warn: #ffcc66; --bad: #ff7a7a; --radius: 18px;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif;
}
* { box-sizing: border-box; }
/* The hidden attribute must win over the display the buttons get below. */
[hidden] { display: none !important; }
html, body { margin: 0; height: 100%; background: var(--bg); color: var(--text); }
body { display: flex; flex-direction: column; font-size: 20px; -webkit-tap-highlight-color: transparent; }
header { display: flex; align-items: center; gap: 16px; padding: 14px 24px; border-bottom: 1px solid var(--line); }
header h1 { margin: 0; font-size: 26px; letter-spacing: .5px; }
header h1 span { color: var(--accent); }
.badge { padding: 6px 14px; border-radius: 999px; background: var(--panel2); color: var(--muted); font-size: 16px; }
.badge b { color: var(--text); font-weight: 600; }
.dot { width: 12px; height: 12px; border-radius: 50%; background: var(--muted); margin-left: auto; }
.dot.ok { background: var(--accent2); } .dot.busy { background: var(--warn); } .dot.down { background: var(--bad); }
#state { color: var(--muted); font-size: 16px; }
main { flex: 1; display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 24px; padding: 24px; min-height: 0; }
.panel { background: var(--panel); border: 1px solid var(--line); border-radius: var(--radius); padding: 20px; display: flex; flex-direction: column; min-height: 0; }
#picture { align-items: stretch; justify-content: center; gap: 16px; }
#drop { flex: 1; display: flex; flex-direction: column; align-items: center; justify-content: center; gap: 22px; border: 3px dashed var(--line); border-radius: var(--radius); padding: 24px; text-align: center; color: var(--muted); min-height: 260px; }
#drop.over { border-color: var(--accent); color: var(--text); }
#drop p { margin: 0; font-size: 22px; }
.buttons { display: flex; gap: 16px; flex-wrap: wrap; justify-content: center; }
button, .button { font: inherit; font-size: 22px; min-height: 64px; padding: 0 28px; border-radius: 14px; border: 0; cursor: pointer; background: var(--accent); color: #06121c; font-weight: 650; display: inline-flex; align-items: center; gap: 10px; touch-action: manipulation; }
button.secondary, .button.secondary { background: var(--panel2); color: var(--text); border: 1px solid var(--line); }
button:disabled { opacity: .45; cursor: default; }
button:active { transform: scale(.98); }
#file { display: none; }
#shown { display: none; flex: 1; min-height: 0; flex-direction: column; gap: 16px; }
#shown img, #camera video { width: 100%; flex: 1; min-height: 0; object-fit: contain; background: #000; border-radius: 12px; }
#camera { display: none; flex: 1; flex-direction: column; gap: 16px; min-height: 0; }
/* The server's own camera (blip2 serve --camera): its newest frame and latest caption. */
#live { display: none; flex: 1; min-height: 0; flex-direction: column; gap: 14px; }
#live-frame { width: 100%; flex: 1; min-height: 0; object-fit: contain; background: #000; border-radius: 12px; }
.live-head { display: flex; align-items: center; gap: 12px; }
.live-head .label { margin: 0; }
#live-state { margin-left: auto; color: var(--muted); font-size: 15px; text-align: right; }
.rec { width: 12px; height: 12px; border-radius: 50%; background: var(--bad); animation: pulse 2s ease-in-out infinite; }
@keyframes pulse { 50% { opacity: .35; } }
.rec.off { background: var(--muted); animation: none; }
.live-card { display: flex; gap: 16px; align-items: center; background: var(--panel2); border-radius: 14px; padding: 14px 18px; }
#live-caption { font-size: 26px; line-height: 1.3; font-weight: 600; }
#live .buttons button { font-size: 18px; min-height: 54px; padding: 0 20px; }
#live-meta { display: block; font-size: 14px; color: var(--muted); margin-top: 8px; }
#live-captioned { height: 84px; max-width: 30%; object-fit: contain; border-radius: 8px; background: #000; display: none; }
#chat { gap: 14px; }
#log { flex: 1; overflow-y: auto; display: flex; flex-direction: column; gap: 14px; padding-right: 4px; min-height: 120px; }
#log > * { flex-shrink: 0; }
.empty { margin: auto; color: var(--muted); text-align: center; max-width: 26ch; line-height: 1.4; }
.caption { background: var(--panel2); border-radius: 14px; padding: 18px 20px; font-size: 30px; line-height: 1.3; font-weight: 600; }
.caption small, .turn small { display: block; font-size: 14px; font-weight: 400; color: var(--muted); margin-top: 10px; }
.label { font-size: 14px; text-transform: uppercase; letter-spacing: 1.5px; color: var(--accent); margin-bottom: 6px; font-weight: 700; }
.turn { display: flex; flex-direction: column; gap: 6px; }
.q { align-self: flex-end; background: var(--accent); color: #06121c; padding: 12px 18px; border-radius: 16px 16px 4px 16px; max-width: 85%; font-weight: 600; }
.a { align-self: flex-start; background: var(--panel2); padding: 12px 18px; border-radius: 16px 16px 16px 4px; max-width: 85%; font-size: 24px; }
.cursor::after { content: "▍"; color: var(--accent); animation: blink 1s steps(1) infinite; margin-left: 2px; }
@keyframes blink { 50% { opacity: 0; } }
.notice { border-radius: 12px; padding: 12px 16px; font-size: 17px; display: none; align-items: center; gap: 14px; }
.notice.show { display: flex; }
.notice.info { background: #1d3346; color: #cfe8ff; }
.notice.warn { background: #3d3217; color: #ffe3a3; }
.notice.bad { background: #43191c; color: #ffd0d0; }
.notice button { min-height: 44px; font-size: 17px; padding: 0 16px; margin-left: auto; }
form { display: flex; gap: 12px; }
#question { flex: 1; min-width: 0; font: inherit; font-size: 22px; min-height: 64px; padding: 0 18px; border-radius: 14px; border: 1px solid var(--line); background: var(--bg); color: var(--text); }
#question:focus { outline: 2px solid var(--accent); }
footer { padding: 8px 24px 14px; color: var(--muted); font-size: 14px; display: flex; justify-content: space-between; }
/* Portrait screens and phones: one column, and the page itself scrolls. */
@media (max-aspect-ratio: 1/1) {
  html, body { height: auto; min-height: 100%; }
  body { font-size: 18px; }
  header { flex-wrap: wrap; padding: 10px 14px; gap: 8px; }
  header h1 { font-size: 22px; }
  .badge { font-size: 14px; padding: 4px 10px; }
  main { display: flex; flex-direction: column; padding: 12px; gap: 12px; }
  .panel { padding: 14px; }
  #drop { min-height: 220px; }
  #shown img, #live-frame { max-height: 45vh; }
  #live-caption { font-size: 22px; }
  #log { overflow: visible; flex: none; min-height: 60px; }
  .caption { font-size: 24px; }
  .a { font-size: 21px; }
  button, .button, #question { font-size: 19px; min-height: 56px; }
  footer { flex-direction: column; gap: 4px; padding: 8px 14px 14px; }
}
</style>
</head>
<body>
<header>
  <h1><span>blip2</span> kiosk</h1>
  <div class="badge">model <b id="model">…</b></div>
  <div class="badge">precision <b id="precision">…</b></div>
  <div class="dot" id="dot"></div><div id="state">connecting…</div>
</header>
<main>
  <section class="panel" id="picture">
    <div id="live">
      <div class="live-head"><span class="rec off" id="live-rec"></span><span class="label">Live camera</span><span id="live-state">connecting…</span></div>
      <img id="live-frame" alt="the camera's newest frame">
      <div class="live-card" id="live-card">
        <img id="live-captioned" alt="the frame the caption describes">
        <div><span id="live-caption">Waiting for the first caption…</span><small id="live-meta"></small></div>
      </div>
      <div class="buttons">
        <button id="live-ask" type="button" disabled>Ask about this frame</button>
        <button id="live-other" class="secondary" type="button">Use a picture instead</button>
      </div>
    </div>
    <div id="drop">
      <p>Show me a picture</p>
      <div class="buttons">
        <button id="camera-open" type="button" hidden><svg width="26" height="26" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true"><path d="M4 8h3l2-3h6l2 3h3a1 1 0 0 1 1 1v9a1 1 0 0 1-1 1H4a1 1 0 0 1-1-1V9a1 1 0 0 1 1-1z"/><circle cx="12" cy="13" r="4"/></svg> Take a photo</button>
        <button id="live-open" class="secondary" type="button" hidden>Live camera</button>
        <label class="button secondary" for="file"><svg width="26" height="26" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true"><rect x="3" y="4" width="18" height="16" rx="2"/><circle cx="9" cy="10" r="2"/><path d="M21 16l-5-5-9 9"/></svg> Choose a picture</label>
      </div>
      <p style="font-size:16px">or drop an image file here (JPEG or PNG)</p>
      <input id="file" type="file" accept="image/jpeg,image/png">
    </div>
    <div id="camera">
      <video id="video" autoplay playsinline muted></video>
      <div class="buttons">
        <button id="snap" type="button">Capture</button>
        <button id="camera-close" class="secondary" type="button">Cancel</button>
      </div>
    </div>
    <div id="shown">
      <img id="photo" alt="the picture being described">
      <div class="buttons"><button id="new" class="secondary" type="button">New picture</button></div>
    </div>
  </section>
  <section class="panel" id="chat">
    <div id="log"><div class="empty" id="empty">Pick, drop or photograph a picture: its caption appears here, then ask questions about it.</div></div>
    <div class="notice" id="notice"><span id="notice-text"></span><button id="retry" class="secondary" type="button" hidden>Retry</button></div>
    <form id="ask-form" autocomplete="off">
      <input id="question" placeholder="Ask about the picture…" enterkeyhint="send" disabled>
      <button id="ask" type="submit" disabled>Ask</button>
    </form>
  </section>
</main>
<footer><span>Runs on this device: nothing leaves it.</span><span id="context"></span></footer>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const key = new URLSearchParams(location.search).get("key");
const auth = key ? { "Authorization": "Bearer " + key } : {};
let image = null, session = null, busy = false, retryAction = null, contextTokens = 512, generation = 0;
let liveOn = false, preferLive = true, liveFrameBusy = false, liveFrameAgain = false;

function setState(kind, text) { $("dot").className = "dot " + kind; $("state").textContent = text; }
function notice(kind, text, retry) {
  const n = $("notice");
  n.className = "notice show " + kind;
  $("notice-text").textContent = text;
  retryAction = retry || null;
  $("retry").hidden = !retry;
}
function clearNotice() { $("notice").className = "notice"; retryAction = null; }
$("retry").onclick = () => { const action = retryAction; clearNotice(); if (action) action(); };

async function health() {
  try {
    const r = await fetch("/health");
    const h = await r.json();
    $("model").textContent = h.model; $("precision").textContent = h.precision;
    contextTokens = h.context_tokens;
    $("context").textContent = "context " + h.context_tokens + " tokens · queue " + h.queue_depth + "/" + h.queue_capacity;
    if (h.camera) startLive();
    if (!busy) setState("ok", "ready");
  } catch (e) { setState("down", "server unreachable"); }
}
health(); setInterval(health, 15000);

function ms(v) { return v == null ? null : (v < 10 ? v.toFixed(1) : Math.round(v)) + " ms"; }
function timingText(t, cached) {
  const parts = [["decode", t.image_decode], ["preprocess", t.preprocess], ["vision", t.vision], ["Q-Former", t.qformer_projection],
                 ["prefill", t.prefill], ["generate", t.generate], ["total", t.total]]
    .filter(([, v]) => v != null).map(([k, v]) => k + " " + ms(v));
  return parts.join(" · ") + (cached ? " · picture already encoded" : "");
}

// Server-sent events over fetch (EventSource cannot POST): calls onText per piece, returns the result.
async function streamRequest(url, body, headers, onText) {
  let response;
  try {
    response = await fetch(url, { method: "POST", body, headers: Object.assign({}, auth, headers || {}) });
  } catch (e) { throw { lost: true }; }
  if (!response.ok) {
    let err = {};
    try { err = (await response.json()).error || {}; } catch (e) {}
    throw { status: response.status, code: err.code, message: err.message || response.statusText,
            retryAfter: Number(response.headers.get("Retry-After") || 0) };
  }
  let result = null;
  try {
    await readEvents(response, (event, payload) => {
      if (event === "error") throw { status: 500, message: payload.error.message };
      if (event === "result") result = payload; else onText(payload.text);
    });
  } catch (e) { if (e && e.message) throw e; throw { lost: true }; }
  if (!result) throw { lost: true };
  return result;
}

// Calls onEvent(name, data) for each server-sent event of the response until it ends (comments skipped).
async function readEvents(response, onEvent) {
  const reader = response.body.getReader(), decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
      let event = "message", data = "";
      for (const line of frame.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      if (data) onEvent(event, JSON.parse(data));
    }
  }
}

function explain(e, retry) {
  if (e.lost) { setState("down", "connection lost"); notice("bad", "Lost the connection to the server. Check that it is running, then retry.", retry); }
  else if (e.status === 503) {
    setState("busy", "busy");
    let left = Math.max(1, e.retryAfter || 2);
    notice("warn", "The server is busy with other visitors. Retrying in " + left + " s…", retry);
    const timer = setInterval(() => {
      left -= 1;
      if (retryAction !== retry) { clearInterval(timer); return; }
      if (left <= 0) { clearInterval(timer); clearNotice(); retry(); }
      else $("notice-text").textContent = "The server is busy with other visitors. Retrying in " + left + " s…";
    }, 1000);
  }
  else if (e.status === 400 && e.code && /image/.test(e.code)) { setState("ok", "ready"); notice("bad", "That file is not a picture this kiosk can read (JPEG or PNG). " + (e.message || "")); }
  else if (e.status === 401) { notice("bad", "This server needs an API key: open the page as /?key=YOUR_KEY."); }
  else if (e.status === 413) { notice("bad", "That picture is too large for this server."); }
  else { setState("ok", "ready"); notice("bad", e.message || "Something went wrong."); }
}

function entry(html) {
  $("empty").style.display = "none";
  const div = document.createElement("div");
  div.innerHTML = html;
  $("log").appendChild(div.firstElementChild);
  const el = $("log").lastElementChild;
  $("log").scrollTop = $("log").scrollHeight;
  el.scrollIntoView({ block: "nearest" });
  return el;
}

function setBusy(on) {
  busy = on;
  $("question").disabled = on || !image;
  $("ask").disabled = on || !image;
  if (on) setState("busy", "thinking…");
}

async function caption() {
  const mine = generation;
  clearNotice(); setBusy(true);
  const card = entry('<div class="caption" id="caption-card"><div class="label">Caption</div><span id="caption" class="cursor"></span><small id="caption-timings"></small></div>');
  const form = new FormData(); form.append("image", image); form.append("stream", "true");
  try {
    const r = await streamRequest("/v1/caption", form, {}, (t) => { if (mine === generation) $("caption").textContent += t; });
    if (mine !== generation) return;
    $("caption").textContent = r.text;
    $("caption-timings").textContent = timingText(r.timings_ms, r.image_cached);
    card.dataset.done = "true";
    setState("ok", "ready");
  } catch (e) {
    if (mine !== generation) return;
    card.remove();
    if (!document.querySelector(".caption")) $("empty").style.display = "";
    explain(e, caption);
    if (e.status === 400) { image = null; showPicker(); }
  } finally {
    if (mine === generation) { $("caption") && $("caption").classList.remove("cursor"); setBusy(false); if (image) $("question").focus(); }
  }
}

async function ask(question, turnEl) {
  const mine = generation;
  clearNotice(); setBusy(true);
  const turn = turnEl || entry('<div class="turn"><div class="q"></div><div class="a cursor"></div><small></small></div>');
  turn.querySelector(".q").textContent = question;
  const answer = turn.querySelector(".a");
  answer.textContent = ""; answer.classList.add("cursor");
  let body, headers = {};
  if (session) { body = JSON.stringify({ session_id: session, question, stream: true }); headers["Content-Type"] = "application/json"; }
  else { body = new FormData(); body.append("image", image); body.append("question", question); body.append("stream", "true"); }
  try {
    const r = await streamRequest("/v1/chat", body, headers, (t) => { if (mine === generation) answer.textContent += t; });
    if (mine !== generation) return;
    session = r.session_id;
    answer.textContent = r.text;
    turn.querySelector("small").textContent = timingText(r.timings_ms, r.image_cached);
    turn.dataset.done = "true";
    setState("ok", "ready");
    if (r.dropped_turns > 0) notice("info", "The conversation outgrew the model's " + contextTokens + "-token window: the oldest " + (r.dropped_turns === 1 ? "turn was" : r.dropped_turns + " turns were") + " left out of the context.");
  } catch (e) {
    if (mine !== generation) return;
    if (e.status === 404 && e.code === "session_not_found") {
      session = null;
      notice("info", "The conversation had expired: starting again from this picture.");
      return ask(question, turn);
    }
    answer.textContent = "…";
    explain(e, () => ask(question, turn));
  } finally {
    if (mine === generation) { answer.classList.remove("cursor"); setBusy(false); $("question").focus(); }
  }
}

$("ask-form").onsubmit = (ev) => {
  ev.preventDefault();
  const q = $("question").value.trim();
  if (!q || busy || !image) return;
  $("question").value = "";
  ask(q);
};

function showPicker() {
  const live = liveOn && preferLive;
  $("shown").style.display = "none"; $("camera").style.display = "none";
  $("live").style.display = live ? "flex" : "none"; $("drop").style.display = live ? "none" : "flex";
  $("question").disabled = true; $("ask").disabled = true;
}
function reset() {
  generation += 1; image = null; session = null; clearNotice();
  $("log").querySelectorAll(".caption, .turn").forEach((el) => el.remove());
  $("empty").style.display = "";
  showPicker(); setBusy(false); setState("ok", "ready"); $("question").disabled = true; $("ask").disabled = true;
}
function use(blob) {
  if (!blob) return;
  reset();
  image = blob;
  const url = URL.createObjectURL(blob);
  $("photo").onload = () => URL.revokeObjectURL(url);
  $("photo").src = url;
  $("drop").style.display = "none"; $("live").style.display = "none"; $("shown").style.display = "flex";
  caption();
}
$("new").onclick = () => { reset(); };
$("file").onchange = () => { const f = $("file").files[0]; $("file").value = ""; use(f); };

const drop = $("drop");
["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
drop.addEventListener("drop", (e) => { const f = e.dataTransfer.files[0]; if (f) use(f); });
document.addEventListener("dragover", (e) => e.preventDefault());
document.addEventListener("drop", (e) => { e.preventDefault(); const f = e.dataTransfer && e.dataTransfer.files[0]; if (f) use(f); });

// The camera, where the browser allows it (a secure context such as localhost).
let stream = null;
if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia) $("camera-open").hidden = false;
$("camera-open").onclick = async () => {
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
    $("video").srcObject = stream;
    $("drop").style.display = "none"; $("camera").style.display = "flex";
  } catch (e) { notice("warn", "The camera is not available here; choose a picture instead."); }
};
function closeCamera() { if (stream) stream.getTracks().forEach((t) => t.stop()); stream = null; }
$("camera-close").onclick = () => { closeCamera(); showPicker(); };
$("snap").onclick = () => {
  const v = $("video"), c = document.createElement("canvas");
  c.width = v.videoWidth; c.height = v.videoHeight;
  c.getContext("2d").drawImage(v, 0, 0);
  closeCamera();
  c.toBlob((b) => use(b), "image/jpeg", 0.92);
};

// The server's camera (blip2 serve --camera): its newest frame and latest caption, pushed as they come
// through /v1/camera/events; the pictures are fetched with the API key, which an <img src> could not send.
function startLive() {
  if (liveOn) return;
  liveOn = true;
  $("live-open").hidden = false;
  if (!image) showPicker();
  followCamera();
}
$("live-other").onclick = () => { preferLive = false; showPicker(); };
$("live-open").onclick = () => { preferLive = true; showPicker(); };
$("live-ask").onclick = async () => {
  try {
    const r = await fetch("/v1/camera/latest.jpg", { headers: auth, cache: "no-store" });
    if (r.status === 200) use(await r.blob());
  } catch (e) { explain({ lost: true }, () => $("live-ask").click()); }
};

// Shows the image at url in img; returns the response, or null when there is none yet.
async function fetchImage(url, img) {
  const r = await fetch(url, { headers: auth, cache: "no-store" });
  if (r.status !== 200) return null;
  const old = img.src;
  img.src = URL.createObjectURL(await r.blob());
  if (old.startsWith("blob:")) URL.revokeObjectURL(old);
  img.dataset.frame = r.headers.get("X-Frame-Number") || "";
  return r;
}

// One fetch of the newest frame at a time; frames announced meanwhile make one more.
async function loadLiveFrame() {
  if (liveFrameBusy) { liveFrameAgain = true; return; }
  liveFrameBusy = true;
  try {
    do { liveFrameAgain = false; await fetchImage("/v1/camera/frame.jpg", $("live-frame")); } while (liveFrameAgain);
  } catch (e) {} finally { liveFrameBusy = false; }
}

function showLiveStatus(s, message) {
  const words = { watching: "live", ended: "the camera's stream ended", failed: "camera failed", stopped: "the server is stopping" };
  const parts = [words[s.state] || s.state, s.frames_seen + " frames seen", s.frames_captioned + " captioned"];
  if (s.state === "failed" && s.error) parts.push(s.error); else if (message) parts.push(message);
  $("live-state").textContent = parts.join(" · ");
  $("live-rec").className = "rec" + (s.state === "watching" ? "" : " off");
}

function showLiveCaption(c) {
  $("live-caption").textContent = c.text;
  $("live-card").dataset.frame = String(c.frame);
  const meta = ["frame " + c.frame, new Date(c.time).toLocaleTimeString(), "captioned " + ms(c.latency_ms) + " after it arrived"];
  for (const a of c.answers || []) meta.push(a.question + " " + a.answer);
  $("live-meta").textContent = meta.join(" · ");
  $("live-ask").disabled = false;
  fetchImage("/v1/camera/latest.jpg", $("live-captioned")).then((r) => { if (r) $("live-captioned").style.display = "block"; }).catch(() => {});
  showLiveStatus(c.camera);
}

async function followCamera() {
  let delay = 1000;
  for (;;) {
    try {
      const r = await fetch("/v1/camera/events", { headers: auth, cache: "no-store" });
      if (r.status === 404) return;
      if (r.status === 401) { $("live-state").textContent = "this server needs an API key: open the page as /?key=YOUR_KEY"; return; }
      if (r.ok) {
        delay = 1000;
        await readEvents(r, (event, payload) => {
          if (event === "caption") showLiveCaption(payload);
          else if (event === "frame") loadLiveFrame();
          else if (event === "status") showLiveStatus(payload, payload.message);
        });
      }
    } catch (e) {}
    $("live-state").textContent = "reconnecting to the server…";
    $("live-rec").className = "rec off";
    await new Promise((done) => setTimeout(done, delay));
    delay = Math.min(delay * 2, 15000);
  }
}
</script>
</body>
</html>
"""#
}
