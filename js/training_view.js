// Live training view on the TokenSmithTrainEmbedding node: loss (raw and smoothed), validation loss,
// learning rate and vector norm, step / total, ETA, the newest preview, and the run's events
// (rollback, early stop, cancel...). Fed by `tokensmith.train` websocket events; after a page reload
// the history comes from GET /tokensmith/runs.
import { api } from "../../scripts/api.js";
import { app } from "../../scripts/app.js";
import { addStyles, el, setting } from "./tokensmith_common.js";

const NODE_TYPE = "TokenSmithTrainEmbedding";
const SMOOTHING = "TokenSmith.TrainingView.Smoothing";
const SHOW = "TokenSmith.TrainingView.Enabled";
const COLORS = { loss: "#5b9cf5", smooth: "#9fc4ff", val: "#ffa726", lr: "#ba68c8", norm: "#66bb6a" };

/** Run state by node id (the `node` field of the events: the node's id, "outer:inner" inside subgraphs). */
const runs = new Map();
const views = new Set();

function newRun(detail) {
  return {
    run: detail.run, name: detail.name, total: detail.total || 0, points: [], events: [],
    preview: null, finished: false, outcome: null, eta: null, last: null,
  };
}

function ingest(detail, redraw = true) {
  if (!detail || detail.node == null) return;
  const key = String(detail.node);
  let state = runs.get(key);
  if (!state || (detail.run && state.run !== detail.run)) {
    state = newRun(detail);
    runs.set(key, state);
  }
  if (detail.total) state.total = detail.total;
  if (detail.name) state.name = detail.name;
  if (typeof detail.step === "number" && typeof detail.loss === "number") {
    const norms = detail.norms ? Object.values(detail.norms) : [];
    const point = {
      step: detail.step, loss: detail.loss, lr: detail.lr,
      norm: norms.length ? norms.reduce((a, b) => a + b, 0) / norms.length : null,
      val: typeof detail.val_loss === "number" ? detail.val_loss : null,
    };
    const prev = state.points[state.points.length - 1];
    if (prev && prev.step === point.step) {
      // a rollback repeats its step; a validation report may follow the plain one
      if (point.val == null) point.val = prev.val;
      state.points[state.points.length - 1] = point;
    } else if (!prev || point.step > prev.step) {
      state.points.push(point);
    }
    state.last = point;
    if (detail.eta_s != null) state.eta = detail.eta_s;
  }
  if (detail.event && detail.event.kind) {
    const ev = { ...detail.event, step: detail.event.step ?? detail.step ?? state.last?.step ?? 0 };
    const dup = state.events.find((e) => e.kind === ev.kind && e.step === ev.step);
    if (!dup) state.events.push(ev);
    if (["finished", "cancelled", "failed", "early_stop"].includes(ev.kind)) state.outcome = ev.kind;
  }
  if (detail.preview) state.preview = detail.preview;
  if (detail.finished) {
    state.finished = true;
    state.eta = 0;
  }
  if (redraw) refreshViews();
}

function refreshViews() {
  for (const view of views) view.update();
}

function stateFor(node) {
  const id = String(node.id);
  let state = runs.get(id);
  if (!state) {
    for (const [key, value] of runs) if (key.endsWith(`:${id}`)) state = value;
  }
  if (!state) return null;
  // A finished run is shown on the node that still trains under that name (so another workflow's
  // node with the same id does not show it); a live run is always shown.
  const nameWidget = node.widgets?.find((w) => w.name === "name");
  if (state.finished && nameWidget && String(nameWidget.value).trim() !== state.name) return null;
  return state;
}

function fmtNum(v, digits = 4) {
  if (v == null || Number.isNaN(v)) return "–";
  if (v !== 0 && (Math.abs(v) < 1e-3 || Math.abs(v) >= 1e4)) return v.toExponential(2);
  return v.toFixed(digits);
}

function fmtTime(s) {
  if (s == null || !Number.isFinite(s)) return "–";
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return h ? `${h}h${String(m).padStart(2, "0")}m` : m ? `${m}m${String(sec).padStart(2, "0")}s` : `${sec}s`;
}

function smooth(values, factor) {
  // exponential moving average, the loss graph's (tokensmith/training_math.py smooth): the first value
  // as it is, then factor * previous + (1 - factor) * value; a non-finite value repeats the previous one
  const out = [];
  let avg = null;
  for (const v of values) {
    if (Number.isFinite(v)) avg = avg === null ? v : avg * factor + (1 - factor) * v;
    out.push(avg === null ? v : avg);
  }
  return out;
}

