// The clustviz page: pick a dataset and a preamble, compare projectors side by side.
// The view lives in the URL (?dataset=&preamble=&projectors=a,b&seed=&batch=&map=&align=1), so
// it can be shared and the back button walks through it. No framework, no build step. The global
// map view is its own module (map.js); with align=1 the panels are asked for layouts aligned to
// the map in view (POST /projections with align).
import { getJson, requestJson } from "./api.js";
import { $, errorBox, formatSeconds, h } from "./dom.js";
import { MapView } from "./map.js";
import { clusterPalette, describe, drawProjection } from "./plot.js";

const PAGE_SIZE = 8;
const DEFAULT_PROJECTORS = ["tsne", "umap"];
const MAX_BUSY_RETRIES = 4;
const MAX_KEPT = 200; // projections kept in memory for instant back/forward

const enc = encodeURIComponent;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const catalog = { datasets: [], projectors: [] };
let view = { dataset: null, preamble: null, projectors: [], seed: null, batch: null, map: null, align: false };
let mapView = null; // the MapView, once the page has started
const search = { q: "", offset: 0, total: 0, items: [], controller: null, dataset: undefined };
const unknownProjectors = new Set(); // names met in URLs that the service does not offer
const preambleTexts = new Map(); // "dataset/preamble id" -> text
const done = new Map(); // projection URL -> response, for an instant redraw
const pending = new Map(); // projection URL -> Promise, so a view asked twice is fetched once

function showBanner(message) {
  const banner = $("banner");
  banner.textContent = message;
  banner.hidden = false;
}

// ---- the URL ------------------------------------------------------------------------------

function readUrl() {
  const params = new URLSearchParams(location.search);
  const listed = params.get("projectors");
  const projectors =
    listed === null ? [...DEFAULT_PROJECTORS] : listed.split(",").map((s) => s.trim()).filter(Boolean);
  const seed = params.get("seed");
  return {
    dataset: params.get("dataset"),
    preamble: params.get("preamble") || null,
    projectors: [...new Set(projectors)],
    seed: seed === null || seed === "" ? null : seed,
    batch: params.get("batch") || null,
    map: params.get("map") || null,
    align: params.get("align") === "1",
  };
}

function urlOf(v) {
  const parts = [];
  if (v.dataset) parts.push(`dataset=${enc(v.dataset)}`);
  if (v.preamble) parts.push(`preamble=${enc(v.preamble)}`);
  parts.push(`projectors=${v.projectors.map(enc).join(",")}`);
  if (v.seed !== null) parts.push(`seed=${enc(v.seed)}`);
  if (v.batch) parts.push(`batch=${enc(v.batch)}`);
  if (v.map) parts.push(`map=${enc(v.map)}`);
  if (v.map && v.align) parts.push("align=1");
  return `${location.pathname}?${parts.join("&")}`;
}

/** Go to a new view: a new history entry (when the URL changes), then draw it. */
function navigate(changes) {
  const next = { ...view, ...changes };
  const url = urlOf(next);
  if (url !== location.pathname + location.search) history.pushState(null, "", url);
  apply(next);
}

function apply(next) {
  view = next;
  syncControls();
  if (search.dataset !== view.dataset) {
    search.dataset = view.dataset;
    search.q = "";
    search.offset = 0;
    $("q").value = "";
    loadPreambles();
  } else {
    renderPreambleList();
  }
  mapView.sync(view);
  renderView();
  syncBatch();
}

// ---- controls -----------------------------------------------------------------------------

function syncControls() {
  const select = $("dataset");
  if (view.dataset && ![...select.options].some((o) => o.value === view.dataset)) {
    select.append(h("option", { value: view.dataset }, `${view.dataset} (unknown)`));
  }
  select.value = view.dataset ?? "";

  // Checkboxes are rebuilt only when a new name turns up (focus stays on the one just toggled).
  const box = $("projectors");
  const known = catalog.projectors.map((p) => p.name);
  for (const name of view.projectors) if (!known.includes(name)) unknownProjectors.add(name);
  const names = [...known, ...unknownProjectors];
  if ([...box.querySelectorAll("input")].map((i) => i.value).join() !== names.join()) {
    box.replaceChildren(
      h("legend", {}, "Projectors"),
      ...catalog.projectors.map((p) => projectorChoice(p.name, p.title, `min. ${p.min_points} points`)),
      ...[...unknownProjectors].map((name) => projectorChoice(name, name, "not offered by the service")),
    );
  }
  for (const input of box.querySelectorAll("input")) input.checked = view.projectors.includes(input.value);
  $("seed").value = view.seed ?? "";
}

