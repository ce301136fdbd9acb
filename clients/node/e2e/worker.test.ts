// `npm run test:e2e`: @o4o/pulse-client against the real thing, with Node's own test runner.
//
// The suite starts what it needs as child processes, so that it runs on its own from clients/node
// (after `npm run build`) as well as from `make test`: the embedded broker (`pulse broker`) and one real
// `pulse worker` with a deployment of its own, both from the repository's .venv/bin/pulse (or PULSE_BIN),
// and stops them at the end. A small Express service wired as the monitoring guide wires the platform's
// services (e2e/service.ts) sends through the real kafkajs; this file serves it 1,000 requests of every
// kind, order changes, Winston error lines and malformed events, SIGTERMs it, proves the worker read
// everything there is (topics read to their end offsets, not a sleep), and then compares the worker's
// /metrics with what was served: every request with its route template and status, every histogram
// bucket, order counts and revenue, error counts by route, the heartbeats' service health, the dead
// letters, and the flush on SIGTERM.
//
// Why here and not in pytest: the client is tested with the tools of its language, and a developer of the
// client runs it without Python's test harness. tests/e2e/test_node_client.py runs this suite in
// `make test` (and keeps the schema check, which needs the Python validator).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { byLabel, Child, request, startBroker, Worker, waitUntil, type Read, type Samples } from './pulse';

const SERVICE = 'shop-api';
const SERVED = 1_000;
/** longer than the test: what is not in a full envelope is sent only by SIGTERM's flush */
const LINGER_MS = 60_000;
const SEED_BUCKETS_MS = [100, 300, 500, 700, 1000, 3000, 5000, 7000, 10000];
const ROLES = ['customer', 'business', 'affiliate'];
/** what the service gets -> what pulse counts (null: not an order event) */
const ORDER_STATUSES: Record<string, string | null> = {
  created: 'created',
  CONFIRMED: 'confirmed',
  confirmed: 'confirmed',
  cancelled: 'cancelled',
  canceled: 'cancelled',
  refunded: 'refunded',
  shipped: null,
};

/** Python's round(): to the nearest integer, halves to even (the worker's figures are compared so). */
function pyRound(x: number): number {
  const floor = Math.floor(x);
  const diff = x - floor;
  if (diff === 0.5) return floor % 2 === 0 ? floor : floor + 1;
  return Math.round(x);
}

interface Random {
  next: () => number;
  int: (lo: number, hi: number) => number;
  pick: <T>(items: readonly T[], weights?: number[]) => T;
}

/** A seeded generator (mulberry32): the same requests in every run. */
function random(seed: number): Random {
  let state = seed >>> 0;
  const next = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const pick = <T>(items: readonly T[], weights?: number[]): T => {
    const w = weights ?? items.map(() => 1);
    let r = next() * w.reduce((a, b) => a + b, 0);
    for (let i = 0; i < items.length; i++) {
      r -= w[i] ?? 0;
      if (r < 0) return items[i] as T;
    }
    return items[items.length - 1] as T;
  };
  return { next, int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)), pick };
}

class Counter extends Map<string, number> {
  add(key: unknown[], n = 1): void {
    const k = JSON.stringify(key);
    this.set(k, (this.get(k) ?? 0) + n);
  }
  total(): number {
    return [...this.values()].reduce((a, b) => a + b, 0);
  }
  plain(): Record<string, number> {
    return Object.fromEntries(this);
  }
}

/** What the test served, and what the worker and the broker hold afterwards. */
interface Run {
  requests: Counter;
  orders: Counter;
  revenueMicro: number;
  errors: Counter;
  stats: { dropped: Record<string, number>; bufferedEvents: number };
  signal: string | null;
  code: number | null;
  stopSeconds: number;
  metrics: Samples;
  requestEvents: Record<string, unknown>[];
  dead: Read['records'];
  log: string;
}

