#!/usr/bin/env node
// Writes dashboard.schema.json: a JSON Schema of the `Dashboard` type that @grafana/schema (Grafana's own
// dashboard types, generated from its CUE kinds) exports, made with ts-json-schema-generator. Both packages are
// pinned in package.json / package-lock.json, so the schema only changes when a pin does.
//
//   node gen-schema.js [OUTPUT]      (default: dashboard.schema.json beside this script)
//
// Interfaces are closed (`additionalProperties: false`), so a misspelt or unknown dashboard/panel key fails
// validation instead of being ignored by Grafana. Open-ended parts of the type (panel `options`, `targets`,
// `fieldConfig.defaults.custom`) stay open, as in Grafana: their shape belongs to each panel plugin.
'use strict';

const fs = require('fs');
const path = require('path');
const { createGenerator } = require('ts-json-schema-generator');

const entry = require.resolve('@grafana/schema/package.json');
const typesIndex = path.join(path.dirname(entry), 'dist', 'types', 'raw', 'dashboard', 'x', 'dashboard_types.gen.d.ts');
const out = process.argv[2] || path.join(__dirname, 'dashboard.schema.json');

const schema = createGenerator({
  path: typesIndex,
  type: 'Dashboard',
  expose: 'export',
  topRef: true,
  additionalProperties: false,
  // The package's .d.ts files are consistent by construction; type-checking them against this Node's lib
  // would only add noise (and minutes).
  skipTypeCheck: true,
  jsDoc: 'extended',
}).createSchema('Dashboard');

schema.$id = `grafana-schema-${require('@grafana/schema/package.json').version}/Dashboard`;
fs.writeFileSync(out, JSON.stringify(schema, null, 2) + '\n');
console.log(`wrote ${path.relative(process.cwd(), out) || out} (@grafana/schema ${require('@grafana/schema/package.json').version})`);
