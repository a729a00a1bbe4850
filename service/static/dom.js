// Small DOM helpers shared by the page's modules.

export const $ = (id) => document.getElementById(id);

/** `tag` with attributes and children (strings become text nodes, never HTML). */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

/** An alert box for an error: the service's code, then its detail word for word. */
export function errorBox(error) {
  const code = error.code ? `${error.status || ""} ${error.code}`.trim() : "error";
  return h("div", { class: "error", role: "alert" }, h("strong", {}, code), " ", error.detail ?? String(error));
}

/** Seconds as "4.2 s" or "3 min 07 s". */
export function formatSeconds(seconds) {
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min ${String(Math.floor(seconds % 60)).padStart(2, "0")} s`;
}
