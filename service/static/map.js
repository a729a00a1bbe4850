// The map view: every guess of the dataset in one global map (POST /maps), built with a
// progress bar fed by the map's event stream, drawn on a canvas (mapcanvas.js), with the
// selected preamble's guesses highlighted and labelled. Hovering a point shows its guess,
// preamble and cluster; clicking it selects its preamble. The map in view and whether the
// per-preamble panels are aligned to it live in the URL (&map=<id>&align=1), like the rest
// of the view; app.js owns the URL and calls `sync` with each new view.
import { getJson, requestJson } from "./api.js";
import { clusterColors } from "./colors.js";
import { $, errorBox, formatSeconds, h } from "./dom.js";
import { MapCanvas, clusterRanks } from "./mapcanvas.js";

const ACTIVE = new Set(["queued", "running"]);
const enc = encodeURIComponent;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const isActive = (status) => status !== null && ACTIVE.has(status.state);

/** "opentsne · points · done" for a map's status. */
function describeMap(status) {
  const request = status.spec?.request ?? {};
  const plan = status.spec?.plan ?? {};
  const method = plan.method ?? request.method ?? "map";
  const fitOn = plan.fit_on ?? request.fit_on ?? "";
  return [method, fitOn, status.state].filter(Boolean).join(" · ");
}

/** A whole map's points as typed columns. The `columns` form of the points route sends each
 * column as one JSON array and each preamble's text once, so a map of 10^5 rows is a few MB
 * that parse in one JSON.parse, where the row form repeats every key and preamble per row. */
async function loadPoints(mapId, signal) {
  const started = performance.now();
  const data = await getJson(`/maps/${enc(mapId)}/points?format=columns`, { signal });
  const points = {
    n: data.n,
    preambles: data.preambles,
    preambleIds: data.preamble_ids,
    preambleIndex: Int32Array.from(data.preamble_index),
    guess: data.guess,
    clusterId: Int32Array.from(data.cluster_id),
    x: Float32Array.from(data.x),
    y: Float32Array.from(data.y),
  };
  points.rowOf = new Map(points.preambleIds.map((id) => [id, []])); // preamble id -> its rows
  for (let i = 0; i < points.n; i++) points.rowOf.get(points.preambleIds[points.preambleIndex[i]]).push(i);
  points.loadMs = performance.now() - started;
  return points;
}

export class MapView {
  /**
   * @param {object} handlers navigate(changes) to change the view (the URL); preambleText(id,
   *   text) to tell the page a preamble's text; stateChanged() when the state of the map in
   *   view changes (aligned panels wait for it to be done).
   */
  constructor({ navigate, preambleText, stateChanged }) {
    Object.assign(this, { navigate, preambleText, stateChanged });
    this.view = {};
    this.dataset = undefined; // the dataset whose maps are listed
    this.maps = []; // its maps' statuses, newest first
    this.id = null; // the map shown
    this.status = null; // its last status
    this.source = null; // EventSource while following
    this.generation = 0; // bumped on each attach: answers for a map no longer shown are dropped
    this.points = null; // the shown map's columns, once loaded
    this.canvas = null; // its MapCanvas
    this.controller = null; // aborts a points download no longer wanted
    this.bind();
  }

  bind() {
    $("map-choice").addEventListener("change", (e) => this.navigate({ map: e.target.value || null }));
    $("map-build").addEventListener("submit", (e) => {
      e.preventDefault();
      this.build();
    });
    $("map-align").addEventListener("change", (e) => this.navigate({ align: e.target.checked }));
    $("map-reset").addEventListener("click", () => this.canvas?.resetView());
  }

  /** The page's view changed: list the dataset's maps, show the map in view, highlight. */
  sync(view) {
    this.view = view;
    if (this.dataset !== view.dataset) {
      this.dataset = view.dataset;
      this.listMaps();
    }
    if ((view.map ?? null) !== this.id) this.attach(view.map ?? null);
    this.renderControls();
    this.renderHighlight();
  }

  /** The id of the map in view if it is done (panels can be aligned to it), else null. */
  readyMap() {
    return this.status?.state === "done" ? this.id : null;
  }

  /** Why panels cannot be aligned to the map in view yet: {text, final} (final: it never will
   * be, as a failed map), or null when it is done. */
  notReady() {
    const state = this.status?.state;
    if (state === "done") return null;
    const name = `map ${(this.id ?? "").slice(0, 8)}`;
    if (!state || isActive(this.status)) return { text: `waiting for ${name} to be done…`, final: false };
    return { text: `${name} is ${state}: the panels cannot be aligned to it`, final: true };
  }

  // ---- the dataset's maps -------------------------------------------------------------------

  async listMaps() {
    const dataset = this.dataset;
    try {
      const all = await getJson("/maps");
      if (dataset !== this.dataset) return;
      this.maps = all.filter((m) => m.spec?.dataset === dataset && m.state !== "deleted");
    } catch (error) {
      this.maps = [];
      $("map-error").replaceChildren(errorBox(error));
    }
    this.renderControls();
  }

