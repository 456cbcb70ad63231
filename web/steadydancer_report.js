// Shows each SteadyDancer node's report under the node: the text the node returns as {"ui": {"text": [...]}}
// (its first line says what was made in the widgets' words; the detail follows: the loader's plan for a typical job
// and the LoRAs, the sampler's adjustments and the job's memory plan, the frames and persons the pose nodes found).
// ComfyUI's frontend does not draw "text" for custom nodes itself.
//
// The file is served at /extensions/<pack folder>/steadydancer_report.js, so the app is two levels up.
import { app } from "../../scripts/app.js";

const CATEGORY = "SteadyDancer";          // the pack's node category (and its sub-categories)
const WIDGET_NAME = "steadydancer_report";
const LINE_PX = 15;
const MIN_LINES = 2;
const MAX_LINES = 14;
const CHAR_PX = 6.7;                       // character width of the 11 px monospace font

/** The report text of an `executed` message's output, or null when the node sent none. */
export function reportText(output) {
    const text = output?.text;
    if (text === undefined || text === null) return null;
    return (Array.isArray(text) ? text : [text]).map(String).join("\n");
}

/** Lines one line of text takes when wrapped at spaces to `perLine` characters (long words break anywhere). */
function wrapCount(line, perLine) {
    let count = 1;
    let used = 0;
    for (const word of line.split(" ")) {
        let length = word.length;
        if (used > 0 && used + 1 + length <= perLine) {
            used += 1 + length;
            continue;
        }
        if (used > 0) {
            count += 1;
        }
        while (length > perLine) {
            count += 1;
            length -= perLine;
        }
        used = length;
    }
    return count;
}

/** Lines the text takes in a box `widthPx` wide, as the text box wraps it. */
export function wrappedLines(text, widthPx) {
    const perLine = Math.max(20, Math.floor((widthPx - 30) / CHAR_PX));
    const lines = text.split("\n").reduce((sum, line) => sum + wrapCount(line, perLine), 0);
    return Math.min(MAX_LINES, Math.max(MIN_LINES, lines));
}

function reportWidget(node) {
    const existing = node.widgets?.find((w) => w.name === WIDGET_NAME);
    if (existing) return existing;
    const box = document.createElement("textarea");
    box.readOnly = true;
    box.spellcheck = false;
    box.className = "comfy-multiline-input";
    box.style.cssText = "font: 11px/15px monospace; white-space: pre-wrap; overflow-y: auto; opacity: 0.9;";
    box.title = "SteadyDancer report of the last run";
    let lines = MIN_LINES;
    const widget = node.addDOMWidget(WIDGET_NAME, "steadydancer_report", box, {
        getValue: () => box.value,
        setValue: (value) => { box.value = value ?? ""; },
        getMinHeight: () => lines * LINE_PX + 14,
        getMaxHeight: () => lines * LINE_PX + 14,
        serialize: false,                  // not a node input: never sent to the server
        hideOnZoom: false,
    });
    widget.serialize = false;              // and not saved in the workflow's widgets_values
    widget.setLines = (n) => { lines = n; };
    return widget;
}

function fit(node) {
    const needed = node.computeSize();
    node.setSize([Math.max(node.size[0], needed[0]), Math.max(node.size[1], needed[1])]);
    node.setDirtyCanvas?.(true, true);
}

function showReport(node, text) {
    const widget = reportWidget(node);
    widget.setLines(wrappedLines(text, node.size[0]));
    widget.value = text;
    fit(node);
    // Once the box is laid out, grow it if the text still overflows (another font, a narrower node).
    globalThis.requestAnimationFrame?.(() => {
        const box = widget.element;
        if (box && box.scrollHeight > box.clientHeight + 2) {
            widget.setLines(Math.min(MAX_LINES, Math.ceil((box.scrollHeight + 4) / LINE_PX)));
            fit(node);
        }
    });
}

app.registerExtension({
    name: "SteadyDancer.Report",
    async beforeRegisterNodeDef(nodeType, nodeData) {
        const category = nodeData?.category ?? "";
        if (category !== CATEGORY && !category.startsWith(CATEGORY + "/")) return;
        const onExecuted = nodeType.prototype.onExecuted;
        nodeType.prototype.onExecuted = function (output) {
            const result = onExecuted?.apply(this, arguments);
            const text = reportText(output);
            if (text !== null) showReport(this, text);
            return result;
        };
    },
});
