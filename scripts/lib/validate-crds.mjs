// Validates the ServiceMonitor and PrometheusRule objects of deploy/kubernetes/ against the
// Prometheus Operator's CRD schemas, as compiled into the npm package
// @kubernetes-models/prometheus-operator (types, required fields, enums, the duration
// patterns of `interval` and `for`). Those schemas, like the CRDs themselves, accept unknown
// fields (the API server drops them, so a misspelled `scrapeTimout` would silently not
// apply). Unknown fields are therefore looked up separately, in the field lists of the same
// package's type declarations (the `declare class` of each type's .d.ts): a field that is not
// declared for its type is an error.
//
// Usage: node validate-crds.mjs NODE_MODULES_DIR CRDS_JSON
//   CRDS_JSON: [{file, doc}], written by check_kubernetes.py. Exits 1 listing every error.
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
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

// The fields a type declares, from its .d.ts: {field: type text}, or null for a type that is
// not an object (a string, a number, IntOrString, a Duration...): nothing to look up.
const declared = new Map();
function fieldsOf(file) {
  if (!declared.has(file)) declared.set(file, parseDeclaration(file));
  return declared.get(file);
}
function parseDeclaration(file) {
  if (!existsSync(file)) return null;
  const text = readFileSync(file, "utf8")
    .replace(/\/\*\*[\s\S]*?\*\//g, "")
    // A map's value type on one line: {\n [key: string]: T;\n } -> {[key: string]: T}
    .replace(/\{\s*\[key: string\]: ([^;]+);\s*\}/g, "{[key: string]: $1}");
  const body = text.match(/export declare class \w+ extends Model<[^>]*> implements \w+ \{([\s\S]*?)\n\}/);
  if (!body) return null;
  const imports = {};
  for (const [, names, from] of text.matchAll(/import \{ ([^}]+) \} from "([^"]+)"/g)) {
    const target = from.startsWith(".") ? resolve(dirname(file), from.replace(/\.js$/, ".d.ts")) : join(modules, `${from}.d.ts`);
    for (const n of names.split(",")) imports[n.trim()] = target;
  }
  const fields = {};
  for (const [, name, type] of body[1].matchAll(/^\s+"([^"]+)"\??: (.+);$/gm)) fields[name] = resolveType(type, imports);
  return fields;
}
// {file} for an object type, {array: t}, {map: t}, or {} for anything else.
function resolveType(type, imports) {
  let m;
  if ((m = type.match(/^Array<(.+)>$/))) return { array: resolveType(m[1], imports) };
  if ((m = type.match(/^\{\[key: string\]: (.+)\}$/))) return { map: resolveType(m[1], imports) };
  return imports[type] ? { file: imports[type] } : {};
}
let fieldsChecked = 0;
function unknownFields(value, type, path, out) {
  if (value === null || typeof value !== "object") return;
  if (type.array) return Array.isArray(value) && value.forEach((v, i) => unknownFields(v, type.array, `${path}/${i}`, out));
  if (type.map) return Object.entries(value).forEach(([k, v]) => unknownFields(v, type.map, `${path}/${k}`, out));
  const fields = type.file && fieldsOf(type.file);
  if (!fields || Array.isArray(value)) return;
  for (const [k, v] of Object.entries(value)) {
    fieldsChecked++;
    if (!(k in fields)) out.push(`${path}/${k}: unknown field (known: ${Object.keys(fields).sort().join(", ")})`);
    else unknownFields(v, fields[k], `${path}/${k}`, out);
  }
}
const kindFile = (kind) => join(modules, "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1", `${kind}.d.ts`);
for (const kind of ["ServiceMonitor", "PrometheusRule"]) {
  // Guards against a package layout this parser no longer reads, which would check nothing.
  if (!fieldsOf(kindFile(kind))?.spec) {
    console.error(`cannot read the fields of ${kind} from ${kindFile(kind)}`);
    process.exit(1);
  }
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
  } catch (e) {
    errors.push(`${where}: ${e.message}`);
    continue;
  }
  const unknown = [];
  unknownFields(doc, { file: kindFile(doc.kind) }, "data", unknown);
  if (unknown.length) {
    errors.push(...unknown.map((u) => `${where}: ${u}`));
    continue;
  }
  counts[doc.kind] = (counts[doc.kind] ?? 0) + 1;
}
if (errors.length) {
  console.error(errors.join("\n"));
  process.exit(1);
}
if (!crds.length) {
  console.error("no ServiceMonitor or PrometheusRule to validate");
  process.exit(1);
}
console.log(
  `valid against the Prometheus Operator CRD schemas, no unknown field (${fieldsChecked} fields looked up): ` +
    Object.entries(counts).map(([k, n]) => `${n} ${k}`).join(", "),
);
