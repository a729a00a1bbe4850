// Every guess of a global map on one <canvas>, with one preamble's guesses highlighted.
//
// A map holds every row of a dataset (10^5 in a real one), so nothing here is per-point DOM:
// the points are written straight into an ImageData (one 32-bit store per pixel, no path
// building), and only the highlighted preamble's few dozen guesses are drawn as circles and
// text on top. The points' pixels are kept between frames, so a hover only puts them back and
// draws its ring; they are written again when the zoom, pan, size or highlight changes. Hover
// and click find the point under the pointer through a grid of screen cells rebuilt with the
// points (a counting sort, O(n)), so a pointer move looks at a few cells instead of every
// point. Wheel zooms around the pointer, dragging pans, a double click resets the view; with
// the keyboard (the canvas takes focus), + and - zoom, the arrow keys pan and 0 resets.
import { clusterColors } from "./colors.js";

const HEIGHT_RATIO = 0.62; // canvas height / width
const PAD = 24; // CSS pixels kept free around the points at zoom 1
const CELL = 8; // hit-test grid cell, CSS pixels
const HIT_RADIUS = 6; // a point within this many CSS pixels of the pointer is hit
const DIM = 0.3; // opacity of the points outside the highlighted preamble
const MIN_ZOOM = 0.5;
const MAX_ZOOM = 200;
const DRAG_THRESHOLD = 4; // CSS pixels a press may move and still count as a click
const KEY_PAN = 40; // CSS pixels an arrow key pans
const KEY_ZOOM = 1.25;

