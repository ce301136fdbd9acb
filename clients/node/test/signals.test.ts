// SIGTERM and SIGINT: the Emitter sends what it holds within closeTimeoutMs, then the process ends by
// the signal (or by the service's own handler, when it has one).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';

const CHILD = path.join(__dirname, 'fixtures', 'signal-child.js');

async function run(mode: string, signal: NodeJS.Signals): Promise<{ out: string; code: number | null; signal: NodeJS.Signals | null; ms: number }> {
  const child = spawn(process.execPath, [CHILD], { env: { ...process.env, MODE: mode }, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.setEncoding('utf8');
  await new Promise<void>((resolve) => {
    child.stdout.on('data', (chunk: string) => {
      out += chunk;
      if (out.includes('ready\n')) resolve();
    });
  });
  const started = Date.now();
  child.kill(signal);
  const [code, got] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('exit', (c, s) => resolve([c, s])));
  return { out, code, signal: got, ms: Date.now() - started };
}

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  test(`${signal}: the buffered events are sent, then the process ends by ${signal}`, async () => {
    const result = await run('plain', signal);
    assert.match(result.out, /sent 250\n/);
    assert.equal(result.signal, signal, result.out);
    assert.ok(result.ms < 4_000, `${result.ms} ms`);
  });
}

test('a service with its own SIGTERM handler exits when it decides; the events were sent before', async () => {
  const result = await run('own-handler', 'SIGTERM');
  assert.equal(result.code, 0, result.out);
  assert.match(result.out, /app handler\n(.|\n)*sent 250\n(.|\n)*app exits/);
});

test('a broker that does not answer: the process still ends within closeTimeoutMs, the events counted', async () => {
  const result = await run('stuck', 'SIGTERM');
  assert.equal(result.signal, 'SIGTERM', result.out);
  assert.ok(result.ms < 4_000, `${result.ms} ms (closeTimeoutMs 500)`);
  assert.match(result.out, /dropped 250 events still buffered after 500 ms/);
  assert.doesNotMatch(result.out, /sent/);
});
