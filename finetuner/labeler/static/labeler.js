// finetuner labeler page: shows a query and its nearest items, sends the ticks to /api/labels.
// Item content is always inserted with textContent or as an <img> data URI, never as HTML.
"use strict";

const TOKEN_KEY = "finetuner-labeler-token";
const token = readToken();
let page = null;        // the page on screen: {query, results, model_version, uncertainty}
let ticks = [];         // one boolean per result
let busy = false;

// The token arrives in the URL fragment (never sent to the server); keep it for this tab only
// and take it out of the address bar so it is not bookmarked or shared by accident.
function readToken() {
  const m = location.hash.match(/token=([A-Za-z0-9_-]+)/);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, m[1]);
    history.replaceState(null, "", location.pathname);
    return m[1];
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

function $(id) { return document.getElementById(id); }

function showError(text) {
  const el = $("error");
  el.textContent = text || "";
  el.hidden = !text;
}

function message(text) { $("message").textContent = text; }

async function api(path, options = {}) {
  const headers = { "X-Finetuner-Token": token || "" };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { ...options, headers, cache: "no-store" });
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) {
    const detail = data && data.detail ? (typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail)) : response.statusText;
    const err = new Error(`${response.status}: ${detail}`);
    err.status = response.status;
    throw err;
  }
  return data;
}

function randomId() {  // works outside secure contexts too (crypto.randomUUID does not)
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function renderItem(container, item) {
  container.replaceChildren();
  if (item.kind === "image") {
    const img = document.createElement("img");
    img.src = item.src;
    img.alt = `item ${item.id}`;
    container.appendChild(img);
  } else {
    const p = document.createElement("p");
    p.className = "text";
    p.textContent = item.text;
    container.appendChild(p);
  }
  container.dataset.id = item.id;
}

function renderPage() {
  const results = $("results");
  results.replaceChildren();
  if (!page) return;
  renderItem($("query"), page.query);
  $("uncertainty").textContent = page.uncertainty == null ? "-" : page.uncertainty.toFixed(2);
  $("page-version").textContent = `v${page.model_version}`;
  page.results.forEach((item, i) => {
    const card = document.createElement("button");
    card.type = "button";
    card.className = "item result";
    card.setAttribute("role", "checkbox");
    card.setAttribute("aria-checked", String(ticks[i]));
    card.dataset.index = i;
    const num = document.createElement("span");
    num.className = "num";
    num.textContent = i < 10 ? String((i + 1) % 10) : "";
    const mark = document.createElement("span");
    mark.className = "mark";
    mark.textContent = ticks[i] ? "relevant" : "not relevant";
    const body = document.createElement("div");
    renderItem(body, item);
    card.append(num, mark, body);
    card.addEventListener("click", () => toggle(i));
    results.appendChild(card);
  });
}

function toggle(i, value) {
  if (!page || i >= ticks.length) return;
  ticks[i] = value === undefined ? !ticks[i] : value;
  const card = $("results").children[i];
  card.setAttribute("aria-checked", String(ticks[i]));
  card.querySelector(".mark").textContent = ticks[i] ? "relevant" : "not relevant";
}

async function loadNext() {
  busy = true;
  try {
    const next = await api("/api/next");
    if (next.done) {
      page = null;
      ticks = [];
      $("query").replaceChildren();
      renderPage();
      message("Every item is labelled. Save the model or finish.");
      return;
    }
    page = next;
    ticks = page.results.map(() => false);
    renderPage();
    showError("");
  } catch (e) {
    showError(e.status === 401 ? "This page has no valid token: open the link printed when the labeler started." : `Could not load the next query (${e.message}).`);
  } finally {
    busy = false;
    setButtons();
  }
}

async function submit() {
  if (!page || busy) return;
  busy = true;
  setButtons();
  const body = JSON.stringify({
    submission_id: randomId(),
    query: page.query.id,
    model_version: page.model_version,
    marks: page.results.map((item, i) => ({ item: item.id, relevant: ticks[i] })),
  });
  // the same submission_id on every retry: the server stores it once
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      const ack = await api("/api/labels", { method: "POST", body });
      message(`Saved ${ticks.filter(Boolean).length} relevant of ${ticks.length}${ack.duplicate ? " (already stored)" : ""}.`);
      busy = false;
      await loadNext();
      refreshStatus();
      return;
    } catch (e) {
      if (e.status && e.status < 500) { showError(`Labels not saved: ${e.message}`); break; }
      await new Promise((r) => setTimeout(r, 500 * (attempt + 1)));
    }
  }
  busy = false;
  setButtons();
}

function setButtons() {
  $("submit").disabled = busy || !page;
  $("skip").disabled = busy || !page;
}

async function refreshStatus() {
  try {
    const s = await api("/api/status");
    $("model-version").textContent = `v${s.model_version}`;
    $("num-labels").textContent = s.num_labels;
    $("num-sessions").textContent = s.num_sessions;
    $("metric").textContent = s.session_mAP == null ? "-" : s.session_mAP.toFixed(3);
    const evalKey = Object.keys(s.eval || {}).find((k) => k.startsWith("mAP@"));
    $("eval-chip").hidden = !evalKey;
    if (evalKey) $("eval-metric").textContent = `${evalKey} ${s.eval[evalKey].toFixed(3)}`;
    $("training").hidden = !s.training;
    if (s.last_error) showError(`Last tuning round failed: ${s.last_error}`);
  } catch (e) {
    if (e.status === 401) showError("This page has no valid token: open the link printed when the labeler started.");
  }
}

async function action(path, done) {
  try {
    const r = await api(path, { method: "POST" });
    message(done(r));
    refreshStatus();
  } catch (e) {
    showError(`${path}: ${e.message}`);
  }
}

document.addEventListener("keydown", (ev) => {
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (ev.key >= "0" && ev.key <= "9") {
    toggle(ev.key === "0" ? 9 : Number(ev.key) - 1);
  } else if (ev.key === "Enter") {
    ev.preventDefault();
    submit();
  } else if (ev.key === "s" || ev.key === "S") {
    loadNext();
  } else if (ev.key === "a" || ev.key === "A") {
    ticks.forEach((_, i) => toggle(i, true));
  } else if (ev.key === "n" || ev.key === "N") {
    ticks.forEach((_, i) => toggle(i, false));
  }
});

document.addEventListener("DOMContentLoaded", () => {
  $("submit").addEventListener("click", submit);
  $("skip").addEventListener("click", loadNext);
  $("train").addEventListener("click", () => action("/api/train", (r) => r.queued ? "A tuning round is queued." : `Tuned: model v${r.model_version}.`));
  $("save").addEventListener("click", () => action("/api/save", (r) => `Model v${r.model_version} saved to ${r.path}.`));
  $("finish").addEventListener("click", () => action("/api/stop", () => "Finished: the model is saved and the server stops. You can close this tab."));
  if (!token) {
    showError("This page has no token: open the link printed when the labeler started.");
    return;
  }
  refreshStatus();
  loadNext();
  setInterval(refreshStatus, 1500);
});