  renderControls() {
    const choice = $("map-choice");
    const listed = [...this.maps];
    if (this.id && !listed.some((m) => m.id === this.id)) {
      listed.unshift(this.status ?? { id: this.id, state: "loading…", spec: {} });
    }
    const options = [
      ["", listed.length ? "No map" : "No map of this dataset yet"],
      ...listed.map((m) => [m.id, `${describeMap(m)} (${m.id.slice(0, 8)})`]),
    ];
    // Rebuilt only when an entry changes: progress events come often, and rebuilding would
    // close the list in a user's hands.
    const shown = [...choice.options].map((o) => [o.value, o.text]);
    if (JSON.stringify(shown) !== JSON.stringify(options)) {
      choice.replaceChildren(...options.map(([value, text]) => h("option", { value }, text)));
    }
    choice.value = this.id ?? "";
    $("map-build-button").disabled = !this.view.dataset || this.building;
    const align = $("map-align");
    align.checked = Boolean(this.view.align);
    align.disabled = !this.readyMap() && !this.view.align;
    $("map-align-hint").textContent = !this.id
      ? "Build or choose a map to align the panels to it."
      : this.readyMap()
        ? ""
        : "The panels can be aligned once the map is done.";
  }

  async build() {
    $("map-error").replaceChildren();
    const body = { dataset: this.view.dataset, method: $("map-method").value, fit_on: $("map-fit-on").value };
    const params = $("map-params").value.trim();
    if (params) {
      try {
        body.params = JSON.parse(params);
      } catch (error) {
        $("map-error").replaceChildren(
          errorBox({ code: "invalid_params", detail: `parameters are not JSON: ${error.message}` }),
        );
        return;
      }
    }
    this.building = true;
    this.renderControls();
    try {
      // 202 and a queued map, or 200 and a map already done: the same request names the same map.
      const status = await requestJson("/maps", { method: "POST", body });
      this.building = false;
      this.maps = [status, ...this.maps.filter((m) => m.id !== status.id)];
      if (status.id === this.id) this.setStatus(status, this.generation); // the map shown
      else this.attach(status.id, status);
      this.navigate({ map: status.id });
    } catch (error) {
      this.building = false;
      $("map-error").replaceChildren(errorBox(error));
      this.renderControls();
    }
  }

  // ---- following one map ------------------------------------------------------------------

  /** Show map `id` (null: none); with `initial`, its status is already known. */
  attach(id, initial = null) {
    this.source?.close();
    this.controller?.abort();
    this.canvas?.destroy();
    Object.assign(this, { id, status: null, source: null, points: null, canvas: null });
    const generation = ++this.generation;
    $("map-error").replaceChildren();
    $("map-canvas-box").replaceChildren();
    $("map-summary").textContent = "";
    if (!id) {
      this.renderStatus();
      return;
    }
    if (initial) this.setStatus(initial, generation);
    else this.refresh(generation);
  }

  async refresh(generation) {
    try {
      const status = await getJson(`/maps/${enc(this.id)}`);
      if (generation === this.generation) this.setStatus(status, generation);
    } catch (error) {
      if (generation !== this.generation) return;
      $("map-error").replaceChildren(errorBox(error));
      this.renderStatus();
    }
  }

  setStatus(status, generation) {
    const before = this.status?.state;
    this.status = status;
    this.maps = this.maps.map((m) => (m.id === status.id ? status : m));
    this.renderStatus();
    this.renderControls();
    if (isActive(status)) {
      if (!this.source) this.follow(generation);
    } else {
      this.source?.close();
      this.source = null;
    }
    if (status.state !== before) {
      if (status.state === "done") this.show(generation);
      this.stateChanged();
    }
  }

  /** Progress from the map's Server-Sent Events (each carries the whole status). */
  follow(generation) {
    const source = new EventSource(`/maps/${enc(this.id)}/events`);
    this.source = source;
    const stale = () => generation !== this.generation || this.source !== source;
    const stop = () => {
      source.close();
      if (this.source === source) this.source = null;
    };
    const onStatus = (event) => {
      if (stale()) return stop();
      this.setStatus(JSON.parse(event.data), generation);
    };
    source.addEventListener("progress", onStatus);
    source.addEventListener("end", (event) => {
      onStatus(event);
      stop();
    });
    source.addEventListener("error", () => {
      if (stale()) return stop();
      // CONNECTING: the browser reconnects by itself (Last-Event-ID). CLOSED: it gave up;
      // ask for the status again shortly, which follows again while the map is active.
      if (source.readyState === EventSource.CLOSED) {
        stop();
        sleep(2000).then(() => generation === this.generation && !this.source && this.refresh(generation));
      }
    });
  }

