// One projection drawn as SVG: each guess a <text> in its cluster's colour, clusterplot hulls
// as translucent blobs of the same colour underneath.
import { clusterColors } from "./colors.js";

const SVG = "http://www.w3.org/2000/svg";
const W = 480;
const H = 360;
const PAD_X = 44; // room for a label centred on an extreme point
const PAD_Y = 16;

function el(name, attrs = {}) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

const fmt = (v, digits = 2) => (Number.isFinite(v) ? v.toFixed(digits) : String(v));

/** Text describing one point, for the tooltip and for screen readers. */
export function describe(point) {
  return `${point.guess} — cluster ${point.cluster_id}, logit ${fmt(point.logit)}`;
}

/** Cluster id -> colour for a projection response, in ascending cluster-id order. */
export function clusterPalette(data) {
  const colors = clusterColors(data.n_clusters);
  const labelOf = new Map(data.points.map((p) => [p.cluster_id, p.label]));
  return new Map([...labelOf].sort(([a], [b]) => a - b).map(([id, label]) => [id, colors[label]]));
}

/** An <svg> for a projection response; `title` names it for assistive technology. */
export function drawProjection(data, title) {
  const palette = clusterPalette(data);
  const colorOf = (clusterId) => palette.get(clusterId) ?? "#666666";

  const xs = data.points.map((p) => p.x);
  const ys = data.points.map((p) => p.y);
  for (const hull of data.hulls ?? []) {
    for (const polygon of hull.polygons) {
      for (const [x, y] of polygon) {
        xs.push(x);
        ys.push(y);
      }
    }
  }
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const sx = (x) => PAD_X + ((x - x0) / (x1 - x0 || 1)) * (W - 2 * PAD_X);
  const sy = (y) => H - PAD_Y - ((y - y0) / (y1 - y0 || 1)) * (H - 2 * PAD_Y);

  const svg = el("svg", {
    viewBox: `0 0 ${W} ${H}`,
    role: "group",
    "aria-label": title,
    class: "projection",
  });
  svg.append(el("rect", { class: "frame", x: 0.5, y: 0.5, width: W - 1, height: H - 1 }));

  const blobs = el("g", { class: "blobs" });
  for (const hull of data.hulls ?? []) {
    for (const polygon of hull.polygons) {
      if (polygon.length < 3) continue;
      const d = polygon.map(([x, y], i) => `${i ? "L" : "M"}${fmt(sx(x))} ${fmt(sy(y))}`);
      blobs.append(
        el("path", {
          class: "blob",
          d: `${d.join(" ")}Z`,
          fill: colorOf(hull.cluster_id),
          stroke: colorOf(hull.cluster_id),
          "data-cluster": hull.cluster_id,
        }),
      );
    }
  }
  svg.append(blobs);

  const labels = el("g", { class: "guesses" });
  data.points.forEach((point, i) => {
    const text = el("text", {
      class: "guess",
      x: fmt(sx(point.x)),
      y: fmt(sy(point.y)),
      fill: colorOf(point.cluster_id),
      tabindex: 0,
      "aria-label": describe(point),
      "data-i": i,
      "data-cluster": point.cluster_id,
    });
    text.textContent = point.guess;
    labels.append(text);
  });
  svg.append(labels);
  return svg;
}