const rgbOf = (hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
// ImageData is RGBA bytes; through a Uint32Array on a little-endian machine that is 0xAABBGGRR.
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
const pack = ([r, g, b]) =>
  (LITTLE_ENDIAN ? (255 << 24) | (b << 16) | (g << 8) | r : (r << 24) | (g << 16) | (b << 8) | 255) >>> 0;
const overWhite = (rgb, alpha) => rgb.map((v) => Math.round(255 - (255 - v) * alpha));

/** Cluster id -> palette index for `clusterIds` (ascending ids, as the per-preamble plots and
 * clustviz.labels.dense_labels number them). */
export function clusterRanks(clusterIds) {
  const ids = [...new Set(clusterIds)].sort((a, b) => a - b);
  return new Map(ids.map((id, rank) => [id, rank]));
}

export class MapCanvas {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {object} points columns of a map (see map.js: loadPoints)
   * @param {object} handlers onHover(index | null, {x, y}) and onPick(index), in CSS pixels
   */
  constructor(canvas, points, { onHover, onPick }) {
    Object.assign(this, { canvas, points, onHover, onPick });
    this.selected = null; // Int32Array of the highlighted preamble's rows, or null
    this.selectedColors = null; // their per-preamble palette colours (hex)
    this.hovered = null;
    this.zoom = 1;
    this.pan = [0, 0]; // CSS pixels
    this.frame = 0; // pending requestAnimationFrame
    this.image = null; // the points' pixels (ImageData) for the current view; null: to draw

    // Colours once per map: every cluster of the dataset through the same palette function as
    // the per-preamble plots, over the dataset's clusters in ascending id order.
    const { n, clusterId, x, y } = points;
    const ranks = clusterRanks(clusterId);
    const palette = clusterColors(ranks.size).map(rgbOf);
    this.fullColor = new Uint32Array(n);
    this.dimColor = new Uint32Array(n);
    for (let i = 0; i < n; i++) {
      const rgb = palette[ranks.get(clusterId[i])];
      this.fullColor[i] = pack(rgb);
      this.dimColor[i] = pack(overWhite(rgb, DIM));
    }
    let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
    for (let i = 0; i < n; i++) {
      if (x[i] < x0) x0 = x[i];
      if (x[i] > x1) x1 = x[i];
      if (y[i] < y0) y0 = y[i];
      if (y[i] > y1) y1 = y[i];
    }
    this.bounds = { cx: (x0 + x1) / 2, cy: (y0 + y1) / 2, w: x1 - x0 || 1, h: y1 - y0 || 1 };
    this.sx = new Float32Array(n); // screen position of each point, CSS pixels
    this.sy = new Float32Array(n);

    this.bindPointer();
    this.resizer = new ResizeObserver(() => this.redraw());
    this.resizer.observe(canvas.parentElement);
  }

  /** Highlight `rows` (a preamble's row indices; null for none), coloured `colors[i]`. */
  highlight(rows, colors) {
    this.selected = rows;
    this.selectedColors = colors;
    this.redraw();
  }

  /** Zoom by `factor` about (x, y), CSS pixels: the map point there stays there. */
  zoomAbout(factor, x, y) {
    const zoom = Math.min(MAX_ZOOM, Math.max(MIN_ZOOM, this.zoom * factor));
    const ratio = zoom / this.zoom;
    const { width, height } = this.size;
    const [cx, cy] = [width / 2 + this.pan[0], height / 2 + this.pan[1]];
    this.pan = [this.pan[0] + (x - cx) * (1 - ratio), this.pan[1] + (y - cy) * (1 - ratio)];
    this.zoom = zoom;
    this.redraw();
  }

  resetView() {
    this.zoom = 1;
    this.pan = [0, 0];
    this.redraw();
  }

  destroy() {
    this.resizer.disconnect();
    cancelAnimationFrame(this.frame);
    this.abort.abort();
  }

  /** Draw at the next frame: the points again (`points`: the view or highlight changed), or
   * only what lies over them (the hover ring). */
  redraw({ points = true } = {}) {
    if (points) this.image = null;
    if (!this.frame) {
      this.frame = requestAnimationFrame(() => {
        this.frame = 0;
        this.draw();
      });
    }
  }

  /** Screen scale (CSS pixels per map unit) and origin for the current zoom and pan. */
  transform() {
    const { width, height } = this.size;
    const { cx, cy, w, h } = this.bounds;
    const scale = Math.min((width - 2 * PAD) / w, (height - 2 * PAD) / h) * this.zoom;
    return { scale, ox: width / 2 + this.pan[0] - cx * scale, oy: height / 2 + this.pan[1] + cy * scale };
  }

  draw() {
    const { canvas } = this;
    const width = canvas.clientWidth;
    if (!width) return; // hidden: drawn when shown (the ResizeObserver fires)
    const height = Math.round(width * HEIGHT_RATIO);
    const dpr = window.devicePixelRatio || 1;
    if (width !== this.size?.width || canvas.width !== Math.round(width * dpr)) {
      this.image = null;
      this.size = { width, height };
      canvas.style.height = `${height}px`;
      canvas.width = Math.round(width * dpr);
      canvas.height = Math.round(height * dpr);
    }
    if (!this.image) this.drawPoints(dpr);
    const ctx = canvas.getContext("2d");
    ctx.putImageData(this.image, 0, 0);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    this.drawSelected(ctx);
  }

  /** Every point's pixels into this.image, and the hit-test grid for the same positions. */
  drawPoints(dpr) {
    const { canvas, points } = this;

    const { n, x, y } = points;
    const { scale, ox, oy } = this.transform();
    const { sx, sy } = this;
    for (let i = 0; i < n; i++) {
      sx[i] = ox + x[i] * scale;
      sy[i] = oy - y[i] * scale;
    }

    // Every point as a small square of pixels (a later row over an earlier one); with a
    // preamble highlighted all are dimmed, its own guesses then drawn over them (drawSelected).
    const image = new ImageData(canvas.width, canvas.height);
    const pixels = new Uint32Array(image.data.buffer);
    pixels.fill(pack([255, 255, 255]));
    const colors = this.selected ? this.dimColor : this.fullColor;
    const side = Math.max(1, Math.round(2 * dpr));
    const [pw, ph] = [canvas.width, canvas.height];
    for (let i = 0; i < n; i++) {
      const px = Math.round(sx[i] * dpr - side / 2);
      const py = Math.round(sy[i] * dpr - side / 2);
      if (px < 0 || py < 0 || px + side > pw || py + side > ph) continue;
      const color = colors[i];
      for (let row = py; row < py + side; row++) {
        const start = row * pw + px;
        for (let k = 0; k < side; k++) pixels[start + k] = color;
      }
    }
    this.image = image;
    this.buildGrid();
  }

  /** The highlighted preamble: a circle per guess and its text, in the per-preamble palette. */
  drawSelected(ctx) {
    const { selected: rows, selectedColors: colors, sx, sy } = this;
    if (rows) {
      rows.forEach((i, k) => {
        ctx.beginPath();
        ctx.arc(sx[i], sy[i], 3.5, 0, 2 * Math.PI);
        ctx.fillStyle = colors[k];
        ctx.fill();
        ctx.lineWidth = 0.8;
        ctx.strokeStyle = "rgba(0, 0, 0, 0.55)";
        ctx.stroke();
      });
      ctx.font = "12px system-ui, sans-serif";
      ctx.textAlign = "left";
      ctx.textBaseline = "middle";
      ctx.lineJoin = "round";
      rows.forEach((i, k) => {
        const label = this.points.guess[i];
        ctx.lineWidth = 3;
        ctx.strokeStyle = "rgba(255, 255, 255, 0.9)"; // a halo keeps text legible over points
        ctx.strokeText(label, sx[i] + 5, sy[i]);
        ctx.fillStyle = colors[k];
        ctx.fillText(label, sx[i] + 5, sy[i]);
      });
    }
    if (this.hovered !== null) {
      ctx.beginPath();
      ctx.arc(sx[this.hovered], sy[this.hovered], 6, 0, 2 * Math.PI);
      ctx.lineWidth = 2;
      ctx.strokeStyle = "#1d1d1f";
      ctx.stroke();
    }
  }

  /** Points by screen cell: cellStart[c]..cellStart[c+1] index cellItems (a counting sort). */
  buildGrid() {
    const { n } = this.points;
    const { width, height } = this.size;
    const cols = Math.ceil(width / CELL);
    const rows = Math.ceil(height / CELL);
    const cellOf = new Int32Array(n);
    const counts = new Int32Array(cols * rows + 1);
    for (let i = 0; i < n; i++) {
      const cx = Math.floor(this.sx[i] / CELL);
      const cy = Math.floor(this.sy[i] / CELL);
      const inside = cx >= 0 && cy >= 0 && cx < cols && cy < rows;
      cellOf[i] = inside ? cy * cols + cx : -1;
      if (inside) counts[cellOf[i] + 1]++;
    }
    for (let c = 1; c < counts.length; c++) counts[c] += counts[c - 1];
    const items = new Int32Array(counts[counts.length - 1]);
    const next = counts.slice(0, -1);
    for (let i = 0; i < n; i++) if (cellOf[i] >= 0) items[next[cellOf[i]]++] = i;
    this.grid = { cols, rows, start: counts, items };
  }

  /** The point under (px, py), CSS pixels: the highlighted preamble's first (drawn on top),
   * else the nearest within HIT_RADIUS (the later row on a tie: it is drawn over the earlier). */
  pointAt(px, py) {
    const near = (i) => (this.sx[i] - px) ** 2 + (this.sy[i] - py) ** 2;
    const limit = HIT_RADIUS ** 2;
    let best = null;
    let bestD = limit;
    for (const i of this.selected ?? []) {
      const d = near(i);
      if (d <= bestD) [best, bestD] = [i, d];
    }
    if (best !== null || !this.grid) return best;
    const { cols, rows, start, items } = this.grid;
    const [cx, cy] = [Math.floor(px / CELL), Math.floor(py / CELL)];
    for (let gy = Math.max(0, cy - 1); gy <= Math.min(rows - 1, cy + 1); gy++) {
      for (let gx = Math.max(0, cx - 1); gx <= Math.min(cols - 1, cx + 1); gx++) {
        const c = gy * cols + gx;
        for (let k = start[c]; k < start[c + 1]; k++) {
          const i = items[k];
          const d = near(i);
          if (d < bestD || (d === bestD && best !== null && i > best)) [best, bestD] = [i, d];
        }
      }
    }
    return best;
  }

  setHovered(index, at) {
    if (index === this.hovered) return;
    this.hovered = index;
    this.canvas.style.cursor = index === null ? "grab" : "pointer";
    this.onHover(index, at);
    this.redraw({ points: false });
  }

  bindPointer() {
    const { canvas } = this;
    this.abort = new AbortController();
    const options = { signal: this.abort.signal };
    const local = (event) => {
      const box = canvas.getBoundingClientRect();
      return { x: event.clientX - box.left, y: event.clientY - box.top };
    };
    let press = null; // {x, y, pan, moved} while a button is down
    canvas.style.cursor = "grab";

    canvas.addEventListener(
      "pointerdown",
      (event) => {
        press = { ...local(event), pan: [...this.pan], moved: false };
        canvas.setPointerCapture(event.pointerId);
      },
      options,
    );
    canvas.addEventListener(
      "pointermove",
      (event) => {
        const at = local(event);
        if (press) {
          const [dx, dy] = [at.x - press.x, at.y - press.y];
          press.moved ||= Math.hypot(dx, dy) > DRAG_THRESHOLD;
          if (press.moved) {
            this.pan = [press.pan[0] + dx, press.pan[1] + dy];
            this.setHovered(null, at);
            this.redraw();
            return;
          }
        }
        if (this.grid) this.setHovered(this.pointAt(at.x, at.y), at);
      },
      options,
    );
    canvas.addEventListener(
      "pointerup",
      (event) => {
        const wasClick = press && !press.moved;
        press = null;
        if (!wasClick) return;
        const at = local(event);
        const index = this.pointAt(at.x, at.y);
        if (index !== null) this.onPick(index);
      },
      options,
    );
    canvas.addEventListener("pointerleave", () => press || this.setHovered(null, null), options);
    canvas.addEventListener("dblclick", () => this.resetView(), options);
    canvas.addEventListener(
      "wheel",
      (event) => {
        event.preventDefault();
        const at = local(event);
        this.setHovered(null, at);
        this.zoomAbout(Math.exp(-event.deltaY * 0.0015), at.x, at.y);
      },
      { ...options, passive: false },
    );
    canvas.addEventListener(
      "keydown",
      (event) => {
        if (!this.size || event.altKey || event.ctrlKey || event.metaKey) return;
        const { width, height } = this.size;
        const pans = { ArrowLeft: [1, 0], ArrowRight: [-1, 0], ArrowUp: [0, 1], ArrowDown: [0, -1] };
        if (event.key === "+" || event.key === "=") this.zoomAbout(KEY_ZOOM, width / 2, height / 2);
        else if (event.key === "-") this.zoomAbout(1 / KEY_ZOOM, width / 2, height / 2);
        else if (event.key === "0") this.resetView();
        else if (event.key in pans) {
          const [dx, dy] = pans[event.key];
          this.pan = [this.pan[0] + dx * KEY_PAN, this.pan[1] + dy * KEY_PAN];
          this.redraw();
        } else return;
        event.preventDefault(); // the page does not scroll under a panned map
      },
      options,
    );
  }
}
