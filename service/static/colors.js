// Cluster colours, the same as the server's plots (clustviz/render.py: cluster_colors):
// Paul Tol's discrete rainbow for n <= 23 clusters, else his continuous rainbow sampled evenly
// on [0.12, 1]. Tables copied from tol_colors 2.2.0 (_colors["rainbow_discrete"] and
// _colors["rainbow_linear"]); colour i goes to the i-th cluster id in ascending order (`label`).

const DISCRETE = [
  "#E8ECFB", "#D9CCE3", "#D1BBD7", "#CAACCB", "#BA8DB4", "#AE76A3", "#AA6F9E", "#994F88",
  "#882E72", "#1965B0", "#437DBF", "#5289C7", "#6195CF", "#7BAFDE", "#4EB265", "#90C987",
  "#CAE0AB", "#F7F056", "#F7CB45", "#F6C141", "#F4A736", "#F1932D", "#EE8026", "#E8601C",
  "#E65518", "#DC050C", "#A5170E", "#72190E", "#42150A",
];
// INDEXES[n - 1]: which of DISCRETE make up the n-colour scheme.
const INDEXES = [
  [9], [9, 25], [9, 17, 25], [9, 14, 17, 25], [9, 13, 14, 17, 25], [9, 13, 14, 16, 17, 25],
  [8, 9, 13, 14, 16, 17, 25], [8, 9, 13, 14, 16, 17, 22, 25],
  [8, 9, 13, 14, 16, 17, 22, 25, 27], [8, 9, 13, 14, 16, 17, 20, 23, 25, 27],
  [8, 9, 11, 13, 14, 16, 17, 20, 23, 25, 27], [2, 5, 8, 9, 11, 13, 14, 16, 17, 20, 23, 25],
  [2, 5, 8, 9, 11, 13, 14, 15, 16, 17, 20, 23, 25],
  [2, 5, 8, 9, 11, 13, 14, 15, 16, 17, 19, 21, 23, 25],
  [2, 5, 8, 9, 11, 13, 14, 15, 16, 17, 19, 21, 23, 25, 27],
  [2, 4, 6, 8, 9, 11, 13, 14, 15, 16, 17, 19, 21, 23, 25, 27],
  [2, 4, 6, 7, 8, 9, 11, 13, 14, 15, 16, 17, 19, 21, 23, 25, 27],
  [2, 4, 6, 7, 8, 9, 11, 13, 14, 15, 16, 17, 19, 21, 23, 25, 26, 27],
  [1, 3, 4, 6, 7, 8, 9, 11, 13, 14, 15, 16, 17, 19, 21, 23, 25, 26, 27],
  [1, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17, 19, 21, 23, 25, 26, 27],
  [1, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17, 18, 20, 22, 24, 25, 26, 27],
  [1, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17, 18, 20, 22, 24, 25, 26, 27, 28],
  [0, 1, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17, 18, 20, 22, 24, 25, 26, 27, 28],
];
const LINEAR = [
  "#E8ECFB", "#DDD8EF", "#D1C1E1", "#C3A8D1", "#B58FC2", "#A778B4", "#9B62A7", "#8C4E99",
  "#6F4C9B", "#6059A9", "#5568B8", "#4E79C5", "#4D8AC6", "#4E96BC", "#549EB3", "#59A5A9",
  "#60AB9E", "#69B190", "#77B77D", "#8CBC68", "#A6BE54", "#BEBC48", "#D1B541", "#DDAA3C",
  "#E49C39", "#E78C35", "#E67932", "#E4632D", "#DF4828", "#DA2222", "#B8221E", "#95211B",
  "#721E17", "#521A13",
];

const rgb = (hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
const hex = (values) =>
  "#" + values.map((v) => Math.round(v).toString(16).padStart(2, "0")).join("").toUpperCase();

/** Tol's continuous rainbow at t in [0, 1], quantised to 256 levels like matplotlib's LUT. */
function rainbow(t) {
  const level = Math.min(255, Math.max(0, Math.floor(t * 256))) / 255;
  const pos = level * (LINEAR.length - 1);
  const i = Math.min(LINEAR.length - 2, Math.floor(pos));
  const [a, b] = [rgb(LINEAR[i]), rgb(LINEAR[i + 1])];
  return hex(a.map((v, k) => v + (b[k] - v) * (pos - i)));
}

/** `n` colours, one per cluster of a view, in ascending cluster-id order. */
export function clusterColors(n) {
  if (n <= 0) return [];
  if (n <= INDEXES.length) return INDEXES[n - 1].map((i) => DISCRETE[i]);
  return Array.from({ length: n }, (_, i) => rainbow(0.12 + (0.88 * i) / (n - 1)));
}