  renderStatus() {
    const status = this.status;
    const box = $("map-job");
    box.hidden = !this.id;
    if (!this.id) return;
    const state = $("map-state");
    state.textContent = status?.state ?? "loading…";
    state.dataset.state = status?.state ?? "";
    const percent = Math.round(100 * (status?.progress ?? 0));
    const bar = $("map-progress");
    bar.setAttribute("aria-valuenow", String(percent));
    bar.setAttribute("aria-valuetext", status ? `${percent} %, ${status.stage ?? status.state}` : "loading");
    bar.querySelector(".bar-done").style.width = `${percent}%`;
    const elapsed = status?.elapsed_s == null ? "" : ` · ${formatSeconds(status.elapsed_s)}`;
    $("map-stage").textContent = status ? `${status.stage ?? status.state} · ${percent} %${elapsed}` : "";
    if (status?.state === "failed" && status.error) {
      $("map-error").replaceChildren(errorBox({ code: status.error.code, detail: status.error.detail }));
    }
    // The map view says what it waits for until the points are drawn.
    if (isActive(status)) $("map-summary").textContent = `Building the map: ${$("map-stage").textContent}`;
    else if (status && status.state !== "done") {
      $("map-summary").textContent =
        status.state === "failed"
          ? "This map failed; the Global map box says why."
          : `This map is ${status.state}.`;
    }
  }

  // ---- the canvas ---------------------------------------------------------------------------

  async show(generation) {
    const summary = $("map-summary");
    summary.textContent = "loading the map's points…";
    this.controller = new AbortController();
    let points;
    try {
      points = await loadPoints(this.id, this.controller.signal);
    } catch (error) {
      if (error.name === "AbortError" || generation !== this.generation) return;
      summary.replaceChildren(errorBox(error));
      return;
    }
    if (generation !== this.generation) return;
    this.points = points;
    const canvas = h("canvas", {
      class: "map-canvas",
      role: "img",
      tabindex: 0,
      "aria-label":
        `Global map of ${points.n} guesses; the selected preamble's guesses are labelled. ` +
        "Keys: + and - zoom, arrows pan, 0 resets.",
    });
    const tooltip = h("div", { class: "tooltip", role: "tooltip", hidden: true });
    $("map-canvas-box").replaceChildren(canvas, tooltip);
    this.canvas = new MapCanvas(canvas, points, {
      onHover: (index, at) => this.showTooltip(tooltip, index, at),
      onPick: (index) => this.pick(index),
    });
    const summaryOf = this.status.summary ?? {};
    const seconds = (points.loadMs / 1000).toFixed(1);
    summary.textContent =
      `${points.n.toLocaleString("en")} guesses · ` +
      `${points.preambles.length.toLocaleString("en")} preambles · ` +
      `${describeMap(this.status)} · seed ${summaryOf.seed ?? "?"} · points loaded in ${seconds} s`;
    this.renderHighlight();
  }

  /** The selected preamble's guesses highlighted, in the per-preamble panels' palette. */
  renderHighlight() {
    $("map-view").hidden = !this.id;
    if (!this.canvas) return;
    const rows = this.view.preamble ? this.points.rowOf.get(this.view.preamble) : null;
    const legend = $("map-legend");
    if (!rows) {
      this.canvas.highlight(null, null);
      legend.textContent = this.view.preamble
        ? `Preamble ${this.view.preamble} is not in this map.`
        : "Every guess, coloured by cluster. Pick a preamble (or click a point) to label its guesses.";
      return;
    }
    const ids = rows.map((i) => this.points.clusterId[i]);
    const ranks = clusterRanks(ids);
    const palette = clusterColors(ranks.size);
    this.canvas.highlight(Int32Array.from(rows), ids.map((id) => palette[ranks.get(id)]));
    const text = this.points.preambles[this.points.preambleIndex[rows[0]]];
    legend.textContent = `Labelled: the ${rows.length} guesses of “${text} …”; the rest dimmed.`;
  }

  showTooltip(tooltip, index, at) {
    if (index === null) {
      tooltip.hidden = true;
      return;
    }
    const { guess, preambles, preambleIndex, clusterId } = this.points;
    tooltip.replaceChildren(
      h("strong", {}, guess[index]),
      h("span", { class: "tooltip-preamble" }, `${preambles[preambleIndex[index]]} …`),
      h("span", {}, `cluster ${clusterId[index]}`),
    );
    tooltip.hidden = false;
    const frame = tooltip.parentElement.getBoundingClientRect();
    const left = Math.min(Math.max(0, at.x + 12), frame.width - tooltip.offsetWidth);
    const top = at.y - tooltip.offsetHeight - 10;
    tooltip.style.left = `${left}px`;
    tooltip.style.top = `${top >= 0 ? top : at.y + 14}px`;
  }

  /** A click on a point opens its preamble, as the preamble list does. */
  pick(index) {
    const { preambles, preambleIds, preambleIndex } = this.points;
    const k = preambleIndex[index];
    this.preambleText(preambleIds[k], preambles[k]);
    this.navigate({ preamble: preambleIds[k] });
  }
}
