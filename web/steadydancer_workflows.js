// Opens workflows saved with an older SteadyDancer Sampler (see steadydancer_migrate.js): before the graph is
// configured their values are moved by name, then the migrated samplers are resized to their new widgets and the
// SteadyDancer Sampler Options nodes placed under them; one notice says what was moved.
//
// The file is served at /extensions/<pack folder>/steadydancer_workflows.js, so the app is two levels up.
import { app } from "../../scripts/app.js";
import { OPTIONS, SAMPLER, migrateWorkflow } from "./steadydancer_migrate.js";

const defs = {};
let pending = [];

function notify(lines) {
    for (const line of lines) console.info(`[SteadyDancer] ${line}`);
    const toast = app.extensionManager?.toast;
    if (lines.length && toast?.add) {
        toast.add({ severity: "info", summary: "SteadyDancer: older workflow opened", detail: lines.join("\n"),
            life: 15000 });
    }
}

app.registerExtension({
    name: "SteadyDancer.OlderWorkflows",
    async beforeRegisterNodeDef(nodeType, nodeData) {
        if (nodeData?.name === SAMPLER || nodeData?.name === OPTIONS) defs[nodeData.name] = nodeData;
    },
    async beforeConfigureGraph(graphData) {
        const { lines, pairs } = migrateWorkflow(graphData, defs);
        pending = pairs;
        notify(lines);
    },
    async afterConfigureGraph() {
        for (const { sampler, options } of pending) {
            const node = app.graph?.getNodeById?.(sampler);
            if (!node) continue;
            node.setSize?.([node.size[0], node.computeSize()[1]]);
            const extra = options === null ? null : app.graph.getNodeById(options);
            if (extra) {
                extra.setSize?.([Math.max(extra.size[0], node.size[0]), extra.computeSize()[1]]);
                extra.pos = [node.pos[0], node.pos[1] + node.size[1] + 60];
            }
        }
        pending = [];
        app.graph?.setDirtyCanvas?.(true, true);
    },
});
