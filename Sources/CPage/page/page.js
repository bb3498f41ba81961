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