function projectorChoice(name, title, note) {
  return h(
    "label",
    { class: "choice", title: note },
    h("input", { type: "checkbox", name: "projector", value: name }),
    ` ${title} `,
    title === name ? h("small", {}, "(unknown)") : h("code", {}, name),
  );
}

function bindControls() {
  $("dataset").addEventListener("change", (e) =>
    navigate({ dataset: e.target.value, preamble: null, map: null, align: false }),
  );
  $("projectors").addEventListener("change", () => {
    const checked = [...$("projectors").querySelectorAll("input:checked")].map((i) => i.value);
    navigate({ projectors: checked });
  });
  $("seed").addEventListener("change", (e) => navigate({ seed: e.target.value.trim() || null }));

  let timer = null;
  const runSearch = () => {
    clearTimeout(timer);
    if ($("q").value === search.q) return;
    search.q = $("q").value;
    search.offset = 0;
    loadPreambles();
  };
  $("q").addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(runSearch, 250);
  });
  $("search").addEventListener("submit", (e) => {
    e.preventDefault();
    runSearch();
  });
  $("prev").addEventListener("click", () => {
    search.offset = Math.max(0, search.offset - PAGE_SIZE);
    loadPreambles();
  });
  $("next").addEventListener("click", () => {
    search.offset += PAGE_SIZE;
    loadPreambles();
  });
  $("preamble-list").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-id]");
    if (button) navigate({ preamble: button.dataset.id });
  });
  $("batch-run").addEventListener("click", runBatch);
  $("batch-cancel").addEventListener("click", cancelBatch);
  $("batch-delete").addEventListener("click", deleteBatch);
  window.addEventListener("popstate", () => apply(readUrl()));
}

// ---- preambles ----------------------------------------------------------------------------

async function loadPreambles() {
  search.controller?.abort();
  const controller = (search.controller = new AbortController());
  const status = $("preamble-status");
  status.replaceChildren("loading preambles…");
  if (!view.dataset) {
    status.replaceChildren("No dataset is available.");
    return;
  }
  const query = new URLSearchParams({ limit: PAGE_SIZE, offset: search.offset });
  if (search.q) query.set("q", search.q);
  try {
    const page = await getJson(`/datasets/${enc(view.dataset)}/preambles?${query}`, {
      signal: controller.signal,
    });
    Object.assign(search, { total: page.total, items: page.items });
    for (const item of page.items) preambleTexts.set(`${view.dataset}/${item.id}`, item.text);
    status.replaceChildren(
      page.total ? "" : search.q ? `No preamble contains “${search.q}”.` : "This dataset has no preambles.",
    );
  } catch (error) {
    if (error.name === "AbortError") return;
    Object.assign(search, { total: 0, items: [] });
    status.replaceChildren(errorBox(error));
  }
  renderPreambleList();
  renderTitle();
}

function renderPreambleList() {
  $("preamble-list").replaceChildren(
    ...search.items.map((item) =>
      h(
        "li",
        {},
        h(
          "button",
          { type: "button", "data-id": item.id, "aria-pressed": String(item.id === view.preamble) },
          h("span", { class: "text" }, item.text),
          h("small", {}, `${item.n_points} guesses · ${item.n_clusters} clusters`),
        ),
      ),
    ),
  );
  const { offset, items, total } = search;
  $("page-info").textContent = total ? `${offset + 1}–${offset + items.length} of ${total}` : "";
  $("prev").disabled = offset === 0;
  $("next").disabled = offset + items.length >= total;
}

function renderTitle() {
  const title = $("preamble-title");
  if (!view.preamble) {
    title.replaceChildren();
    document.title = "clustviz";
    return;
  }
  const text = preambleTexts.get(`${view.dataset}/${view.preamble}`);
  title.replaceChildren(
    h("q", { class: "text" }, text ? `${text} …` : `preamble ${view.preamble}`),
    " ",
    h("small", {}, `id ${view.preamble}`),
  );
  document.title = text ? `clustviz — ${text}` : "clustviz";
}

