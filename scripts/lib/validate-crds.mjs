// Validates the ServiceMonitor and PrometheusRule objects of deploy/kubernetes/ against the
// Prometheus Operator's CRD schemas, as compiled into the npm package
// @kubernetes-models/prometheus-operator (types, required fields, enums, the duration
// patterns of `interval` and `for`). Those schemas, like the CRDs themselves, allow unknown
// fields (the API server drops them), so a misspelled optional field passes here: the rest of
// scripts/check-kubernetes.sh does not rely on this for that.
//
// Usage: node validate-crds.mjs NODE_MODULES_DIR CRDS_JSON
//   CRDS_JSON: [{file, doc}], written by check_kubernetes.py. Exits 1 listing every error.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [modules, crdsFile] = process.argv.slice(2);
if (!modules || !crdsFile) {
  console.error("usage: node validate-crds.mjs NODE_MODULES_DIR CRDS_JSON");
  process.exit(2);
}

// Loaded by path: this script lives in the repository, the package in target/.
async function model(kind) {
  const file = join(modules, "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1", `${kind}.js`);
  return (await import(pathToFileURL(file).href))[kind];
}

const kinds = { ServiceMonitor: await model("ServiceMonitor"), PrometheusRule: await model("PrometheusRule") };
const crds = JSON.parse(readFileSync(crdsFile, "utf8"));
const errors = [];
const counts = {};
for (const { file, doc } of crds) {
  const Model = kinds[doc.kind];
  const where = `${file}: ${doc.kind}/${doc.metadata?.name}`;
  if (!Model || doc.apiVersion !== Model.apiVersion) {
    errors.push(`${where}: no schema for ${doc.apiVersion} ${doc.kind}`);
    continue;
  }
  try {
    new Model(doc).validate();
    counts[doc.kind] = (counts[doc.kind] ?? 0) + 1;
  } catch (e) {
    errors.push(`${where}: ${e.message}`);
  }
}
if (errors.length) {
  console.error(errors.join("\n"));
  process.exit(1);
}
if (!crds.length) {
  console.error("no ServiceMonitor or PrometheusRule to validate");
  process.exit(1);
}
console.log(`valid against the Prometheus Operator CRD schemas: ${Object.entries(counts).map(([k, n]) => `${n} ${k}`).join(", ")}`);
