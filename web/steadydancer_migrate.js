// Opens workflows saved with an older SteadyDancer Sampler: the sampler once had every option as a widget (up to 25
// values); it now shows what an artist changes (prompt, steps, guidance, seed, length, resolution) and the expert
// settings sit on a SteadyDancer Sampler Options node. ComfyUI's frontend restores a node's widget values by
// position, so an old sampler would get wrong values (the negative prompt in `background`, ...). Before the graph is
// configured, each old sampler's values are read by name from its saved layout, its own widgets get theirs, and
// when an expert value differs from its default a SteadyDancer Sampler Options node carrying them is added and
// connected. Nothing is dropped silently: each migrated sampler gives one line (shown as a notice).
//
// Pure functions (no ComfyUI import), used by steadydancer_report.js's extension and by the tests.

export const SAMPLER = "SteadyDancerSampler";
export const OPTIONS = "SteadyDancerSamplerOptions";
export const OPTIONS_TYPE = "STEADYDANCER_SAMPLER_OPTIONS";
const CONTROL = "seed:control";           // the seed's "control after generate" value, saved after the seed
const WIDGET_TYPES = new Set(["INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"]);

// The layouts the sampler's widgets_values had before the split, oldest first (names in saved order).
const BASE = ["prompt", "negative_prompt", "steps", "text_cfg", "pose_cfg", "pose_cfg_start", "pose_cfg_end",
    "shift", "seed", CONTROL, "solver", "length", "max_area", "first_frame", "segment_frames", "segment_overlap",
    "color_correction"];
const CACHE = ["step_cache", "cache_threshold", "cache_keep_first", "cache_keep_last", "cache_max_skip"];
export const OLD_LAYOUTS = [
    BASE,
    [...BASE, "noise"],
    [...BASE, "noise", "pose_resize", "background"],
    [...BASE, "noise", ...CACHE],
    [...BASE, "noise", "pose_resize", "background", ...CACHE],
    ["prompt", "steps", "text_cfg", "pose_cfg", "seed", CONTROL, "length", "max_area", "negative_prompt",
        "pose_cfg_start", "pose_cfg_end", "shift", "solver", "first_frame", "segment_frames", "segment_overlap",
        "color_correction", "noise", "pose_resize", ...CACHE, "background"],
];

/** The widget inputs of a node definition (ComfyUI's /object_info entry) in the frontend's order: [name, options]. */
function widgetInputs(def) {
    const out = [];
    for (const section of ["required", "optional"]) {
        const inputs = def?.input?.[section] ?? {};
        const order = def?.input_order?.[section] ?? Object.keys(inputs);
        for (const name of order) {
            const [type, options] = inputs[name] ?? [];
            const isWidget = Array.isArray(type) || WIDGET_TYPES.has(type);
            if (isWidget && !options?.forceInput) out.push([name, options ?? {}, type]);
        }
    }
    return out;
}

/** The names of a node's widgets_values entries in order (the seed's control value after the seed). */
export function widgetNames(def) {
    const names = [];
    for (const [name, options] of widgetInputs(def)) {
        names.push(name);
        if (options.control_after_generate) names.push(`${name}:control`);
    }
    return names;
}

/** {name: default} of a node definition's widgets (the control value "fixed"). */
export function widgetDefaults(def) {
    const defaults = {};
    for (const [name, options, type] of widgetInputs(def)) {
        defaults[name] = options.default ?? (Array.isArray(type) ? type[0] : options.options?.[0]);
        if (options.control_after_generate) defaults[`${name}:control`] = "fixed";
    }
    return defaults;
}

function fits(value, type) {
    if (Array.isArray(type) || type === "COMBO" || type === "STRING") return typeof value === "string";
    if (type === "INT" || type === "FLOAT") return typeof value === "number";
    if (type === "BOOLEAN") return typeof value === "boolean";
    return true;
}

/** The old layout of a saved sampler's values (each value of the type its widget takes in the definitions
 * ``defs``), or null when they are in the current layout or in none of the known ones. */
export function oldLayout(values, defs) {
    const types = {};
    for (const def of [defs?.[SAMPLER], defs?.[OPTIONS]]) {
        for (const [name, , type] of widgetInputs(def)) types[name] = type;
    }
    if (!Array.isArray(values) || values.length === widgetNames(defs?.[SAMPLER]).length) return null;
    return OLD_LAYOUTS.find((names) => names.length === values.length
        && names.every((name, i) => (name === CONTROL ? typeof values[i] === "string" : fits(values[i], types[name]))))
        ?? null;
}

function same(a, b) {
    return typeof a === "number" && typeof b === "number" ? Math.abs(a - b) < 1e-9 : a === b;
}