// ---- projections --------------------------------------------------------------------------

function projectionQuery(v) {
  const query = new URLSearchParams({ preamble_id: v.preamble });
  if (v.seed !== null) query.set("seed", v.seed);
  return query.toString();
}

function renderView() {
  renderTitle();
  const hint = $("view-hint");
  const panels = $("panels");
  if (!view.preamble || !view.projectors.length) {
    hint.textContent = !view.preamble
      ? "Pick a preamble to see its guesses projected."
      : "Choose at least one projector.";
    panels.replaceChildren();
    return;
  }
  hint.textContent = "";
  // Panels already showing the same projection are kept as they are.
  const shown = new Map([...panels.children].map((panel) => [panel.dataset.url, panel]));
  panels.replaceChildren(
    ...view.projectors.map((name) => {
      const request = projectionRequest(name);
      return shown.get(request.key) ?? newPanel(name, request);
    }),
  );
}

/** How a panel gets its projection: a cacheable GET, or, aligned to the map in view, a POST
 * with `align` (aligned answers have no GET form). `key` names the answer (the panel's and the
 * memory cache's key); `waiting` while the map to align to is not done yet. */
function projectionRequest(name) {
  const query = projectionQuery(view);
  const url = `/projections/${enc(view.dataset)}/${enc(name)}?${query}`;
  if (!view.align || !view.map) return { key: url, url, query, load: () => getJson(url) };
  const body = {
    dataset: view.dataset,
    preamble_id: view.preamble,
    projector: name,
    align: { map: view.map },
  };
  // A seed that is not a whole number goes as typed: the service says what is wrong with it.
  if (view.seed !== null) body.seed = /^\d+$/.test(view.seed) ? Number(view.seed) : view.seed;
  const notReady = view.map === mapView.id ? mapView.notReady() : { text: "loading the map…" };
  return {
    key: `${notReady ? notReady.text : "aligned"} ${view.map} ${url}`,
    url,
    query,
    alignTo: view.map,
    notReady,
    load: () => requestJson("/projections", { method: "POST", body }),
  };
}

async function fetchProjection(request, onWait) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await request.load();
    } catch (error) {
      if (error.status !== 503 || attempt >= MAX_BUSY_RETRIES) throw error;
      const seconds = error.retryAfter || 5;
      onWait(`${error.detail} — trying again in ${seconds} s…`);
      await sleep(seconds * 1000);
    }
  }
}

function loadProjection(request, onWait) {
  const { key } = request;
  if (!pending.has(key)) {
    const promise = fetchProjection(request, onWait).then(
      (data) => {
        done.set(key, data);
        if (done.size > MAX_KEPT) done.delete(done.keys().next().value);
        pending.delete(key);
        return data;
      },
      (error) => {
        pending.delete(key);
        throw error;
      },
    );
    pending.set(key, promise);
  }
  return pending.get(key);
}

