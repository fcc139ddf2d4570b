// Shows the text that TokenSmith nodes return to the UI (inspect reports, prompt warnings, merge and
// convert summaries, where a file was saved) on the node itself, in a read-only box.
import { app } from "../../scripts/app.js";
import { addStyles, el } from "./tokensmith_common.js";

const WIDGET = "tokensmith_text";

function showText(node, text) {
  addStyles();
  let widget = node.widgets?.find((w) => w.name === WIDGET);
  if (!widget) {
    const area = el("textarea", { className: "tokensmith-text", readOnly: true, spellcheck: false });
    widget = node.addDOMWidget(WIDGET, "tokensmith-text", area, {
      serialize: false,
      getMinHeight: () => 60,
      getMaxHeight: () => 360,
    });
    widget.serialize = false; // output only: not a widget value of the workflow
    widget.tokensmithArea = area;
  }
  widget.tokensmithArea.value = text;
  widget.tokensmithArea.dataset.filled = "1";
  const lines = Math.min(18, Math.max(3, text.split("\n").length + 1));
  const want = node.computeSize?.()[1] ?? node.size[1];
  node.setSize([Math.max(node.size[0], 340), Math.max(node.size[1], want + lines * 4)]);
  node.setDirtyCanvas?.(true, true);
}

app.registerExtension({
  name: "tokensmith.nodeText",
  // per node (the front end's nodeCreated hook), not on the node classes' prototypes
  nodeCreated(node) {
    const type = node.comfyClass;
    if (!type?.startsWith("TokenSmith") || type === "TokenSmithTrainEmbedding") return;
    const onExecuted = node.onExecuted;
    node.onExecuted = function (message) {
      const r = onExecuted?.apply(this, arguments);
      const text = message?.text;
      if (Array.isArray(text) ? text.length : text) showText(this, Array.isArray(text) ? text.join("\n") : String(text));
      return r;
    };
  },
});