/** Send SERVED requests of every kind the service has; record what each should count as. */
async function serve(port: number, run: Run): Promise<void> {
  const rng = random(15);
  const kinds = ['health', 'products', 'product', 'order', 'cart', 'static', 'delete', 'status', 'charge', 'boom'] as const;
  for (let i = 0; i < SERVED; i++) {
    const n = rng.int(0, 500);
    const kind = rng.pick(kinds, [10, 10, 25, 15, 10, 5, 5, 8, 6, 6]);
    const headers = { 'x-user-id': `u-${n % 37}` };
    let expected: [string, string, number];
    let reply;
    if (kind === 'status') {
      const status = rng.pick(Object.keys(ORDER_STATUSES));
      const role = rng.pick(ROLES);
      const amount = `${rng.int(1_000, 300_000)}.${rng.pick(['00', '50', '25'])}`;
      const json = { status, finalAmount: amount, role, items: rng.int(1, 4) };
      reply = await request(port, 'POST', `/api/orders/${n}/status`, { json, headers });
      const counted = ORDER_STATUSES[status];
      expected = ['POST', '/api/orders/:id/status', counted ? 202 : 422];
      if (counted) {
        run.orders.add([counted, role]);
        if (counted === 'confirmed') run.revenueMicro += pyRound(Number(amount) * 1_000_000);
      }
    } else if (kind === 'charge') {
      reply = await request(port, 'POST', `/api/payments/${n}/charge`, { headers });
      expected = ['POST', '/api/payments/:id/charge', 502];
      run.errors.add([SERVICE, '/api/payments/:id/charge']);
    } else if (kind === 'boom') {
      reply = await request(port, 'GET', '/api/boom', { headers });
      expected = ['GET', '/api/boom', 500];
      run.errors.add([SERVICE, '/api/boom']);
    } else {
      const [method, urlPath, want] = ({
        health: ['GET', '/health', ['GET', '/health', 200]],
        products: ['GET', '/api/products', ['GET', '/api/products', 200]],
        product: ['GET', `/api/products/${n}`, ['GET', '/api/products/:id', n === 0 ? 404 : 200]],
        order: ['GET', `/api/orders/${n}`, ['GET', '/api/orders/:id', 200]],
        cart: ['GET', `/api/users/${n}/cart/items`, ['GET', '/api/users/:userId/cart/items', 200]],
        static: ['GET', `/static/${n}.js`, ['GET', 'unmatched', 404]],
        delete: ['DELETE', `/api/orders/${n}`, ['DELETE', 'unmatched', 404]],
      } as const)[kind];
      expected = [...want];
      reply = await request(port, method, urlPath, { headers });
    }
    assert.equal(reply.status, expected[2], `request ${i} (${kind}) answered ${reply.status}`);
    run.requests.add([expected[0], expected[1], String(expected[2])]);
  }
}

/** Ground truth of the request events the middleware sent: count, summed microseconds and the count in
 * each histogram bucket (not cumulative), by (method, route, status code). */
function truth(events: Record<string, unknown>[]): { http: Counter; micros: Counter; buckets: Map<string, number[]> } {
  const http = new Counter();
  const micros = new Counter();
  const buckets = new Map<string, number[]>();
  for (const e of events) {
    const key = [String(e['method']), String(e['route']), String(e['status_code'])];
    const ms = Number(e['duration_ms']);
    http.add(key);
    micros.add(key, pyRound(ms * 1000));
    const counts = buckets.get(JSON.stringify(key)) ?? new Array<number>(SEED_BUCKETS_MS.length + 1).fill(0);
    const index = SEED_BUCKETS_MS.findIndex((b) => b >= ms); // bisect_left: the first bucket with ms <= le
    const at = index === -1 ? SEED_BUCKETS_MS.length : index;
    counts[at] = (counts[at] ?? 0) + 1;
    buckets.set(JSON.stringify(key), counts);
  }
  return { http, micros, buckets };
}