function newPanel(name, request) {
  const { key, url, query, alignTo } = request;
  const info = catalog.projectors.find((p) => p.name === name);
  const headingId = `panel-${name.replace(/[^\w-]/g, "_")}`;
  const links = h("span", { class: "links" });
  const badge = h("span", { class: "aligned" });
  const body = h("div", { class: "body" });
  const panel = h(
    "section",
    { class: "panel", "data-projector": name, "data-url": key, "aria-labelledby": headingId },
    h(
      "header",
      {},
      h("h3", { id: headingId }, info ? [info.title, " ", h("code", {}, name)] : name),
      badge,
      links,
    ),
    body,
  );
  const base = `/plots/${enc(view.dataset)}/${enc(name)}`;
  const file = `${name}-${view.preamble}`;
  const show = (data) => {
    if (data.aligned_to) {
      // In the map's frame: the server's plot of the preamble on the map is the image to save.
      const plot = `/maps/${enc(data.aligned_to.map)}/plot`;
      const on = `preamble_id=${enc(data.preamble_id)}`;
      links.replaceChildren(
        h("a", { href: `${plot}.png?${on}`, download: `map-${file}.png` }, "Map PNG"),
        h("a", { href: `${plot}.svg?${on}`, download: `map-${file}.svg` }, "Map SVG"),
      );
      panel.dataset.alignedTo = data.aligned_to.map;
      badge.replaceChildren("aligned to map ", h("code", {}, data.aligned_to.map.slice(0, 8)));
      const weight = data.aligned_to.params?.weight ?? "default";
      badge.title = `layout moved onto map ${data.aligned_to.map} (weight ${weight})`;
    } else {
      links.replaceChildren(
        h("a", { href: `${base}.png?${query}`, download: `${file}.png` }, "PNG"),
        h("a", { href: `${base}.svg?${query}`, download: `${file}.svg` }, "SVG"),
        h("a", { href: url }, "JSON"),
      );
    }
    preambleTexts.set(`${data.dataset}/${data.preamble_id}`, data.preamble);
    renderTitle();
    body.replaceChildren(...renderResult(data, info?.title ?? name));
    panel.removeAttribute("aria-busy");
  };
  if (done.has(key)) {
    show(done.get(key));
    return panel;
  }
  panel.setAttribute("aria-busy", "true");
  if (request.notReady) {
    // Drawn again, and asked for, when the map's state changes (MapView's stateChanged).
    const { text, final } = request.notReady;
    if (final) panel.removeAttribute("aria-busy");
    body.replaceChildren(
      final
        ? errorBox({ code: "map_not_ready", detail: text })
        : h("p", { class: "status computing", role: "status" }, text),
    );
    return panel;
  }
  const computing = alignTo ? "computing, aligned to the map…" : "computing…";
  const status = h("p", { class: "status computing", role: "status" }, computing);
  body.replaceChildren(status);
  loadProjection(request, (message) => status.replaceChildren(message)).then(show, (error) => {
    panel.removeAttribute("aria-busy");
    body.replaceChildren(errorBox(error));
  });
  return panel;
}

const METRICS = [
  ["knn_preservation", "kNN preservation", "share of high-D nearest neighbours kept in 2-D"],
  ["trustworthiness", "trustworthiness", "no false neighbours in 2-D (1 is best)"],
  ["overlap_mean", "overlap |R_H − R_L| mean", "cluster-overlap discrepancy, lower is better"],
  ["overlap_max", "overlap |R_H − R_L| max", "worst cluster pair, lower is better"],
  ["silhouette", "silhouette", "separation of the clusters in 2-D"],
];

const num = (v, digits = 3) => (typeof v === "number" ? v.toFixed(digits) : v === null ? "—" : String(v));

function renderResult(data, title) {
  const plot = h("div", { class: "plot" });
  const tooltip = h("div", { class: "tooltip", role: "tooltip", hidden: true });
  const svg = drawProjection(data, `${title} projection of ${data.n_points} guesses`);
  plot.append(svg, tooltip);
  bindHover(svg, tooltip, plot, data);
  const legend = h(
    "ul",
    { class: "legend", "aria-label": "clusters" },
    [...clusterPalette(data)].map(([id, color]) =>
      h("li", {}, h("span", { class: "swatch", style: `background:${color}` }), String(id)),
    ),
  );

  const timing = data.cached ? "cached" : `computed in ${Math.round(data.timings.compute_ms)} ms`;
  const metrics = h(
    "dl",
    { class: "metrics" },
    METRICS.filter(([key]) => key in data.metrics).map(([key, label, help]) => [
      h("dt", { title: help }, label),
      h("dd", { "data-metric": key }, num(data.metrics[key])),
    ]),
    data.overlap
      ? [
          h("dt", { title: "clusterplot's optimisation: before → after" }, "cluster overlap (layout)"),
          h(
            "dd",
            { "data-metric": "overlap" },
            `mean ${num(data.overlap.before.mean)} → ${num(data.overlap.after.mean)}, ` +
              `max ${num(data.overlap.before.max)} → ${num(data.overlap.after.max)}`,
          ),
        ]
      : [],
  );
  const notes = data.notes.length
    ? h("ul", { class: "notes", "aria-label": "notes" }, data.notes.map((note) => h("li", {}, note)))
    : null;
  const params = h(
    "details",
    { class: "params" },
    h("summary", {}, `Parameters used (${Object.keys(data.params).length})`),
    h(
      "table",
      {},
      h("tbody", {}, Object.entries(data.params).map(([key, value]) =>
        h("tr", {}, h("th", { scope: "row" }, key), h("td", {}, JSON.stringify(value))),
      )),
    ),
  );
  const summary = h(
    "p",
    { class: "summary" },
    `${data.n_points} guesses · ${data.n_clusters} clusters · seed ${data.seed} · ${timing} · ${data.device}`,
  );
  return [plot, legend, h("div", { class: "meta" }, summary, metrics, notes, params)];
}

