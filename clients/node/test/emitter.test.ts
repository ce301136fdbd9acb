// The Emitter: envelopes bounded by count, bytes and linger (as the Python emitter), ts and prefix,
// bounded buffers, counted drops, bounded retries and a bounded close. Never a throw or a rejection.

import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, test } from 'node:test';
import { Emitter, encodeEvent, parseBrokers, type EmitterStats, type EventType } from '../src';
import { FakeProducer, Lines, order, sleep } from './helpers';

function emitter(producer: FakeProducer, options: ConstructorParameters<typeof Emitter>[0] = {}): Emitter {
  return new Emitter({ producer, prefix: 't.', handleSignals: false, logger: null, ...options });
}

/** Every emitted event is sent, dropped or still buffered: nothing is lost silently. */
function accounted(stats: EmitterStats): void {
  assert.equal(stats.emitted, stats.sentEvents + stats.droppedTotal + stats.bufferedEvents, JSON.stringify(stats));
}

describe('batching (the Python emitter\'s limits)', () => {
  test('by count: 25 events with maxEvents 10 make envelopes of 10, 10 and 5, in emit order', async () => {
    const producer = new FakeProducer();
    const em = emitter(producer, { maxEvents: 10, lingerMs: 5_000 });
    for (let i = 0; i < 25; i++) assert.equal(em.emit('order', order(i)), true);
    assert.equal(await em.flush(), true);
    const envelopes = producer.envelopes();
    assert.deepEqual(envelopes.map((e) => e.length), [10, 10, 5]);
    assert.deepEqual(envelopes.flat().map((e) => e['order_id']), Array.from({ length: 25 }, (_, i) => `o-${i}`));
    assert.ok(producer.sent.every((m) => m.topic === 't.events.orders'), 'the prefix is applied');
    assert.ok(envelopes.flat().every((e) => typeof e['ts'] === 'number'), 'ts is added');
    const stats = await em.close();
    assert.equal(stats.sentMessages, 3);
    assert.equal(stats.sentEvents, 25);
    accounted(stats);
  });

  test('by bytes: no envelope exceeds maxBytes, and an event larger than maxBytes goes alone', async () => {
    const producer = new FakeProducer();
    const em = emitter(producer, { maxEvents: 1_000, maxBytes: 600, lingerMs: 5_000 });
    for (let i = 0; i < 20; i++) em.emit('order', order(i));
    em.emit('order', { ...order(99), note: 'x'.repeat(700) });
    em.emit('order', order(100));
    await em.flush();
    const sizes = producer.sent.map((m) => Buffer.byteLength(m.value));
    const envelopes = producer.envelopes();
    assert.equal(envelopes.flat().length, 22);
    assert.ok(envelopes.length > 2);
    const big = envelopes.findIndex((e) => e.some((x) => x['order_id'] === 'o-99'));
    assert.equal(envelopes[big]!.length, 1);
    sizes.forEach((size, i) => i === big || assert.ok(size <= 600, `envelope ${i} has ${size} bytes`));
    // Full envelopes are as full as the limit allows: the next event would not have fitted.
    const first = producer.sent[0]!.value;
    const next = JSON.stringify(envelopes[1]![0]);
    assert.ok(Buffer.byteLength(first) + Buffer.byteLength(next) + 1 > 600);
    await em.close();
  });

  test('by linger: a partial batch is sent lingerMs after its first event, without flush', async () => {
    const producer = new FakeProducer();
    const em = emitter(producer, { maxEvents: 100, lingerMs: 200 });
    const started = Date.now();
    for (let i = 0; i < 3; i++) em.emit('order', order(i));
    while (producer.sent.length === 0 && Date.now() - started < 5_000) await sleep(5);
    const waited = Date.now() - started;
    assert.ok(waited >= 150 && waited < 2_000, `sent after ${waited} ms`);
    assert.equal(producer.envelopes()[0]!.length, 3);
    await em.close();
  });

  test('lingerMs 0 sends at once; envelopes of one type go to its topic', async () => {
    const producer = new FakeProducer();
    const em = emitter(producer, { lingerMs: 0 });
    em.emit('heartbeat', { service: 'db', status: 'healthy' });
    em.emit('user', { user_id: 1, action: 'registered', role: 'customer' });
    await em.flush();
    assert.deepEqual(producer.sent.map((m) => m.topic).sort(), ['t.events.heartbeats', 't.events.users']);
    await em.close();
  });

  test('many envelopes go in few requests', async () => {
    const producer = new FakeProducer();
    const em = emitter(producer, { maxEvents: 10, lingerMs: 5_000 });
    for (let i = 0; i < 1_000; i++) em.emit('order', order(i));
    await em.flush();
    assert.equal(producer.sent.length, 100);
    assert.ok(producer.requests.length < 10, `${producer.requests.length} requests`);
    await em.close();
  });
});

