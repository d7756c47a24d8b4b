// Live progress for the divsweep results page.
// Each unfinished experiment row gets an EventSource on its /events stream; every `result`
// event triggers a (throttled) refresh of the row from GET /v1/experiments/{id}, and the final
// `status` event closes the stream (and reloads a single-experiment page to show the plot).
"use strict";

// The lifecycles come from the API (GET /v1/lifecycle), not from a list kept here.
const LIFECYCLE = fetch("/v1/lifecycle").then((r) => r.json());

function render(row, exp, lc) {
  const p = exp.progress;
  row.dataset.status = exp.status;
  row.dataset.refreshed = String(Number(row.dataset.refreshed || "0") + 1);
  const status = row.querySelector(".status");
  status.textContent = exp.status;
  status.className = "status status-" + exp.status;
  if (!p) return;
  const done = lc.trial.terminal.reduce((n, state) => n + (p[state] || 0), 0);
  const bar = row.querySelector("progress");
  bar.max = p.n_trials;
  bar.value = done;
  row.querySelector(".counts").textContent =
    `${done}/${p.n_trials} trials done, ${p.running} running, ${p.results} results`;
  row.querySelector(".best").textContent = p.best === null ? "" : p.best.toPrecision(4);
  row.dataset.results = String(p.results);
}

async function refresh(row) {
  const r = await fetch(`/v1/experiments/${row.dataset.id}`);
  if (r.ok) render(row, await r.json(), await LIFECYCLE);
}

async function watch(row) {
  const lc = await LIFECYCLE;
  if (lc.experiment.terminal.includes(row.dataset.status)) return;
  const since = row.dataset.results || "0";
  const es = new EventSource(`/v1/experiments/${row.dataset.id}/events?since=${since}`);
  let pending = null;
  es.addEventListener("result", () => {
    if (pending) return;
    pending = setTimeout(() => { pending = null; refresh(row); }, 300);
  });
  es.addEventListener("status", (ev) => {
    es.close();
    render(row, JSON.parse(ev.data), lc);
    if (location.pathname.startsWith("/experiments/")) location.reload();
  });
}

async function addNewRows() {
  const body = document.querySelector("#experiments tbody");
  if (!body || location.pathname !== "/") return;
  const r = await fetch("/v1/experiments?limit=20");
  if (!r.ok) return;
  const known = new Set([...body.querySelectorAll("tr.exp")].map((tr) => tr.dataset.id));
  const fresh = (await r.json()).items.filter((e) => !known.has(e.id));
  if (fresh.length) location.reload();  // the server renders rows; reloading keeps one renderer
}

document.querySelectorAll("tr.exp").forEach((row) => { refresh(row); watch(row); });
setInterval(addNewRows, 5000);