/** Hover or focus a guess: its details in a tooltip; the same guess and its cluster stand out in
 * every panel, so projectors can be compared point by point. */
function bindHover(svg, tooltip, plot, data) {
  const enter = (event) => {
    const text = event.target.closest?.("text.guess");
    if (!text) return;
    const point = data.points[Number(text.dataset.i)];
    tooltip.replaceChildren(
      h("strong", {}, point.guess),
      h("span", {}, `cluster ${point.cluster_id}`),
      h("span", {}, `logit ${point.logit.toFixed(2)}`),
    );
    tooltip.setAttribute("aria-label", describe(point));
    tooltip.hidden = false;
    const box = text.getBoundingClientRect();
    const frame = plot.getBoundingClientRect();
    const left = Math.min(Math.max(0, box.left - frame.left + box.width / 2 - tooltip.offsetWidth / 2),
      frame.width - tooltip.offsetWidth);
    const above = box.top - frame.top - tooltip.offsetHeight - 6;
    tooltip.style.left = `${left}px`;
    tooltip.style.top = `${above >= 0 ? above : box.bottom - frame.top + 6}px`;
    highlight(text.dataset.i, text.dataset.cluster);
  };
  const leave = (event) => {
    if (!event.target.closest?.("text.guess")) return;
    tooltip.hidden = true;
    highlight(null, null);
  };
  svg.addEventListener("pointerover", enter);
  svg.addEventListener("pointerout", leave);
  svg.addEventListener("focusin", enter);
  svg.addEventListener("focusout", leave);
}

function highlight(index, cluster) {
  for (const svg of document.querySelectorAll("svg.projection")) {
    svg.classList.toggle("focused", index !== null);
    for (const node of svg.querySelectorAll("[data-cluster]")) {
      node.classList.toggle("kin", node.dataset.cluster === cluster);
      node.classList.toggle("hit", index !== null && node.dataset.i === index);
    }
  }
}


// ---- batch jobs ---------------------------------------------------------------------------
// One job at a time, its id in the URL (&batch=): on load its status is fetched, then followed
// through Server-Sent Events while it is active.

const ACTIVE = new Set(["queued", "running"]);
const batch = {
  id: null, // the job shown
  status: null, // its last status
  at: 0, // performance.now() when that status arrived (elapsed time ticks on from there)
  source: null, // EventSource while following
  ticker: null, // interval updating the elapsed time
  generation: 0, // bumped on each attach: answers for a job no longer shown are dropped
  starting: false,
  loadFailed: false, // its status could not be fetched
};

const isActive = (status) => status !== null && ACTIVE.has(status.state);

/** Keeps the batch section in step with the view (called from apply). */
function syncBatch() {
  const titles = view.projectors.map(
    (name) => catalog.projectors.find((p) => p.name === name)?.title ?? name,
  );
  const seed = view.seed === null ? "" : `, seed ${view.seed}`;
  $("batch-hint").textContent = !view.dataset
    ? "No dataset is selected."
    : titles.length
      ? `Runs ${titles.join(", ")} on every preamble of this dataset${seed}, as one job.`
      : "Check at least one projector to run a batch.";
  updateRunButton();
  if ((view.batch ?? null) !== batch.id) attachBatch(view.batch ?? null);
}

function batchError(error) {
  $("batch-error").replaceChildren(error ? errorBox(error) : "");
}

/** Show job `id` (null: none); with `initial`, its status is already known. */
function attachBatch(id, initial = null) {
  batch.source?.close();
  clearInterval(batch.ticker);
  Object.assign(batch, { id, status: null, source: null, ticker: null, loadFailed: false });
  const generation = ++batch.generation;
  batchError(null);
  $("batch-failed").replaceChildren();
  if (!id) {
    renderBatch();
    return;
  }
  if (initial) {
    setBatchStatus(initial);
    if (isActive(initial)) followBatch(generation);
  } else {
    renderBatch();
    refreshBatch(generation);
  }
}

