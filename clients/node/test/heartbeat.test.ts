// startHeartbeat: the guide's health checks as heartbeat events.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startHeartbeat } from '../src';
import { Sink, sleep } from './helpers';

test('a check that resolves is healthy; one that throws, rejects, says false or times out is not', async () => {
  const sink = new Sink();
  const checks: [string, () => unknown][] = [
    ['database', async () => ({ responseTime: 3 })],
    ['redis', () => { throw new Error('ECONNREFUSED'); }],
    ['payment', async () => { throw new Error('503'); }],
    ['storage', () => false],
    ['external', () => new Promise(() => undefined)],
  ];
  const beats = checks.map(([service, check]) => startHeartbeat(sink, service, check, { everyMs: 60_000, timeoutMs: 50 }));
  await sleep(120);
  beats.forEach((b) => b.stop());
  const events = sink.of('heartbeat');
  assert.deepEqual(Object.fromEntries(events.map((e) => [e['service'], e['status']])), {
    database: 'healthy', redis: 'unhealthy', payment: 'unhealthy', storage: 'unhealthy', external: 'unhealthy',
  });
  assert.equal(events.length, 5);
  for (const event of events) assert.ok((event['response_time_ms'] as number) >= 0);
  assert.ok((events.find((e) => e['service'] === 'external')!['response_time_ms'] as number) >= 45);
});

test('it beats every everyMs until stopped, without overlapping checks (a check may outlast everyMs)', async () => {
  const sink = new Sink();
  let running = 0;
  let overlap = false;
  const beat = startHeartbeat(sink, 'api', async () => {
    running += 1;
    overlap ||= running > 1;
    await sleep(30);
    running -= 1;
  }, { everyMs: 20, timeoutMs: 1_000 });
  const started = Date.now();
  while (sink.of('heartbeat').length < 3 && Date.now() - started < 3_000) await sleep(10);
  beat.stop();
  const count = sink.of('heartbeat').length;
  assert.ok(count >= 3, `${count} heartbeats in ${Date.now() - started} ms`);
  assert.equal(overlap, false);
  await sleep(100);
  assert.ok(sink.of('heartbeat').length <= count + 1, 'stopped');
  const event = await beat.beat();
  assert.equal(event.status, 'healthy');
});