describe('ts and the prefix', () => {
  test('ts is added only when missing or undefined; a given ts (string, number, null) is kept', () => {
    assert.equal(encodeEvent({ a: 1 }, 42), '{"a":1,"ts":42}');
    assert.equal(encodeEvent({}, 42), '{"ts":42}');
    assert.equal(encodeEvent({ a: 1, ts: undefined }, 42), '{"a":1,"ts":42}');
    assert.equal(encodeEvent({ ts: 7 }, 42), '{"ts":7}');
    assert.equal(encodeEvent({ ts: null }, 42), '{"ts":null}');
    assert.equal(encodeEvent({ ts: '2026-01-01T00:00:00Z' }, 42), '{"ts":"2026-01-01T00:00:00Z"}');
    assert.equal(encodeEvent([1], 42), '[1]', 'not an object: sent as is (the worker dead-letters it)');
    assert.throws(() => encodeEvent({ n: 1n }, 42));
  });

  test('lone surrogates become U+FFFD (the worker\'s JSON parser refuses their escapes); the rest is kept', () => {
    assert.equal(encodeEvent({ s: 'a\ud800b', ts: 1 }, 42), '{"s":"a\ufffdb","ts":1}');
    assert.equal(encodeEvent({ ['k\udc00']: 'x\udbff', ts: 1 }, 42), '{"k\ufffd":"x\ufffd","ts":1}');
    assert.equal(encodeEvent({ s: '\\ud800 and \\\ud800', ts: 1 }, 42), '{"s":"\\\\ud800 and \\\\\ufffd","ts":1}');
    assert.equal(encodeEvent({ s: '\u{1F600} \ud83d\ude00', ts: 1 }, 42), '{"s":"\u{1F600} \u{1F600}","ts":1}');
    assert.doesNotThrow(() => JSON.parse(encodeEvent({ s: '\ud800'.repeat(512) }, 1)));
  });

  test('the prefix defaults to PULSE_TOPIC_PREFIX, then o4o.', () => {
    const saved = process.env['PULSE_TOPIC_PREFIX'];
    try {
      delete process.env['PULSE_TOPIC_PREFIX'];
      assert.equal(new Emitter({ producer: new FakeProducer(), handleSignals: false }).prefix, 'o4o.');
      process.env['PULSE_TOPIC_PREFIX'] = 'staging.';
      assert.equal(new Emitter({ producer: new FakeProducer(), handleSignals: false }).prefix, 'staging.');
    } finally {
      if (saved === undefined) delete process.env['PULSE_TOPIC_PREFIX'];
      else process.env['PULSE_TOPIC_PREFIX'] = saved;
    }
  });

  test('brokers: host:port, lists and PULSE_BROKER_URL forms', () => {
    assert.deepEqual(parseBrokers('kafka://127.0.0.1:9092'), ['127.0.0.1:9092']);
    assert.deepEqual(parseBrokers('kafka://k1:9093;k2'), ['k1:9093', 'k2:9092']);
    assert.deepEqual(parseBrokers(['a:1', 'b:2,c:3']), ['a:1', 'b:2', 'c:3']);
  });

  test('limits are checked as in Python', () => {
    assert.throws(() => emitter(new FakeProducer(), { maxEvents: 0 }), RangeError);
    assert.throws(() => emitter(new FakeProducer(), { maxBytes: 63 }), RangeError);
    assert.throws(() => emitter(new FakeProducer(), { lingerMs: -1 }), RangeError);
  });
});