/** GET the full status (with the failed items); follow the events while the job is active. */
async function refreshBatch(generation) {
  try {
    const status = await getJson(`/batches/${enc(batch.id)}`);
    if (generation !== batch.generation) return;
    setBatchStatus(status);
    if (isActive(status) && !batch.source) followBatch(generation);
  } catch (error) {
    if (generation !== batch.generation) return;
    batch.loadFailed = true;
    batchError(error);
    renderBatch();
  }
}

function followBatch(generation) {
  const source = new EventSource(`/batches/${enc(batch.id)}/events`);
  batch.source = source;
  const stale = () => generation !== batch.generation || batch.source !== source;
  const stop = () => {
    source.close();
    if (batch.source === source) batch.source = null;
  };
  // Each event has an id (a progress event's: items finished so far); after a dropped
  // connection the browser reconnects with Last-Event-ID and the server goes on from there.
  // Anything at or below the last id handled is dropped, so nothing is counted twice.
  let lastId = -1;
  const fresh = (event) => {
    const id = Number.parseInt(event.lastEventId, 10);
    if (Number.isNaN(id)) return true;
    if (id <= lastId) return false;
    lastId = id;
    return true;
  };
  // The events carry no per-item errors: those come with the final GET.
  source.addEventListener("progress", (event) => {
    if (!stale() && fresh(event)) setBatchStatus(JSON.parse(event.data), { keepErrors: true });
  });
  source.addEventListener("end", (event) => {
    if (stale()) return stop();
    stop();
    setBatchStatus(JSON.parse(event.data), { keepErrors: true });
    refreshBatch(generation);
  });
  source.addEventListener("error", () => {
    if (stale()) return stop();
    // A transient error leaves the stream open. CONNECTING: the browser reconnects on its own,
    // with Last-Event-ID. CLOSED: it gave up (or the server said 204: it had the end); ask
    // for the status again shortly.
    if (source.readyState === EventSource.CLOSED) {
      stop();
      sleep(2000).then(() => generation === batch.generation && !batch.source && refreshBatch(generation));
    }
  });
}

function setBatchStatus(status, { keepErrors = false } = {}) {
  if (keepErrors && batch.status) status = { ...status, errors: batch.status.errors };
  batch.status = status;
  batch.at = performance.now();
  if (!isActive(status)) {
    batch.source?.close();
    batch.source = null;
  }
  clearInterval(batch.ticker);
  batch.ticker = isActive(status) && status.started ? setInterval(renderElapsed, 1000) : null;
  renderBatch();
}

function renderElapsed() {
  const status = batch.status;
  let text = "";
  if (status?.elapsed_s != null) {
    const ticking = isActive(status) ? (performance.now() - batch.at) / 1000 : 0;
    text = `· ${formatSeconds(status.elapsed_s + ticking)}`;
  } else if (status?.state === "queued") {
    text = "· waiting to start";
  }
  $("batch-elapsed").textContent = text;
}

function updateRunButton() {
  $("batch-run").disabled =
    !view.dataset || !view.projectors.length || batch.starting || isActive(batch.status);
}

