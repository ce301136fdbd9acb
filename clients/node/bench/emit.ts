// `npm run bench`: how many events per second one Node.js process emits through the Emitter to the
// embedded broker (with envelopes, acks from the broker, nothing dropped).
//
// It uses the broker of PULSE_BROKER_URL, or starts `pulse broker` from the repository's .venv (or
// PULSE_BIN) and stops it at the end. BENCH_EVENTS (default 300,000) request events are emitted with the
// default limits (maxEvents 100, lingerMs 50) in slices that wait while 10,000 events are buffered, so
// nothing is dropped; events/s counts from the first emit to the broker's last acknowledgement.

import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import { Emitter, parseBrokers } from '../src';

const EVENTS = Number(process.env['BENCH_EVENTS'] ?? 300_000);
const PREFIX = `bench${Date.now()}.`;

function startBroker(): Promise<{ url: string; child: ChildProcess }> {
  const bin = process.env['PULSE_BIN'] ?? path.resolve(__dirname, '..', '..', '..', '..', '.venv', 'bin', 'pulse');
  const child = spawn(bin, ['broker'], { stdio: ['ignore', 'ignore', 'pipe'] });
  return new Promise((resolve, reject) => {
    let err = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      err += chunk;
      const found = /PULSE_BROKER_URL=(\S+)/.exec(err);
      if (found) resolve({ url: found[1]!, child });
    });
    child.on('error', reject);
    child.on('exit', (code) => reject(new Error(`pulse broker exited (${code}): ${err}`)));
  });
}

async function main(): Promise<void> {
  let broker: ChildProcess | undefined;
  let url = process.env['PULSE_BROKER_URL'];
  if (!url) {
    const started = await startBroker();
    url = started.url;
    broker = started.child;
  }
  try {
    const admin = new Kafka({ brokers: parseBrokers(url), logLevel: logLevel.NOTHING }).admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic: `${PREFIX}events.requests`, numPartitions: 4 }] });
    await admin.disconnect();

    const emitter = new Emitter({ brokers: url, prefix: PREFIX, handleSignals: false });
    await emitter.start();
    const event = { service: 'api', method: 'GET', route: '/api/products/:id', status_code: 200, duration_ms: 12.5 };
    const started = process.hrtime.bigint();
    for (let i = 0; i < EVENTS; i++) {
      emitter.emit('request', { ...event, user_id: i });
      if (i % 1_000 === 0) {
        while (emitter.stats().bufferedEvents > 10_000) await new Promise((resolve) => setImmediate(resolve));
      }
    }
    await emitter.flush();
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const stats = await emitter.close();
    const rate = Math.round(stats.sentEvents / seconds);
    console.log(`${stats.sentEvents} events in ${stats.sentMessages} envelopes in ${seconds.toFixed(2)} s: ${rate.toLocaleString('en')} events/s (dropped ${stats.droppedTotal})`);
    console.log(JSON.stringify({ events_per_second: rate, events: stats.sentEvents, envelopes: stats.sentMessages, seconds, dropped: stats.droppedTotal, node: process.version }));
    if (stats.sentEvents !== EVENTS || stats.droppedTotal !== 0) process.exitCode = 1;
  } finally {
    broker?.kill('SIGTERM');
  }
}

void main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