describe('never in the way: no throw, no rejection, every drop counted', () => {
  test('an unknown type, an unserialisable event and an emit after close are counted, not thrown', async () => {
    const producer = new FakeProducer();
    const logger = new Lines();
    const em = emitter(producer, { logger });
    assert.equal(em.emit('purchase' as EventType, { x: 1 } as never), false);
    const cyclic: Record<string, unknown> = { service: 'a' };
    cyclic['self'] = cyclic;
    assert.equal(em.emit('heartbeat', cyclic as never), false);
    assert.equal(em.emit('gauge', { name: 'n', value: 1n, labels: {} } as never), false);
    await em.close();
    assert.equal(em.emit('order', order(1)), false);
    const stats = em.stats();
    assert.deepEqual(stats.dropped, { buffer_full: 0, send_failed: 0, shutdown: 0, closed: 1, invalid: 3 });
    assert.equal(stats.droppedTotal, 4);
    accounted(stats);
    assert.ok(logger.lines.some((l) => l.includes('unknown event type "purchase"')), logger.lines.join('\n'));
  });

  test('while Kafka is down the buffer is bounded by events; failed batches are retried, then dropped', async () => {
    const producer = new FakeProducer();
    producer.down = true;
    const logger = new Lines();
    const em = emitter(producer, { maxEvents: 10, lingerMs: 5, maxBufferedEvents: 50, retries: 2, retryBackoffMs: 5, logger });
    let accepted = 0;
    for (let i = 0; i < 200; i++) if (em.emit('order', order(i))) accepted += 1;
    assert.equal(accepted, 50, 'the buffer holds at most maxBufferedEvents');
    assert.equal(em.stats().dropped.buffer_full, 150);
    assert.ok(em.stats().bufferedEvents <= 50);
    assert.equal(await em.flush(5_000), true, 'flush ends once every batch is sent or given up');
    const stats = em.stats();
    assert.equal(stats.dropped.send_failed, 50);
    assert.equal(stats.sendFailures % 3, 0, 'each batch is tried 1 + retries times');
    assert.equal(stats.bufferedEvents, 0);
    accounted(stats);
    const errors = logger.lines.filter((l) => l.startsWith('error'));
    assert.ok(errors.some((l) => l.includes('dropped 50 events') || l.includes('failed sends')), logger.lines.join('\n'));
    assert.ok(logger.lines.length < 10, `logging is rate-limited: ${logger.lines.length} lines`);
    // Kafka is back: new events go through.
    producer.down = false;
    em.emit('order', order(500));
    await em.flush();
    assert.equal(em.stats().sentEvents, 1);
    assert.ok(logger.lines.some((l) => l.includes('accepts events again')));
    await em.close();
  });

  test('the buffer is bounded by bytes too', async () => {
    const producer = new FakeProducer();
    producer.hang = true;
    const em = emitter(producer, { maxBufferedBytes: 10_000, lingerMs: 5 });
    for (let i = 0; i < 100; i++) em.emit('order', { ...order(i), note: 'x'.repeat(900) });
    const stats = em.stats();
    assert.ok(stats.bufferedBytes <= 10_000, `${stats.bufferedBytes} bytes buffered`);
    assert.ok(stats.bufferedEvents >= 9 && stats.bufferedEvents <= 10);
    assert.equal(stats.dropped.buffer_full, 100 - stats.bufferedEvents);
    await em.close(50);
  });

  test('a failed batch is retried and then sent: nothing dropped', async () => {
    const producer = new FakeProducer();
    producer.failNext = 2;
    const em = emitter(producer, { retries: 3, retryBackoffMs: 5 });
    for (let i = 0; i < 30; i++) em.emit('order', order(i));
    await em.flush();
    const stats = await em.close();
    assert.equal(stats.sendFailures, 2);
    assert.equal(stats.sentEvents, 30);
    assert.equal(stats.droppedTotal, 0);
    assert.deepEqual(producer.envelopes().flat().map((e) => e['order_id']), Array.from({ length: 30 }, (_, i) => `o-${i}`));
  });

  test('close is bounded when sends hang, and counts what it leaves as shutdown drops', async () => {
    const producer = new FakeProducer();
    producer.hang = true;
    const em = emitter(producer, { lingerMs: 10 });
    for (let i = 0; i < 42; i++) em.emit('order', order(i));
    const started = Date.now();
    const stats = await em.close(300);
    const took = Date.now() - started;
    assert.ok(took >= 250 && took < 2_000, `close took ${took} ms`);
    assert.equal(stats.dropped.shutdown, 42);
    assert.equal(stats.bufferedEvents, 0);
    accounted(stats);
    assert.equal(await em.close(), stats, 'close is idempotent');
  });

  test('the real kafkajs against a port where nothing listens: bounded, counted, close in time', async () => {
    const port = await new Promise<number>((resolve) => {
      const server = net.createServer().listen(0, '127.0.0.1', () => {
        const { port } = server.address() as net.AddressInfo;
        server.close(() => resolve(port));
      });
    });
    const em = new Emitter({
      brokers: `kafka://127.0.0.1:${port}`, prefix: 't.', handleSignals: false, logger: null,
      maxBufferedEvents: 100, retries: 1, retryBackoffMs: 10, lingerMs: 5,
    });
    assert.equal(await em.start(), false, 'start resolves false instead of rejecting');
    for (let i = 0; i < 300; i++) em.emit('order', order(i));
    assert.equal(em.stats().dropped.buffer_full, 200);
    const started = Date.now();
    const stats = await em.close(1_500);
    assert.ok(Date.now() - started < 4_000, `close took ${Date.now() - started} ms`);
    assert.equal(stats.sentEvents, 0);
    assert.equal(stats.dropped.send_failed + stats.dropped.shutdown, 100);
    accounted(stats);
  });
});
