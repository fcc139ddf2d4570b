// Embedding browser: a sidebar tab listing every embedding file (GET /tokensmith/embeddings) with its
// family badge, vectors per encoder, size, hash and training steps; a search box; a click inserts
// `embedding:NAME` at the caret of the prompt box you were last typing in.
import { app } from "../../scripts/app.js";
import {
  addStyles,
  el,
  encoderSummary,
  familyLabel,
  formatSize,
  getEmbeddings,
  insertEmbedding,
  lastPromptTextarea,
  onEmbeddings,
  promptFor,
} from "./tokensmith_common.js";

const TAB_ID = "tokensmith-embeddings";

function toast(severity, summary, detail) {
  const t = app.extensionManager?.toast;
  if (t?.add) t.add({ severity, summary, detail, life: 3500 });
}

function matches(item, query) {
  if (!query) return true;
  const hay = `${item.name} ${item.family ?? ""} ${familyLabel(item.family)}`.toLowerCase();
  return query.toLowerCase().split(/\s+/).filter(Boolean).every((q) => hay.includes(q));
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    return false;
  }
}

function itemView(item, onPick) {
  const meta = [];
  const enc = encoderSummary(item);
  if (enc) meta.push(el("span", { title: "vectors × width, per text encoder" }, enc));
  if (item.size != null) meta.push(el("span", {}, formatSize(item.size)));
  if (item.step != null) meta.push(el("span", { title: "training steps" }, `${item.step} steps`));
  if (item.hash) meta.push(el("span", { title: `sha256 ${item.hash}` }, `#${String(item.hash).slice(0, 8)}`));
  if (item.format) meta.push(el("span", { title: "file format" }, item.format));
  const family = item.family || "unknown";
  const row = el(
    "div",
    {
      className: "tokensmith-item",
      title: `Click: insert ${promptFor(item)} into the prompt you were editing`,
      dataset: { name: item.name },
      tabIndex: 0,
      onclick: () => onPick(item),
      onkeydown: (e) => {
        if (e.key === "Enter") onPick(item);
      },
    },
    // the preview saved inside the file (modelspec.thumbnail); the server passes only image data URLs
    item.thumbnail ? el("img", { className: "ts-thumb", src: item.thumbnail, alt: "", title: "the file's preview" }) : null,
    el("div", { className: "ts-name" }, item.name, el("span", { className: `ts-badge ${family}` }, familyLabel(item.family))),
    el("div", { className: "ts-meta" }, meta),
    item.error ? el("div", { className: "ts-error" }, item.error) : null,
  );
  // keep the prompt's caret: the mousedown would otherwise take the focus away first
  row.addEventListener("mousedown", (e) => e.preventDefault());
  return row;
}

function render(container) {
  addStyles();
  const search = el("input", {
    className: "tokensmith-search",
    type: "search",
    placeholder: "Search embeddings…",
    spellcheck: false,
  });
  const count = el("span", { className: "tokensmith-hint" });
  const list = el("div", { className: "tokensmith-list" });
  const refresh = el("button", { className: "tokensmith-button", title: "Read the embeddings folder again" }, "Refresh");
  const panel = el(
    "div",
    { className: "tokensmith-panel", id: "tokensmith-embedding-browser" },
    el("h3", {}, "Embeddings", count, el("span", { style: { flex: 1 } }), refresh),
    search,
    el("div", { className: "tokensmith-hint" }, "Click a name to insert it into the prompt box you were last typing in."),
    list,
  );
  container.replaceChildren(panel);

  let items = [];
  const pick = async (item) => {
    const token = promptFor(item);
    const target = lastPromptTextarea();
    if (target) {
      insertEmbedding(target, token);
      toast("success", "Inserted", token);
    } else if (await copyText(token)) {
      toast("info", "Copied", `${token} — click into a prompt box first to insert it there`);
    } else {
      toast("warn", "No prompt box", "Click into a prompt box first, then pick the embedding again.");
    }
  };
  const draw = () => {
    const shown = items.filter((i) => matches(i, search.value.trim()));
    count.textContent = items.length ? `${shown.length}/${items.length}` : "";
    if (!items.length) {
      list.replaceChildren(
        el("div", { className: "tokensmith-hint" },
          "No embeddings yet. Train one with “Train Embedding (TokenSmith)”, or copy files into models/embeddings."),
      );
      return;
    }
    list.replaceChildren(...shown.map((i) => itemView(i, pick)));
  };
  search.addEventListener("input", draw);
  search.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      const first = items.find((i) => matches(i, search.value.trim()));
      if (first) pick(first);
    }
  });
  refresh.addEventListener("click", async () => {
    items = await getEmbeddings(true);
    draw();
  });
  const unsubscribe = onEmbeddings((list2) => {
    items = list2;
    draw();
  });
  getEmbeddings(true).then((list2) => {
    items = list2;
    draw();
  });
  return unsubscribe;
}

let unsubscribe = null;

app.registerExtension({
  name: "tokensmith.embeddingBrowser",
  async setup() {
    const manager = app.extensionManager;
    if (!manager?.registerSidebarTab) {
      console.warn("[TokenSmith] this front end has no sidebar tabs; the embedding browser is unavailable");
      return;
    }
    manager.registerSidebarTab({
      id: TAB_ID,
      icon: "pi pi-bookmark",
      title: "Embeddings",
      tooltip: "TokenSmith: embeddings (click to insert into a prompt)",
      type: "custom",
      render: (container) => {
        unsubscribe?.();
        unsubscribe = render(container);
      },
      destroy: () => {
        unsubscribe?.();
        unsubscribe = null;
      },
    });
  },
});
