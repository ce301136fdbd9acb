// One schema, two languages: src/events.generated.ts is exactly what schemas/json/ renders to.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { EVENT_TOPICS } from '../src';

const PACKAGE = path.resolve(__dirname, '..', '..');
const generator = createRequire(__filename)(path.join(PACKAGE, 'scripts', 'generate-types.js')) as {
  render(dir?: string): string;
  OUTPUT: string;
  SCHEMA_DIR: string;
};

test('the committed generated types are what the schemas render', () => {
  const committed = fs.readFileSync(generator.OUTPUT, 'utf8');
  assert.ok(
    committed === generator.render(),
    'src/events.generated.ts differs from schemas/json/: run `npm run generate` in clients/node and commit it',
  );
});

test('every schema has its event type and topic', () => {
  const kinds = fs.readdirSync(generator.SCHEMA_DIR).map((f) => f.replace('.schema.json', '')).sort();
  assert.deepEqual(Object.keys(EVENT_TOPICS).sort(), kinds);
  assert.equal(EVENT_TOPICS.order, 'events.orders');
});

test('a changed schema changes the rendering; an unknown keyword stops the generator', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'schemas-'));
  try {
    for (const file of fs.readdirSync(generator.SCHEMA_DIR)) fs.copyFileSync(path.join(generator.SCHEMA_DIR, file), path.join(dir, file));
    const file = path.join(dir, 'request.schema.json');
    const schema = JSON.parse(fs.readFileSync(file, 'utf8'));
    schema.required.push('user_id');
    fs.writeFileSync(file, JSON.stringify(schema));
    const rendered = generator.render(dir);
    assert.notEqual(rendered, generator.render());
    assert.match(rendered, /\n {2}user_id: string \| number \| null;/);
    schema.properties.route.oneOf = [];
    fs.writeFileSync(file, JSON.stringify(schema));
    assert.throws(() => generator.render(dir), /keyword oneOf/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