function eventText(ev, state) {
  switch (ev.kind) {
    case "rollback":
      return `step ${ev.step}: NaN/Inf loss, rolled back to the last good vectors` +
        (ev.lr_factor != null ? ` (lr ×${fmtNum(ev.lr_factor, 3)})` : "");
    case "early_stop":
      return `step ${ev.step}: stopped early, ${ev.reason ?? "validation stopped improving"}` +
        (ev.best_step != null ? ` (kept step ${ev.best_step})` : "");
    case "snapshot":
      return `step ${ev.step}: saved snapshot ${ev.name ?? ""}`;
    case "saved":
      return `saved ${ev.name ?? ""}` + (ev.best_step != null ? ` (vectors of step ${ev.best_step})` : "");
    case "warning":
      return `warning: ${ev.text ?? ""}`;
    case "resumed":
      return `resumed at step ${ev.step}` + (ev.optimizer_state === false ? " (no optimizer state)" : "");
    case "cancelled":
      return `cancelled at step ${ev.step}: the embedding file was not written`;
    case "failed":
      return `failed at step ${ev.step}: see the error message`;
    case "finished":
      return state?.name ? `finished: saved as embedding:${state.name}` : "finished";
    default:
      return `step ${ev.step}: ${ev.kind}`;
  }
}

function drawSeries(ctx, pts, x, y, color, width, dash = []) {
  if (!pts.length) return;
  ctx.save();
  ctx.strokeStyle = color;
  ctx.lineWidth = width;
  ctx.setLineDash(dash);
  ctx.beginPath();
  pts.forEach(([s, v], i) => (i ? ctx.lineTo(x(s), y(v)) : ctx.moveTo(x(s), y(v))));
  if (pts.length === 1) ctx.lineTo(x(pts[0][0]) + 1, y(pts[0][1]));
  ctx.stroke();
  ctx.restore();
}

function range(values) {
  const finite = values.filter((v) => v != null && Number.isFinite(v));
  if (!finite.length) return [0, 1];
  let lo = Math.min(...finite), hi = Math.max(...finite);
  if (hi - lo < 1e-12) {
    const pad = Math.abs(hi) * 0.05 || 0.5;
    lo -= pad;
    hi += pad;
  }
  return [lo, hi];
}

