#!/usr/bin/env node
// Renders src/events.generated.ts from the JSON Schemas in schemas/json/ (the worker's contract).
//
//   node scripts/generate-types.js          write src/events.generated.ts
//   node scripts/generate-types.js --check  exit 1 when the committed file differs from the schemas
//
// No dependencies: the schemas use a small, fixed subset of JSON Schema, and any keyword outside it
// stops the generator, so a schema change can never be skipped silently.
'use strict';

const fs = require('node:fs');
const path = require('node:path');

const PACKAGE = path.resolve(__dirname, '..');
const SCHEMA_DIR = path.resolve(PACKAGE, '..', '..', 'schemas', 'json');
const OUTPUT = path.join(PACKAGE, 'src', 'events.generated.ts');

const SCHEMA_KEYS = new Set([
  '$schema', '$id', 'title', 'description', 'type', 'required', 'properties', 'additionalProperties',
]);
const PROPERTY_KEYS = new Set([
  'type', 'description', 'enum', 'minLength', 'maxLength', 'pattern', 'minimum', 'maximum', 'format',
  'additionalProperties',
]);

function pascal(name) {
  return name.replace(/(^|_)([a-z])/g, (_, __, c) => c.toUpperCase());
}

function fail(where, message) {
  throw new Error(`${where}: ${message} (teach scripts/generate-types.js this keyword)`);
}

function tsType(where, prop) {
  const kinds = Array.isArray(prop.type) ? prop.type : [prop.type];
  const out = [];
  for (const kind of kinds) {
    if (kind === 'string' && prop.enum) {
      out.push(...prop.enum.map((v) => JSON.stringify(v)));
    } else if (kind === 'string') {
      out.push('string');
    } else if (kind === 'integer' || kind === 'number') {
      if (!out.includes('number')) out.push('number');
    } else if (kind === 'boolean') {
      out.push('boolean');
    } else if (kind === 'null') {
      out.push('null');
    } else if (kind === 'object') {
      const values = prop.additionalProperties;
      if (!values || typeof values !== 'object' || Object.keys(values).join() !== 'type') {
        fail(where, 'an object property needs additionalProperties: {type: ...}');
      }
      out.push(`{ [key: string]: ${tsType(`${where}.additionalProperties`, values)} }`);
    } else {
      fail(where, `type ${JSON.stringify(kind)}`);
    }
  }
  return out.join(' | ');
}

function constraints(prop) {
  const kinds = Array.isArray(prop.type) ? prop.type : [prop.type];
  const notes = [];
  if (kinds.includes('integer')) notes.push(kinds.length > 1 ? 'numbers: integers only' : 'an integer');
  if (prop.minLength !== undefined || prop.maxLength !== undefined) {
    notes.push(`${prop.minLength ?? 0} to ${prop.maxLength ?? 'any number of'} characters`);
  }
  if (prop.pattern !== undefined) notes.push(`matches \`${prop.pattern}\``);
  if (prop.minimum !== undefined) notes.push(`>= ${prop.minimum}`);
  if (prop.maximum !== undefined) notes.push(`<= ${prop.maximum}`);
  if (prop.format !== undefined) notes.push(`strings: ${prop.format}`);
  return notes;
}

/** The documented field lines of one schema: [{ name, lines }], in the schema's order. */
function schemaFields(type, schema) {
  const where = `${type}.schema.json`;
  for (const key of Object.keys(schema)) if (!SCHEMA_KEYS.has(key)) fail(where, `keyword ${key}`);
  if (schema.type !== 'object') fail(where, 'the top level must be an object');
  const required = new Set(schema.required ?? []);
  const fields = [];
  for (const [name, prop] of Object.entries(schema.properties)) {
    for (const key of Object.keys(prop)) if (!PROPERTY_KEYS.has(key)) fail(`${where} ${name}`, `keyword ${key}`);
    const notes = constraints(prop);
    const text = (prop.description ?? '') + (notes.length ? ` (${notes.join('; ')})` : '');
    fields.push({
      name,
      lines: [
        `  /** ${text.replace(/\*\//g, '*\\/')} */`,
        `  ${name}${required.has(name) ? '' : '?'}: ${tsType(`${where} ${name}`, prop)};`,
      ],
    });
  }
  if (schema.additionalProperties === true) {
    fields.push({
      name: '[extra]',
      lines: ['  /** Unknown fields are kept and ignored by the worker. */', '  [extra: string]: unknown;'],
    });
  }
  return fields;
}

/** The fields every schema has, written the same way in each: they go into `EventFields` once. */
function commonFields(all) {
  const same = (a, b) => a && a.lines.join('\n') === b.lines.join('\n');
  return all[0].filter((field) => all.every((fields) => same(fields.find((f) => f.name === field.name), field)));
}

function renderSchema(type, schema, fields, common) {
  const topic = /topic '([^']+)'/.exec(schema.description ?? '');
  if (!topic) fail(`${type}.schema.json`, "the description names no topic ('events....')");
  const shared = new Set(common.map((f) => f.name));
  const lines = [`/** ${schema.description} */`, `export interface ${pascal(type)}Event extends EventFields {`];
  for (const field of fields) if (!shared.has(field.name)) lines.push(...field.lines);
  lines.push('}');
  return { lines, topic: topic[1] };
}

/** The text of src/events.generated.ts for the schemas in `dir`. */
function render(dir = SCHEMA_DIR) {
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.schema.json')).sort();
  if (files.length === 0) throw new Error(`no *.schema.json in ${dir}`);
  const out = [
    '// Generated by scripts/generate-types.js from schemas/json/ (the worker\'s event contract).',
    '// Do not edit: run `npm run generate`. `npm test` fails when this file and the schemas differ.',
    '',
  ];
  const types = files.map((file) => file.slice(0, -'.schema.json'.length));
  const schemas = files.map((file) => JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')));
  const fields = schemas.map((schema, i) => schemaFields(types[i], schema));
  const common = commonFields(fields);
  out.push('/** The fields every event type has. */', 'export interface EventFields {');
  for (const field of common) out.push(...field.lines);
  out.push('}', '');
  const topics = [];
  schemas.forEach((schema, i) => {
    const { lines, topic } = renderSchema(types[i], schema, fields[i], common);
    out.push(...lines, '');
    topics.push([types[i], topic]);
  });
  out.push('/** Event types and the topic each goes to (after the topic prefix). */');
  out.push('export const EVENT_TOPICS = {');
  for (const [type, topic] of topics) out.push(`  ${type}: ${JSON.stringify(topic)},`);
  out.push('} as const;', '');
  out.push('/** An event type: "order", "request", ... */');
  out.push('export type EventType = keyof typeof EVENT_TOPICS;', '');
  out.push('/** The event shape of each event type. */');
  out.push('export interface EventMap {');
  for (const [type] of topics) out.push(`  ${type}: ${pascal(type)}Event;`);
  out.push('}', '');
  return out.join('\n');
}

module.exports = { render, OUTPUT, SCHEMA_DIR };

if (require.main === module) {
  const text = render();
  if (process.argv.includes('--check')) {
    const current = fs.existsSync(OUTPUT) ? fs.readFileSync(OUTPUT, 'utf8') : '';
    if (current !== text) {
      console.error(`${path.relative(process.cwd(), OUTPUT)} differs from schemas/json/: run npm run generate`);
      process.exit(1);
    }
  } else {
    fs.writeFileSync(OUTPUT, text);
    console.log(`wrote ${path.relative(process.cwd(), OUTPUT)}`);
  }
}
