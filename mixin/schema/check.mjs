// Type-checks every dashboards/*.json against Grafana's own published types: the dashboard,
// its variables, links and row panels against @grafana/schema's Dashboard, VariableModel and
// RowPanel; each panel against Panel, its fieldConfig.defaults.custom against the panel
// plugin's FieldConfig (timeseries, table) and its queries against the Prometheus query
// type of grafana-foundation-sdk. A JSON object literal assigned to those types fails on an
// unknown key, a wrong type or a missing required field: what Grafana would drop, misread or
// refuse when it loads the panel. Run by scripts/check-dashboard-schema.sh; exits 1 naming the
// dashboard and panel of each error.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const here = path.dirname(fileURLToPath(import.meta.url));
const dir = process.argv[2] ?? path.join(here, '..', '..', 'dashboards');
const generated = path.join(here, 'generated');

// Panel plugins whose field-config types @grafana/schema publishes, by panel type (stat
// publishes none: a stat panel with custom field config fails below).
const PLUGINS = {
  timeseries: 'TimeSeriesPanelCfg',
  table: 'TablePanelCfg',
};

const prelude = `
import type { Dashboard, Panel, RowPanel } from '@grafana/schema';
import type * as prometheus from '@grafana/grafana-foundation-sdk/prometheus';
${Object.entries(PLUGINS)
  .map(([type, name]) => `import type { FieldConfig as ${type}Custom } from '@grafana/schema/dist/esm/raw/composable/${type}/panelcfg/x/${name}_types.gen';`)
  .join('\n')}

// The types as JSON spells them: a string enum as its values, a numeric one as a number.
type Json<T> =
  T extends string ? \`\${T}\` :
  T extends number ? number :
  T extends boolean ? boolean :
  T extends null | undefined ? T :
  T extends readonly (infer U)[] ? Json<U>[] :
  T extends object ? { [K in keyof T as T[K] extends Function ? never : K]: Json<T[K]> } :
  T;
type PromQuery = Json<prometheus.dataquery>;
`;

const locations = new Map(); // generated constant -> "dashboard / panel"
let source = prelude;
const files = fs.readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
if (files.length === 0) {
  console.error(`no dashboards in ${dir}`);
  process.exit(1);
}
files.forEach((file, b) => {
  const board = JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8'));
  const { panels = [], ...rest } = board;
  const name = `dashboard${b}`;
  locations.set(name, `${file}`);
  source += `\nexport const ${name}: Json<Omit<Dashboard, 'panels'>> = ${JSON.stringify(rest, null, 2)};\n`;
  panels.forEach((panel, p) => {
    const id = `${name}_panel${p}`;
    locations.set(id, `${file} / panel "${panel.title}" (${panel.type})`);
    if (panel.type === 'row') {
      source += `export const ${id}: Json<RowPanel> = ${JSON.stringify(panel, null, 2)};\n`;
      return;
    }
    const { targets = [], fieldConfig, ...body } = panel;
    const custom = fieldConfig?.defaults?.custom;
    const defaults = { ...(fieldConfig?.defaults ?? {}) };
    delete defaults.custom;
    const plain = { ...body, fieldConfig: fieldConfig && { ...fieldConfig, defaults } };
    source += `export const ${id}: Json<Omit<Panel, 'targets'>> = ${JSON.stringify(plain, null, 2)};\n`;
    source += `export const ${id}_targets: PromQuery[] = ${JSON.stringify(targets, null, 2)};\n`;
    if (custom !== undefined) {
      if (!(panel.type in PLUGINS)) {
        source += `export const ${id}_custom: never = ${JSON.stringify(custom)}; // no published type for "${panel.type}"\n`;
      } else {
        source += `export const ${id}_custom: Json<${panel.type}Custom> = ${JSON.stringify(custom, null, 2)};\n`;
      }
    }
  });
});

fs.mkdirSync(generated, { recursive: true });
// One file per run: two checks at once (the test command and a test) do not share it.
const checked = path.join(generated, `dashboards-${process.pid}.ts`);
fs.writeFileSync(checked, source);

const program = ts.createProgram([checked], {
  strict: true,
  noEmit: true,
  module: ts.ModuleKind.NodeNext,
  moduleResolution: ts.ModuleResolutionKind.NodeNext,
  target: ts.ScriptTarget.ES2022,
  skipLibCheck: true,
  types: [],
});
const diagnostics = ts.getPreEmitDiagnostics(program);
fs.rmSync(checked);
const lines = source.split('\n');
const owner = (line) => {
  for (let i = line; i >= 0; i--) {
    const m = /^export const (\w+?)(_targets|_custom)?: /.exec(lines[i]);
    if (m) return `${locations.get(m[1]) ?? m[1]}${m[2] === '_targets' ? ', queries' : m[2] === '_custom' ? ', fieldConfig.defaults.custom' : ''}`;
  }
  return '(prelude)';
};
for (const d of diagnostics) {
  const message = ts.flattenDiagnosticMessageText(d.messageText, '\n    ');
  if (d.file && d.start !== undefined) {
    const { line } = d.file.getLineAndCharacterOfPosition(d.start);
    console.error(`${owner(line)}: ${message}\n    at ${lines[line].trim()}`);
  } else {
    console.error(message);
  }
}
if (diagnostics.length > 0) {
  console.error(`${diagnostics.length} schema error(s) in ${dir}: fix the panel in mixin/dashboards/, then run scripts/render-mixin.sh`);
  process.exit(1);
}
const panelCount = [...locations.keys()].filter((k) => k.includes('_panel')).length;
console.log(`dashboards: ${files.length} files, ${panelCount} panels match Grafana's schema (@grafana/schema ${JSON.parse(fs.readFileSync(path.join(here, 'node_modules/@grafana/schema/package.json'), 'utf8')).version})`);