function drawChart(canvas, state) {
  const rect = canvas.getBoundingClientRect();
  if (rect.width < 20 || rect.height < 20) return;
  const dpr = window.devicePixelRatio || 1;
  const W = Math.round(rect.width * dpr), H = Math.round(rect.height * dpr);
  if (canvas.width !== W || canvas.height !== H) {
    canvas.width = W;
    canvas.height = H;
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  const w = rect.width, h = rect.height;
  ctx.clearRect(0, 0, w, h);
  ctx.font = "10px system-ui, sans-serif";
  ctx.fillStyle = "rgba(255,255,255,0.55)";
  if (!state || !state.points.length) {
    ctx.textAlign = "center";
    ctx.fillText(state ? "waiting for the first step…" : "the loss chart appears here while training runs",
      w / 2, h / 2);
    return;
  }
  const pad = { l: 6, r: 6, t: 12, b: 12 };
  const split = Math.round((h - pad.t - pad.b) * 0.7);
  const top = { y0: pad.t, y1: pad.t + split - 6 };
  const bottom = { y0: pad.t + split + 6, y1: h - pad.b };
  const total = Math.max(state.total || 0, state.points[state.points.length - 1].step, 1);
  const x = (s) => pad.l + (s / total) * (w - pad.l - pad.r);

  const pts = state.points;
  const losses = pts.map((p) => p.loss);
  const sm = smooth(losses, Math.min(0.99, Math.max(0, Number(setting(SMOOTHING, 0.8)))));
  const vals = pts.filter((p) => p.val != null).map((p) => [p.step, p.val]);
  const [lo, hi] = range([...losses, ...vals.map((v) => v[1])]);
  const yTop = (v) => top.y1 - ((v - lo) / (hi - lo)) * (top.y1 - top.y0);

  // grid and labels
  ctx.strokeStyle = "rgba(255,255,255,0.08)";
  ctx.lineWidth = 1;
  for (const f of [0, 0.5, 1]) {
    const gy = top.y0 + f * (top.y1 - top.y0);
    ctx.beginPath();
    ctx.moveTo(pad.l, gy);
    ctx.lineTo(w - pad.r, gy);
    ctx.stroke();
  }
  ctx.beginPath();
  ctx.moveTo(pad.l, (top.y1 + bottom.y0) / 2);
  ctx.lineTo(w - pad.r, (top.y1 + bottom.y0) / 2);
  ctx.stroke();

  // events as vertical markers
  for (const ev of state.events) {
    const colors = { rollback: "#ef5350", early_stop: "#ffb74d", cancelled: "#ffb74d", failed: "#ef5350",
      snapshot: "#81c784", resumed: "#90a4ae" };
    const color = colors[ev.kind];
    if (!color) continue;
    ctx.save();
    ctx.strokeStyle = color;
    ctx.setLineDash(ev.kind === "snapshot" ? [2, 3] : [4, 3]);
    ctx.beginPath();
    ctx.moveTo(x(ev.step), top.y0);
    ctx.lineTo(x(ev.step), bottom.y1);
    ctx.stroke();
    ctx.restore();
  }

  drawSeries(ctx, pts.map((p) => [p.step, p.loss]), x, yTop, "rgba(91,156,245,0.45)", 1);
  drawSeries(ctx, pts.map((p, i) => [p.step, sm[i]]), x, yTop, COLORS.smooth, 2);
  drawSeries(ctx, vals, x, yTop, COLORS.val, 1.5);
  ctx.fillStyle = COLORS.val;
  for (const [s, v] of vals) {
    ctx.beginPath();
    ctx.arc(x(s), yTop(v), 2.2, 0, Math.PI * 2);
    ctx.fill();
  }

  // lr and norm, each on its own scale, in the lower strip
  const lrPts = pts.filter((p) => p.lr != null).map((p) => [p.step, p.lr]);
  const normPts = pts.filter((p) => p.norm != null).map((p) => [p.step, p.norm]);
  const [lrLo, lrHi] = range(lrPts.map((p) => p[1]));
  const [nLo, nHi] = range(normPts.map((p) => p[1]));
  const yB = (lo2, hi2) => (v) => bottom.y1 - ((v - lo2) / (hi2 - lo2)) * (bottom.y1 - bottom.y0);
  drawSeries(ctx, lrPts, x, yB(lrLo, lrHi), COLORS.lr, 1.5, [4, 2]);
  drawSeries(ctx, normPts, x, yB(nLo, nHi), COLORS.norm, 1.5);

  ctx.fillStyle = "rgba(255,255,255,0.6)";
  ctx.textAlign = "left";
  ctx.fillText(`loss ${fmtNum(hi, 3)}`, pad.l + 2, top.y0 - 2);
  ctx.fillText(fmtNum(lo, 3), pad.l + 2, top.y1 + 9);
  ctx.textAlign = "right";
  ctx.fillText(`step ${total}`, w - pad.r, h - 1);
  ctx.textAlign = "left";
  ctx.fillText("0", pad.l, h - 1);
}

class LiveView {
  constructor(node) {
    this.node = node;
    this.root = el("div", { className: "tokensmith-live" });
    this.stats = el("div", { className: "ts-stats" });
    this.canvas = el("canvas", { className: "ts-chart" });
    this.img = el("img", { alt: "newest preview", title: "newest preview (click to open)", style: { display: "none" } });
    this.img.addEventListener("click", () => this.img.src && window.open(this.img.src, "_blank"));
    this.eventsBox = el("div", { className: "ts-events" });
    this.root.append(this.stats, el("div", { className: "ts-body" }, this.canvas, this.img), this.eventsBox);
    this.resize = new ResizeObserver(() => this.draw());
    this.resize.observe(this.canvas);
    this.update();
  }

  update() {
    const visible = setting(SHOW, true) !== false;
    this.root.style.display = visible ? "flex" : "none";
    if (!visible) return;
    const state = stateFor(this.node);
    this.state = state;
    this.root.dataset.step = state?.last?.step ?? "";
    this.root.dataset.points = state ? String(state.points.length) : "0";
    this.root.dataset.status = !state ? "idle" : state.finished ? state.outcome || "finished" : "running";
    this.stats.replaceChildren(...this.statItems(state));
    if (state?.preview) {
      if (this.img.src !== state.preview) this.img.src = state.preview;
      this.img.style.display = "";
    } else {
      this.img.style.display = "none";
    }
    const events = state ? state.events.filter((e) => e.kind !== "finished" || !state.events.some((o) => o.kind === "saved")) : [];
    // warnings (e.g. captions the template does not use) stay in view; of the rest, the newest
    const warnings = events.filter((e) => e.kind === "warning");
    const others = events.filter((e) => e.kind !== "warning");
    this.eventsBox.replaceChildren(
      ...[...warnings, ...others.slice(-Math.max(1, 4 - warnings.length))].map((ev) => {
        const text = eventText(ev, state);
        return el("div", { className: `ts-event ${ev.kind}`, title: text }, text);
      }),
    );
    this.draw();
  }

  statItems(state) {
    if (!state) return [el("span", { className: "tokensmith-hint" }, "Queue the workflow to see the loss here.")];
    const last = state.last || {};
    const step = last.step ?? 0;
    const pct = state.total ? Math.round((100 * step) / state.total) : 0;
    const status = state.finished ? (state.outcome === "finished" ? "done" : (state.outcome || "done").replace("_", " ")) : "training";
    const lastVal = [...state.points].reverse().find((p) => p.val != null)?.val;
    const smoothVals = smooth(state.points.map((p) => p.loss), Math.min(0.99, Math.max(0, Number(setting(SMOOTHING, 0.8)))));
    const item = (label, value, color) =>
      el("span", {}, color ? el("b", { style: { color } }, label) : el("b", {}, label), " ", value);
    return [
      item(status, `${step}/${state.total || "?"} (${pct}%)`),
      item("ETA", state.finished ? "–" : fmtTime(state.eta)),
      item("loss", fmtNum(last.loss), COLORS.loss),
      item("smoothed", fmtNum(smoothVals[smoothVals.length - 1]), COLORS.smooth),
      item("val", fmtNum(lastVal), COLORS.val),
      item("lr", fmtNum(last.lr), COLORS.lr),
      item("norm", fmtNum(last.norm, 3), COLORS.norm),
    ];
  }

  draw() {
    drawChart(this.canvas, this.state);
  }

  remove() {
    this.resize.disconnect();
    views.delete(this);
  }
}

function attachView(node) {
  if (node.widgets?.some((w) => w.name === "tokensmith_live")) return;
  addStyles();
  const view = new LiveView(node);
  views.add(view);
  const widget = node.addDOMWidget("tokensmith_live", "tokensmith-live", view.root, {
    serialize: false,
    hideOnZoom: true,
    getMinHeight: () => 210,
    getMaxHeight: () => 420,
  });
  widget.serialize = false; // not part of widgets_values or the prompt
  node.tokensmithLiveView = view;
  const onRemoved = node.onRemoved;
  node.onRemoved = function (...args) {
    view.remove();
    return onRemoved?.apply(this, args);
  };
  const onConfigure = node.onConfigure;
  node.onConfigure = function (...args) {
    const r = onConfigure?.apply(this, args);
    requestAnimationFrame(() => view.update()); // the id (and name) are known after configure
    return r;
  };
  const [w, h] = node.size;
  node.setSize([Math.max(w, 420), h]);
}

async function loadHistory() {
  try {
    const resp = await api.fetchApi("/tokensmith/runs", { cache: "no-store" });
    if (!resp.ok) return;
    const list = await resp.json();
    for (const run of list) {
      for (const e of run.events || []) ingest({ ...e, run: run.run, node: run.node, name: run.name, total: run.total }, false);
      const key = String(run.node);
      const state = runs.get(key);
      if (state && state.run === run.run) {
        if (run.preview) state.preview = run.preview;
        if (run.finished) state.finished = true;
      }
    }
    refreshViews();
  } catch (err) {
    console.warn("[TokenSmith] could not load the training history:", err);
  }
}

app.registerExtension({
  name: "tokensmith.trainingView",
  settings: [
    {
      id: SHOW,
      category: ["TokenSmith", "Training view", "Enabled"],
      name: "Show the live training chart on Train Embedding nodes",
      type: "boolean",
      defaultValue: true,
      onChange: () => refreshViews(),
    },
    {
      id: SMOOTHING,
      category: ["TokenSmith", "Training view", "Smoothing"],
      name: "Loss smoothing (exponential moving average factor)",
      type: "slider",
      attrs: { min: 0, max: 0.99, step: 0.01 },
      defaultValue: 0.8,
      onChange: () => refreshViews(),
    },
  ],
  async setup() {
    api.addEventListener("tokensmith.train", (e) => ingest(e.detail));
    // After a reconnect (server restart, sleep) the history may have moved on.
    api.addEventListener("reconnected", () => loadHistory());
    await loadHistory();
  },
  // the front end's per-node hook: nothing of the node class is replaced
  nodeCreated(node) {
    if (node.comfyClass === NODE_TYPE) attachView(node);
  },
});
