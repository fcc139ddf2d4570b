// Shared by TokenSmith's front-end features (not an extension by itself): the embedding list from
// GET /tokensmith/embeddings, the prompt textarea the user last worked in, and small helpers.
import { api } from "../../scripts/api.js";
import { app } from "../../scripts/app.js";

const listeners = new Set();
let embeddings = null;
let pending = null;

/** Every embedding file the server lists (cached; `force` asks the server again). */
export async function getEmbeddings(force = false) {
  if (embeddings && !force) return embeddings;
  if (!pending) {
    pending = api
      .fetchApi("/tokensmith/embeddings", { cache: "no-store" })
      .then((r) => (r.ok ? r.json() : Promise.reject(new Error(`HTTP ${r.status}`))))
      .then((list) => {
        embeddings = Array.isArray(list) ? list : [];
        for (const fn of listeners) {
          try {
            fn(embeddings);
          } catch (err) {
            console.error("[TokenSmith] embedding list listener failed", err);
          }
        }
        return embeddings;
      })
      .catch((err) => {
        console.warn("[TokenSmith] could not list embeddings:", err.message);
        return embeddings ?? [];
      })
      .finally(() => {
        pending = null;
      });
  }
  return pending;
}

/** Call fn(list) whenever the list is fetched again; returns an unsubscribe function. */
export function onEmbeddings(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

// A finished run or a finished prompt may have written files (trainer, Save Embedding node).
api.addEventListener("tokensmith.train", (e) => {
  const kind = e.detail?.event?.kind;
  if (e.detail?.finished || kind === "snapshot" || kind === "saved") getEmbeddings(true);
});
api.addEventListener("execution_success", () => {
  if (embeddings) getEmbeddings(true);
});

/** `embedding:NAME` as the server says ComfyUI resolves it. */
export function promptFor(item) {
  return item.prompt || `embedding:${item.name}`;
}

const FAMILY_LABELS = {
  sd1: "SD1", sd2: "SD2", sdxl: "SDXL", sdxl_g: "SDXL-G", sd3: "SD3", flux: "Flux", chroma: "Chroma",
  zimage: "Z-Image", qwen_image: "Qwen-Image", lumina2: "Lumina 2",
};
export function familyLabel(family) {
  return FAMILY_LABELS[family] || (family ? String(family).toUpperCase() : "?");
}

export function formatSize(bytes) {
  if (bytes == null) return "";
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

export function encoderSummary(item) {
  const enc = item.encoders || {};
  return Object.entries(enc)
    .map(([key, shape]) => `${key.replace("clip_", "").toUpperCase()} ${shape[0]}×${shape[1]}`)
    .join(" · ");
}

export function setting(id, fallback) {
  const value = app.extensionManager?.setting?.get?.(id);
  return value === undefined || value === null ? fallback : value;
}

/** A prompt box: a textarea in a node widget (classic canvas or Nodes 2.0), never one of ours. */
export function isPromptTextarea(el) {
  return (
    el instanceof HTMLTextAreaElement &&
    !el.closest(".tokensmith-panel") &&
    !el.readOnly &&
    (el.classList.contains("comfy-multiline-input") || !!el.closest(".lg-node, .dom-widget, [data-node-id]"))
  );
}

let lastTextarea = null;
document.addEventListener(
  "focusin",
  (e) => {
    if (isPromptTextarea(e.target)) lastTextarea = e.target;
  },
  true,
);

/** The prompt textarea that has, or last had, the focus (null when it left the page). */
export function lastPromptTextarea() {
  if (lastTextarea && !lastTextarea.isConnected) lastTextarea = null;
  return lastTextarea;
}

/** Replace [start, end) of the textarea's text and tell the widget (and anyone listening). */
export function replaceRange(textarea, start, end, text) {
  const value = textarea.value;
  textarea.value = value.slice(0, start) + text + value.slice(end);
  const caret = start + text.length;
  textarea.setSelectionRange(caret, caret);
  textarea.dispatchEvent(new Event("input", { bubbles: true }));
  textarea.dispatchEvent(new Event("change", { bubbles: true }));
  app.graph?.setDirtyCanvas?.(true, true);
}

/** Insert `embedding:NAME` at the caret, with the spaces ComfyUI's parser needs around it. */
export function insertEmbedding(textarea, token) {
  const value = textarea.value;
  const start = textarea.selectionStart ?? value.length;
  const end = textarea.selectionEnd ?? start;
  const before = value.slice(0, start);
  const after = value.slice(end);
  const lead = before && !/[\s(]$/.test(before) ? " " : "";
  const trail = after && !/^[\s)]/.test(after) ? " " : "";
  replaceRange(textarea, start, end, lead + token + trail);
  textarea.focus({ preventScroll: true });
}

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "style" && typeof v === "object") Object.assign(node.style, v);
    else if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (v !== undefined && v !== null) node[k] = v;
  }
  for (const child of children.flat()) {
    if (child == null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

let styleAdded = false;
/** One stylesheet for every TokenSmith element (theme colours from the front end's CSS variables). */
export function addStyles() {
  if (styleAdded) return;
  styleAdded = true;
  const css = `
.tokensmith-panel { display:flex; flex-direction:column; height:100%; padding:8px; gap:8px; box-sizing:border-box;
  color: var(--fg-color, #ddd); font: 13px/1.35 system-ui, sans-serif; }
.tokensmith-panel h3 { margin:0; font-size:14px; font-weight:600; display:flex; align-items:center; gap:8px; }
.tokensmith-search { width:100%; box-sizing:border-box; padding:6px 8px; border-radius:6px;
  border:1px solid var(--border-color, #444); background: var(--comfy-input-bg, #222); color: inherit; }
.tokensmith-list { overflow-y:auto; flex:1; display:flex; flex-direction:column; gap:4px; }
.tokensmith-item { padding:6px 8px; border-radius:6px; cursor:pointer; border:1px solid transparent;
  background: var(--comfy-menu-secondary-bg, rgba(255,255,255,0.04)); }
.tokensmith-item:hover, .tokensmith-item.active { border-color: var(--p-primary-color, #5b8def); }
.tokensmith-item .ts-thumb { float:right; width:48px; height:48px; object-fit:cover; border-radius:4px; margin-left:6px; }
.tokensmith-item .ts-name { font-weight:600; word-break:break-all; }
.tokensmith-item .ts-meta { opacity:0.75; font-size:12px; display:flex; flex-wrap:wrap; gap:2px 10px; margin-top:2px; }
.tokensmith-item .ts-error { color:#e57373; font-size:12px; }
.ts-badge { display:inline-block; font-size:10px; font-weight:700; padding:1px 6px; border-radius:8px;
  vertical-align:middle; margin-left:6px; color:#111; background:#9e9e9e; }
.ts-badge.sd1 { background:#7cc4fa; } .ts-badge.sd2 { background:#b39ddb; } .ts-badge.sdxl { background:#ffb74d; }
.ts-badge.sdxl_g { background:#ffcc80; } .ts-badge.sd3 { background:#f48fb1; }
.ts-badge.flux, .ts-badge.chroma { background:#a5d6a7; } .ts-badge.zimage, .ts-badge.qwen_image { background:#80deea; }
.tokensmith-hint { opacity:0.7; font-size:12px; }
.tokensmith-button { padding:3px 8px; border-radius:6px; border:1px solid var(--border-color,#444);
  background: var(--comfy-input-bg,#222); color:inherit; cursor:pointer; font-size:12px; }
.tokensmith-complete { position:fixed; z-index:10000; min-width:220px; max-width:420px; max-height:240px; overflow-y:auto;
  background: var(--comfy-menu-bg, #1e1e1e); color: var(--fg-color, #ddd); border:1px solid var(--border-color,#555);
  border-radius:6px; box-shadow:0 4px 16px rgba(0,0,0,0.45); font: 12px/1.3 system-ui, sans-serif; padding:3px 0; }
.tokensmith-complete .ts-option { padding:4px 10px; cursor:pointer; display:flex; justify-content:space-between; gap:10px; }
.tokensmith-complete .ts-option.active { background: var(--p-primary-color, #3d6fd8); color:#fff; }
.tokensmith-complete .ts-option small { opacity:0.75; white-space:nowrap; }
.tokensmith-live { display:flex; flex-direction:column; gap:4px; font: 11px/1.3 system-ui, sans-serif;
  color: var(--fg-color, #ddd); box-sizing:border-box; padding:2px 0; overflow:hidden; }
.tokensmith-live .ts-stats { display:flex; flex-wrap:wrap; gap:2px 10px; }
.tokensmith-live .ts-stats b { font-weight:600; }
.tokensmith-live .ts-body { display:flex; gap:6px; flex:1; min-height:0; }
.tokensmith-live canvas { flex:1; min-width:0; width:100%; height:100%; border-radius:4px; background:rgba(0,0,0,0.25); }
.tokensmith-live img { height:100%; max-height:100%; aspect-ratio:1; object-fit:contain; border-radius:4px;
  background:rgba(0,0,0,0.25); }
.tokensmith-live .ts-events { max-height:3.9em; overflow-y:auto; }
.tokensmith-live .ts-event { white-space:nowrap; overflow:hidden; text-overflow:ellipsis; }
.tokensmith-live .ts-event.rollback, .tokensmith-live .ts-event.failed { color:#ef5350; }
.tokensmith-live .ts-event.early_stop, .tokensmith-live .ts-event.cancelled { color:#ffb74d; }
.tokensmith-live .ts-event.warning { color:#ffb74d; white-space:normal; }
.tokensmith-live .ts-event.saved, .tokensmith-live .ts-event.finished, .tokensmith-live .ts-event.snapshot { color:#81c784; }
.tokensmith-text { width:100%; height:100%; box-sizing:border-box; resize:none; font: 11px/1.35 ui-monospace, monospace;
  background: var(--comfy-input-bg, #222); color: var(--input-text, #ddd); border:none; border-radius:4px; padding:4px; }
`;
  document.head.append(el("style", { id: "tokensmith-styles", textContent: css }));
}
