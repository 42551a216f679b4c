// Schema checks of the custom resources kubernetes-validate has no schema for: the Prometheus Operator's
// ServiceMonitor, PodMonitor and PrometheusRule, and CloudNativePG's Cluster, against the models of the
// @kubernetes-models packages (generated from the operators' own API types).
//
// Two checks, because each misses what the other catches:
//   1. the models' validate() (JSON schema): types, enums, required fields; it accepts unknown fields;
//   2. every object written as a typed literal (`const object: IServiceMonitor = {...}`) into a .mts file and
//      compiled with `tsc --strict`: TypeScript's excess-property check refuses any field the API does not have,
//      at any depth (a misspelt `scrapeInterval` would otherwise be dropped by the API server in silence).
//
// Usage: node check_operator_kinds.mjs NODE_MODULES WORK_DIR OBJECTS.json...
//   NODE_MODULES holds the pinned packages (kubernetes/check.sh installs them into its cache); each OBJECTS.json
//   is a list of {where, object} (kubernetes/check_static.py writes one per overlay). Exits 1 on any failure.
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { pathToFileURL } from "node:url";

// apiVersion/kind -> the model's module (under NODE_MODULES) and its interface.
const MODELS = {
  "monitoring.coreos.com/v1/ServiceMonitor":
    ["@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor", "IServiceMonitor"],
  "monitoring.coreos.com/v1/PodMonitor":
    ["@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor", "IPodMonitor"],
  "monitoring.coreos.com/v1/PrometheusRule":
    ["@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule", "IPrometheusRule"],
  "postgresql.cnpg.io/v1/Cluster":
    ["@kubernetes-models/cloudnative-pg/postgresql.cnpg.io/v1/Cluster", "ICluster"],
};

const [modules, work, ...inputs] = process.argv.slice(2);
if (!modules || !work || inputs.length === 0) {
  console.error("usage: check_operator_kinds.mjs NODE_MODULES WORK_DIR OBJECTS.json...");
  process.exit(2);
}

const failures = [];
const fail = (where, message) => failures.push(`${where}: ${message}`);

// A literal with one key per line, and the JSON path of each line, so that tsc's line numbers name a field.
function literal(value, path, indent, lines, paths) {
  const pad = "  ".repeat(indent);
  const emit = (text, at) => { lines.push(text); paths.push(at); };
  if (Array.isArray(value) || (value !== null && typeof value === "object")) {
    const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
    const [open, close] = Array.isArray(value) ? ["[", "]"] : ["{", "}"];
    lines[lines.length - 1] += open;
    for (const [key, child] of entries) {
      const at = `${path}${Array.isArray(value) ? `[${key}]` : `.${key}`}`;
      emit(`${pad}  ${Array.isArray(value) ? "" : `${JSON.stringify(key)}: `}`, at);
      literal(child, at, indent + 1, lines, paths);
      lines[lines.length - 1] += ",";
    }
    emit(`${pad}${close}`, path);
  } else {
    lines[lines.length - 1] += JSON.stringify(value);
  }
}

const ts = join(work, "ts");
mkdirSync(ts, { recursive: true });
try { symlinkSync(modules, join(ts, "node_modules")); } catch (e) { if (e.code !== "EEXIST") throw e; }
const files = {};   // .mts name -> {where, paths}
let validated = 0;
for (const input of inputs) {
  const overlay = basename(input).replace(/\.json$/, "");
  for (const { where, object } of JSON.parse(readFileSync(input, "utf8"))) {
    const key = `${object.apiVersion}/${object.kind}`;
    if (!(key in MODELS)) {
      fail(where, `no model for ${key}`);
      continue;
    }
    const [module, iface] = MODELS[key];
    const model = await import(pathToFileURL(join(modules, `${module}.js`)).href);
    try {
      new model[object.kind](object).validate();
    } catch (e) {
      fail(where, `${key} schema: ${(e.errors || []).map((x) => `${x.instancePath || "/"} ${x.message}`).join("; ")
        || e.message}`);
    }
    validated++;
    const name = `${overlay}.${object.kind}.${object.metadata?.namespace ?? "default"}.${object.metadata?.name}`
      .replace(/[^A-Za-z0-9._-]/g, "_") + ".mts";
    const lines = [`import type { ${iface} } from ${JSON.stringify(module)};`, "export const object: " + iface + " = "];
    const paths = [null, ""];
    literal(object, "", 0, lines, paths);
    lines[lines.length - 1] += ";";
    writeFileSync(join(ts, name), lines.join("\n") + "\n");
    files[name] = { where, paths };
  }
}

writeFileSync(join(ts, "tsconfig.json"), JSON.stringify({
  compilerOptions: {
    noEmit: true, strict: true, module: "nodenext", moduleResolution: "nodenext", target: "es2022",
    // The packages' own declarations are not ours to check; our literals are checked in full.
    skipLibCheck: true, types: [], pretty: false,
  },
  files: Object.keys(files),
}));
let compiled = 0;
if (Object.keys(files).length > 0) {
  try {
    execFileSync(process.execPath, [join(modules, "typescript", "bin", "tsc"), "-p", ts],
      { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    compiled = Object.keys(files).length;
  } catch (e) {
    const out = `${e.stdout || ""}${e.stderr || ""}`.trim();
    let named = false;
    for (const line of out.split("\n")) {
      const m = line.match(/^(.*?\.mts)\((\d+),\d+\): error (TS\d+): (.*)$/);
      const file = m && files[basename(m[1])];
      if (file) {
        fail(file.where, `typed literal (tsc ${m[3]}) at ${file.paths[Number(m[2]) - 1] || "top"}: ${m[4]}`);
        named = true;
      }
    }
    if (!named) fail("tsc", out || `exited ${e.status}`);
  }
}

for (const f of failures) console.error(`kubernetes: FAIL ${f}`);
if (failures.length > 0) {
  console.error(`kubernetes: ${failures.length} operator-kind check(s) failed`);
  process.exit(1);
}
console.error(`kubernetes: ${validated} custom resources pass the operator models' validate() and tsc --strict on ` +
  `typed literals (${compiled} files)`);