const floats = (counter: Counter): Record<string, number> => counter.plain();

describe('the Node client against the embedded broker and a real pulse worker', { timeout: 240_000 }, () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pulse-node-e2e-'));
  let broker: Awaited<ReturnType<typeof startBroker>> | undefined;
  let worker: Worker | undefined;
  const run: Run = {
    requests: new Counter(), orders: new Counter(), revenueMicro: 0, errors: new Counter(),
    stats: { dropped: {}, bufferedEvents: 0 }, signal: null, code: null, stopSeconds: 0, metrics: [],
    requestEvents: [], dead: [], log: '',
  };

  before(async () => {
    broker = await startBroker(tmp);
    worker = await new Worker(broker.url, tmp).start();
    await worker.waitReady();
    const service = new Child('service', [process.execPath, path.join(__dirname, 'service.js')], {
      ...process.env,
      PULSE_BROKER_URL: broker.url,
      PULSE_TOPIC_PREFIX: worker.prefix,
      PULSE_SERVICE: SERVICE,
      E2E_LINGER_MS: String(LINGER_MS),
      E2E_HEARTBEAT_MS: '300',
    }, path.join(tmp, 'service.log'));
    try {
      const port = Number((await service.waitFor(/listening (\d+)/, 30_000))[1]);
      await serve(port, run);
      assert.equal((await request(port, 'POST', '/debug/bad')).status, 204);
      run.requests.add(['POST', '/debug/bad', '204']);
      const stats = await request(port, 'GET', '/debug/stats');
      run.stats = JSON.parse(stats.body) as Run['stats'];
      run.requests.add(['GET', '/debug/stats', '200']);
      const started = Date.now();
      service.proc.kill('SIGTERM');
      const end = await service.wait(15_000);
      run.stopSeconds = (Date.now() - started) / 1000;
      run.signal = end.signal;
      run.code = end.code;
    } finally {
      await service.stop(5_000);
      run.log = service.text();
    }

    const expected = run.requests.total();
    const w = worker;
    await waitUntil(
      async () => Object.values(byLabel(await w.metrics(), 'http_requests_total', 'route')).reduce((a, b) => a + b, 0),
      60_000,
      `the worker to count ${expected} requests`,
      { until: (counted) => counted >= expected, context: () => w.tail() },
    );
    const { input, after: later } = await w.waitQuiet();
    run.metrics = await w.metrics();
    for (const record of input.records) {
      if (record.topic === w.topic('request') && record.value) {
        run.requestEvents.push(...(JSON.parse(record.value.toString('utf8')) as Record<string, unknown>[]));
      }
    }
    run.dead = later.records.filter((r) => r.topic === `${w.prefix}events.deadletter`);
  }, { timeout: 200_000 });

  after(async () => {
    await Promise.all([worker?.stop(20_000), broker?.child.stop(10_000)]);
  }, { timeout: 40_000 });

  it('flushes on SIGTERM and the service ends by it', () => {
    const how = `the service ended with code ${run.code}, signal ${run.signal}:\n${run.log.slice(-3000)}`;
    assert.equal(run.signal, 'SIGTERM', how);
    assert.ok(run.stopSeconds < 9, `the service took ${run.stopSeconds.toFixed(1)}s to stop`);
    const { dropped } = run.stats;
    assert.equal(dropped['buffer_full'], 0, JSON.stringify(run.stats));
    assert.equal(dropped['send_failed'], 0, JSON.stringify(run.stats));
    // One order status pulse does not count (`shipped`) per such request, and the unknown type.
    const shipped = (dropped['invalid'] ?? 0) - 1;
    assert.ok(shipped >= 1, JSON.stringify(run.stats));
    assert.ok(run.stats.bufferedEvents > 0, 'some events were still buffered when SIGTERM came');
  });

  it('counts every request served with its route template, and its duration in every bucket', () => {
    const served = run.requests.total();
    assert.equal(served, SERVED + 2);
    assert.ok(run.requests.has(JSON.stringify(['GET', 'unmatched', '404'])));
    assert.ok(run.requests.has(JSON.stringify(['GET', '/api/users/:userId/cart/items', '200'])));
    const got = byLabel(run.metrics, 'http_requests_total', 'method', 'route', 'status_code');
    assert.deepEqual(got, floats(run.requests));
    const counts = byLabel(run.metrics, 'http_request_duration_seconds_count', 'method', 'route', 'status_code');
    assert.deepEqual(counts, got);
    // The histogram holds exactly the durations the middleware measured and sent.
    const sent = run.requestEvents.filter((e) => Number.isInteger(e['status_code']));
    assert.equal(sent.length, served);
    assert.ok(sent.every((e) => e['service'] === SERVICE));
    for (const e of sent) {
      if (!String(e['route']).startsWith('/debug/')) assert.match(String(e['user_id']), /^u-\d+$/);
    }
    const want = truth(sent);
    assert.deepEqual(want.http.plain(), run.requests.plain());
    const sums = byLabel(run.metrics, 'http_request_duration_seconds_sum', 'method', 'route', 'status_code');
    for (const [key, micros] of want.micros) {
      assert.equal(pyRound((sums[key] ?? NaN) * 1_000_000), micros, key);
    }
    const buckets = byLabel(run.metrics, 'http_request_duration_seconds_bucket', 'method', 'route', 'status_code', 'le');
    for (const [key, perBucket] of want.buckets) {
      const les = Object.entries(buckets)
        .map(([k, n]) => [JSON.parse(k) as string[], n] as const)
        .filter(([labels]) => JSON.stringify(labels.slice(0, 3)) === key)
        .map(([labels, n]) => [Number(labels[3] === '+Inf' ? Infinity : labels[3]), n] as const)
        .sort((a, b) => a[0] - b[0]);
      assert.deepEqual(les.map(([le]) => le), [...SEED_BUCKETS_MS.map((b) => b / 1000), Infinity], key);
      let cumulative = 0;
      assert.deepEqual(les.map(([, n]) => n), perBucket.map((n) => (cumulative += n)), key);
    }
  });

  it('counts the order changes and the revenue', () => {
    assert.deepEqual(byLabel(run.metrics, 'orders_total', 'status', 'user_role'), floats(run.orders));
    const revenue = run.metrics.filter((s) => s.name === 'revenue_total' && Object.keys(s.labels).length === 0);
    assert.equal(revenue.length, 1, 'one revenue_total sample without labels');
    assert.equal(pyRound((revenue[0]?.value ?? NaN) * 1_000_000), run.revenueMicro);
  });

  it("counts the Winston transport's error lines by route", () => {
    assert.deepEqual(byLabel(run.metrics, 'o4o_errors_total', 'service', 'route'), floats(run.errors));
  });

  it("gives the heartbeats' service health", () => {
    assert.deepEqual(byLabel(run.metrics, 'o4o_service_up', 'service'), { '["payment"]': 1, '["redis"]': 0 });
  });

  it('dead-letters the malformed events', () => {
    const headers = run.dead.map((r) => r.headers);
    assert.deepEqual(headers.map((h) => h['pulse.code']).sort(), ['missing_field', 'wrong_type']);
    assert.ok(headers.every((h) => 'pulse.index' in h), 'each was one element of an envelope');
    const values = run.dead
      .map((r) => JSON.parse(r.value?.toString('utf8') ?? 'null') as Record<string, unknown>)
      .map((v) => String('route' in v ? v['route'] : v['order_id']))
      .sort();
    assert.deepEqual(values, ['/bad', 'o-bad']);
    const dead = byLabel(run.metrics, 'pulse_events_deadlettered_total', 'reason');
    assert.equal(Object.values(dead).reduce((a, b) => a + b, 0), 2);
  });
});
