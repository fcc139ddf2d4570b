// Autocomplete for `embedding:` in multiline prompt boxes. It listens on the document for its own
// input/keydown events (nothing global is replaced), reacts only right after `embedding:`, and takes
// the arrow/Enter/Tab/Escape keys only while its own list is open, so other autocompleters keep
// working. Setting "TokenSmith.Autocomplete.Enabled" turns it off.
import { app } from "../../scripts/app.js";
import {
  addStyles,
  el,
  encoderSummary,
  familyLabel,
  getEmbeddings,
  isPromptTextarea,
  promptFor,
  replaceRange,
  setting,
} from "./tokensmith_common.js";

const ENABLED = "TokenSmith.Autocomplete.Enabled";
const MAX_ITEMS = "TokenSmith.Autocomplete.MaxItems";
const TRIGGER = /(^|[\s,(])embedding:([A-Za-z0-9._/-]*)$/;

let popup = null; // { box, textarea, start, end, options, active }

/** Pixel position of the caret inside a textarea (a hidden mirror element with the same text styles). */
function caretPoint(textarea, index) {
  const style = getComputedStyle(textarea);
  const mirror = el("div");
  for (const prop of ["boxSizing", "width", "fontFamily", "fontSize", "fontWeight", "lineHeight", "letterSpacing",
    "paddingTop", "paddingRight", "paddingBottom", "paddingLeft", "borderTopWidth", "borderLeftWidth", "whiteSpace",
    "wordWrap", "wordBreak", "tabSize"]) {
    mirror.style[prop] = style[prop];
  }
  Object.assign(mirror.style, { position: "fixed", visibility: "hidden", overflow: "hidden", top: "0", left: "0",
    whiteSpace: "pre-wrap", wordWrap: "break-word" });
  mirror.textContent = textarea.value.slice(0, index);
  const mark = el("span", {}, "\u200b");
  mirror.append(mark);
  document.body.append(mirror);
  const rect = textarea.getBoundingClientRect();
  // the textarea may be drawn scaled (canvas zoom): map the mirror's unscaled offsets onto it
  const scale = textarea.offsetWidth ? rect.width / textarea.offsetWidth : 1;
  const x = rect.left + (mark.offsetLeft - textarea.scrollLeft) * scale;
  const y = rect.top + (mark.offsetTop - textarea.scrollTop + mark.offsetHeight) * scale;
  mirror.remove();
  return { x: Math.min(x, rect.right), y: Math.min(Math.max(y, rect.top), rect.bottom) };
}

function close() {
  popup?.box.remove();
  popup = null;
}

function rank(items, partial) {
  const q = partial.toLowerCase();
  const scored = [];
  for (const item of items) {
    if (item.error) continue;
    const name = item.name.toLowerCase();
    const base = name.split("/").pop();
    let score = -1;
    if (!q) score = 0;
    else if (name.startsWith(q) || base.startsWith(q)) score = 2;
    else if (name.includes(q)) score = 1;
    if (score >= 0) scored.push([score, item]);
  }
  scored.sort((a, b) => b[0] - a[0] || a[1].name.localeCompare(b[1].name));
  const max = Math.max(1, Number(setting(MAX_ITEMS, 12)) || 12);
  return scored.slice(0, max).map((s) => s[1]);
}

function accept(index) {
  if (!popup) return;
  const item = popup.options[index];
  const { textarea, start, end } = popup;
  close();
  if (!item) return;
  const token = promptFor(item);
  const after = textarea.value.slice(end);
  const trail = after && /^[\s,)]/.test(after) ? "" : " ";
  replaceRange(textarea, start, end, token + trail);
}

function setActive(index) {
  if (!popup) return;
  const n = popup.options.length;
  popup.active = ((index % n) + n) % n;
  [...popup.box.children].forEach((child, i) => child.classList.toggle("active", i === popup.active));
  popup.box.children[popup.active]?.scrollIntoView({ block: "nearest" });
}

async function update(textarea) {
  if (setting(ENABLED, true) === false || textarea.selectionStart !== textarea.selectionEnd) return close();
  const caret = textarea.selectionStart;
  const m = TRIGGER.exec(textarea.value.slice(0, caret));
  if (!m) return close();
  const partial = m[2];
  const start = caret - partial.length - "embedding:".length;
  // the whole name under the caret is replaced, also the part after it
  const rest = /^[A-Za-z0-9._/-]*/.exec(textarea.value.slice(caret))[0];
  const items = await getEmbeddings();
  if (document.activeElement !== textarea || textarea.selectionStart !== caret) return; // typed on meanwhile
  const options = rank(items, partial);
  if (!options.length) return close();
  addStyles();
  const box = popup?.box ?? el("div", { className: "tokensmith-complete", role: "listbox" });
  box.replaceChildren(
    ...options.map((item, i) =>
      el(
        "div",
        {
          className: "ts-option",
          role: "option",
          dataset: { name: item.name },
          onmousedown: (e) => e.preventDefault(), // keep the textarea focused
          onclick: () => accept(i),
        },
        el("span", {}, item.name),
        el("small", {}, `${familyLabel(item.family)} ${encoderSummary(item)}`),
      ),
    ),
  );
  if (!box.isConnected) document.body.append(box);
  popup = { box, textarea, start, end: caret + rest.length, options, active: 0 };
  const pt = caretPoint(textarea, caret);
  const below = pt.y + 4 + box.offsetHeight < window.innerHeight;
  box.style.left = `${Math.min(pt.x, window.innerWidth - box.offsetWidth - 4)}px`;
  box.style.top = `${below ? pt.y + 4 : Math.max(4, pt.y - box.offsetHeight - 20)}px`;
  setActive(0);
}

function onInput(e) {
  if (isPromptTextarea(e.target) && e.isTrusted !== false) update(e.target);
}

function onKeydown(e) {
  if (!popup || e.target !== popup.textarea) return;
  const keys = { ArrowDown: 1, ArrowUp: -1 };
  if (e.key in keys) setActive(popup.active + keys[e.key]);
  else if (e.key === "Enter" || e.key === "Tab") accept(popup.active);
  else if (e.key === "Escape") close();
  else return;
  // only our own keys, only while our list is open
  e.preventDefault();
  e.stopImmediatePropagation();
}

function onBlur(e) {
  if (popup && e.target === popup.textarea) close();
}

app.registerExtension({
  name: "tokensmith.autocomplete",
  settings: [
    {
      id: ENABLED,
      category: ["TokenSmith", "Autocomplete", "Enabled"],
      name: "Complete embedding names after “embedding:” in prompt boxes",
      tooltip: "Turn off if another autocomplete extension already does this for you.",
      type: "boolean",
      defaultValue: true,
      onChange: (value) => {
        if (value === false) close();
      },
    },
    {
      id: MAX_ITEMS,
      category: ["TokenSmith", "Autocomplete", "Max items"],
      name: "Embedding suggestions shown at once",
      type: "number",
      attrs: { min: 1, max: 50, step: 1 },
      defaultValue: 12,
    },
  ],
  setup() {
    document.addEventListener("input", onInput, true);
    document.addEventListener("keydown", onKeydown, true);
    document.addEventListener("focusout", onBlur, true);
    document.addEventListener("pointerdown", (e) => {
      if (popup && !popup.box.contains(e.target) && e.target !== popup.textarea) close();
    }, true);
    window.addEventListener("resize", close);
    getEmbeddings(); // warm the cache so the first `embedding:` completes at once
  },
});
