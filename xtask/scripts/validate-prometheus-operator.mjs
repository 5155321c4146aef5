// Validates ServiceMonitor, PodMonitor and PrometheusRule objects against the
// prometheus-operator schemas that the npm package @kubernetes-models/prometheus-operator
// carries. Usage: node validate-prometheus-operator.mjs NODE_MODULES_DIR FILE...
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const [modulesArg, ...files] = process.argv.slice(2);
const modules = path.resolve(modulesArg);
const require = createRequire(path.join(modules, "noop.js"));
const yaml = require("js-yaml");
const v1 = await import(
  pathToFileURL(path.join(modules, "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/index.js"))
);
const kinds = {
  ServiceMonitor: v1.ServiceMonitor,
  PodMonitor: v1.PodMonitor,
  PrometheusRule: v1.PrometheusRule,
};
let failed = 0;
let checked = 0;
for (const file of files) {
  for (const doc of yaml.loadAll(fs.readFileSync(file, "utf8"))) {
    if (!doc) continue;
    const Model = kinds[doc.kind];
    if (!Model) {
      console.error(`${file}: ${doc.kind} is not a prometheus-operator kind`);
      failed++;
      continue;
    }
    try {
      new Model(doc).validate();
      checked++;
      console.log(`${file}: ${doc.kind}/${doc.metadata?.name} valid`);
    } catch (e) {
      failed++;
      console.error(`${file}: ${doc.kind} invalid: ${e.message}`);
    }
  }
}
if (checked === 0 && failed === 0) {
  console.error("no objects checked");
  process.exit(2);
}
process.exit(failed ? 1 : 0);