function linkParts(link) {
    // saved links are [id, origin, origin slot, target, target slot, type] (0.4) or objects (subgraphs, 1.0)
    return Array.isArray(link) ? { id: link[0], target_id: link[3] } : link;
}

function newLink(asArray, id, origin, target, slot) {
    return asArray ? [id, origin, 0, target, slot, OPTIONS_TYPE]
        : { id, origin_id: origin, origin_slot: 0, target_id: target, target_slot: slot, type: OPTIONS_TYPE };
}

/**
 * Migrates the old samplers of one graph ({nodes, links, last_node_id, last_link_id}) in place, with the node
 * definitions {SteadyDancerSampler: def, SteadyDancerSamplerOptions: def}; new links are written as arrays (the 0.4
 * format) or objects (subgraphs, the 1.0 format) like the graph's own. Returns one line per migrated sampler and the
 * pairs {sampler, options} (node ids; options null when every expert value was at its default).
 */
export function migrateGraph(graph, defs, linksAsArrays = true) {
    const lines = [];
    const pairs = [];
    if (!Array.isArray(graph?.nodes) || !defs?.[SAMPLER] || !defs?.[OPTIONS]) return { lines, pairs };
    const samplerNames = widgetNames(defs[SAMPLER]);
    const samplerDefaults = widgetDefaults(defs[SAMPLER]);
    const optionNames = widgetNames(defs[OPTIONS]);
    const optionDefaults = widgetDefaults(defs[OPTIONS]);
    graph.links ??= [];
    const asArray = graph.links.length ? Array.isArray(graph.links[0]) : linksAsArrays;
    let lastNode = Math.max(graph.last_node_id ?? 0, ...graph.nodes.map((n) => Number(n.id) || 0));
    let lastLink = Math.max(graph.last_link_id ?? 0, ...graph.links.map((l) => Number(linkParts(l).id) || 0));
    for (const node of [...graph.nodes]) {
        if (node.type !== SAMPLER) continue;
        const layout = oldLayout(node.widgets_values, defs);
        if (!layout) continue;
        const old = Object.fromEntries(layout.map((name, i) => [name, node.widgets_values[i]]));
        node.widgets_values = samplerNames.map((name) => (name in old ? old[name] : samplerDefaults[name]));
        const changed = optionNames.filter((name) => name in old && !same(old[name], optionDefaults[name]));
        const unknown = layout.filter((name) => !samplerNames.includes(name) && !optionNames.includes(name));
        let options = null;
        if (changed.length) {
            options = ++lastNode;
            const linkId = ++lastLink;
            node.inputs ??= [];
            let slot = node.inputs.findIndex((input) => input.name === "options");
            if (slot < 0) {
                node.inputs.push({ name: "options", type: OPTIONS_TYPE, link: null, shape: 7 });
                slot = node.inputs.length - 1;
            }
            node.inputs[slot].link = linkId;
            graph.nodes.push({
                id: options, type: OPTIONS, pos: [node.pos?.[0] ?? 0, (node.pos?.[1] ?? 0) + 400],
                size: [Math.max(320, node.size?.[0] ?? 320), 480], flags: {}, order: graph.nodes.length, mode: 0,
                inputs: [], outputs: [{ name: "options", type: OPTIONS_TYPE, links: [linkId], slot_index: 0 }],
                properties: { "Node name for S&R": OPTIONS },
                widgets_values: optionNames.map((name) => (name in old ? old[name] : optionDefaults[name])),
            });
            graph.links.push(newLink(asArray, linkId, options, node.id, slot));
        }
        const moved = changed.map((name) => `${name} ${JSON.stringify(old[name])}`).join(", ");
        lines.push(`SteadyDancer Sampler #${node.id} was saved with an older layout: its values were kept`
            + (changed.length ? `; ${moved} moved to a new SteadyDancer Sampler Options node connected to it`
                : "; its expert settings were at their defaults (no options node needed)")
            + (unknown.length ? `; ${unknown.join(", ")} no longer exist` : "") + ".");
        pairs.push({ sampler: node.id, options });
    }
    graph.last_node_id = lastNode;
    graph.last_link_id = lastLink;
    return { lines, pairs };
}

/** migrateGraph over a workflow and its subgraph definitions. */
export function migrateWorkflow(workflow, defs) {
    const lines = [];
    const pairs = [];
    const subgraphs = (workflow?.definitions?.subgraphs ?? []).map((graph) => [graph, false]);
    const graphs = [[workflow, workflow?.version !== 1], ...subgraphs];
    for (const [graph, linksAsArrays] of graphs) {
        const result = migrateGraph(graph, defs, linksAsArrays);
        lines.push(...result.lines);
        pairs.push(...result.pairs);
    }
    return { lines, pairs };
}