function renderBatch() {
  updateRunButton();
  const job = $("batch-job");
  const status = batch.status;
  job.hidden = !batch.id || (!status && batch.loadFailed); // nothing to show but the error
  if (!batch.id) return;
  $("batch-id").textContent = batch.id;
  const stateNode = $("batch-state");
  stateNode.textContent = status?.state ?? "loading…";
  stateNode.dataset.state = status?.state ?? "";

  const total = status?.total ?? 0;
  const finished = status ? status.done + status.failed : 0;
  const bar = $("batch-progress");
  bar.setAttribute("aria-valuemax", String(total));
  bar.setAttribute("aria-valuenow", String(finished));
  const valueText = status ? `${finished} of ${total} items, ${status.failed} failed` : "loading";
  bar.setAttribute("aria-valuetext", valueText);
  const share = (n) => (total ? `${(100 * n) / total}%` : "0%");
  bar.querySelector(".bar-done").style.width = share(status?.done ?? 0);
  bar.querySelector(".bar-failed").style.width = share(status?.failed ?? 0);
  $("batch-counts").textContent = status ? `${finished} / ${total} items · ${status.failed} failed` : "";
  renderElapsed();

  const active = isActive(status);
  $("batch-cancel").hidden = !active;
  $("batch-delete").hidden = !status || active;

  const results = $("batch-results");
  results.hidden = !status || active || status.done === 0;
  if (!results.hidden) {
    const base = `/batches/${enc(batch.id)}/results`;
    results.replaceChildren(
      "Results: ",
      ...[
        ["parquet", "Parquet", "parquet"],
        ["arrow", "Arrow", "arrows"],
        ["json", "JSON", "json"],
      ].map(([format, label, ext]) =>
        h("a", { href: `${base}?format=${format}`, download: `batch-${batch.id}.${ext}` }, label),
      ),
    );
  }

  const errors = status?.errors ?? [];
  $("batch-failed").replaceChildren(
    ...(status && status.failed && !active
      ? [
          h(
            "h3",
            { id: "batch-failed-heading" },
            errors.length < status.failed
              ? `Failed items (first ${errors.length} of ${status.failed})`
              : `Failed items (${status.failed})`,
          ),
          h(
            "ul",
            { class: "failed-items", "aria-labelledby": "batch-failed-heading" },
            errors.map((e) =>
              h(
                "li",
                {},
                h("q", {}, e.preamble),
                " ",
                h("code", {}, e.projector),
                h("div", { class: "error-line" }, h("strong", {}, e.code ?? "error"), " ", e.detail ?? ""),
              ),
            ),
          ),
        ]
      : []),
  );
}

async function runBatch() {
  batchError(null);
  batch.starting = true;
  renderBatch();
  const body = { dataset: view.dataset, preambles: "all", projectors: view.projectors };
  // A seed that is not a whole number goes as typed: the service says what is wrong with it.
  if (view.seed !== null) body.seed = /^\d+$/.test(view.seed) ? Number(view.seed) : view.seed;
  try {
    const status = await requestJson("/batches", { method: "POST", body });
    batch.starting = false;
    attachBatch(status.id, status);
    navigate({ batch: status.id });
  } catch (error) {
    batch.starting = false;
    batchError(error);
    renderBatch();
  }
}

async function cancelBatch() {
  const generation = batch.generation;
  const button = $("batch-cancel");
  button.disabled = true;
  try {
    const status = await requestJson(`/batches/${enc(batch.id)}/cancel`, { method: "POST" });
    if (generation !== batch.generation) return;
    setBatchStatus(status, { keepErrors: true });
    refreshBatch(generation); // the failed items so far
  } catch (error) {
    if (generation === batch.generation) batchError(error);
  } finally {
    button.disabled = false;
  }
}

async function deleteBatch() {
  const generation = batch.generation;
  const button = $("batch-delete");
  button.disabled = true;
  try {
    await requestJson(`/batches/${enc(batch.id)}`, { method: "DELETE" });
    if (generation !== batch.generation) return;
    navigate({ batch: null });
    $("batch-run").focus();
  } catch (error) {
    if (generation === batch.generation) batchError(error);
  } finally {
    button.disabled = false;
  }
}

// ---- start --------------------------------------------------------------------------------

async function start() {
  bindControls();
  mapView = new MapView({
    navigate,
    preambleText: (id, text) => preambleTexts.set(`${view.dataset}/${id}`, text),
    stateChanged: () => renderView(), // aligned panels wait for the map to be done
  });
  try {
    [catalog.datasets, catalog.projectors] = await Promise.all([
      getJson("/datasets"),
      getJson("/projectors"),
    ]);
  } catch (error) {
    showBanner(`The service could not list its datasets and projectors: ${error.detail ?? error}`);
    return;
  }
  const select = $("dataset");
  select.replaceChildren(
    ...catalog.datasets.map((d) =>
      h(
        "option",
        { value: d.id, title: d.error ?? d.name },
        d.status === "invalid" ? `${d.name} (invalid)` : d.name,
      ),
    ),
  );
  select.disabled = false;
  const initial = readUrl();
  if (!initial.dataset) {
    const usable = catalog.datasets.find((d) => d.status !== "invalid") ?? catalog.datasets[0];
    initial.dataset = usable?.id ?? null;
    history.replaceState(null, "", urlOf(initial));
  }
  apply(initial);
}

window.addEventListener("error", (event) => showBanner(`Page error: ${event.message}`));
window.addEventListener("unhandledrejection", (event) =>
  showBanner(`Page error: ${event.reason?.message ?? event.reason}`),
);
start();
