// The real pulse the end-to-end tests run against, as child processes of the test run: the embedded broker
// (`pulse broker`) and one `pulse worker`, started from the repository's `.venv/bin/pulse` (or PULSE_BIN).
// Also the test's own means to look at them: waits that say what they saw when they gave up, the worker's
// /metrics and /health/detailed, Kafka topics read to their end offsets, and the proof that the worker
// holds every figure that will ever arrive (tests/support/quiet.py's, in TypeScript).
//
// Every child is stopped by `stop()` (SIGTERM, SIGKILL after a bound) and killed when the test process
// exits. Everything talks to 127.0.0.1 only.

import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import { EVENT_TOPICS } from '../src/events.generated';

export const HOST = '127.0.0.1';
/** The repository (this file runs as clients/node/dist/e2e/pulse.js). */
export const REPO = path.resolve(__dirname, '..', '..', '..', '..');

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** `pulse`: PULSE_BIN, or the repository's virtualenv. */
export function pulseBin(): string {
  const bin = process.env['PULSE_BIN'] ?? path.join(REPO, '.venv', 'bin', 'pulse');
  if (!fs.existsSync(bin)) {
    throw new Error(`no pulse at ${bin}: run \`make install\` in ${REPO}, or set PULSE_BIN`);
  }
  return bin;
}

function describe(value: unknown): string {
  if (value instanceof Error) return `${value.name}: ${value.message}`;
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

export interface WaitOptions<T> {
  /** what must hold for the value `check` returns (default: truthy) */
  until?: (value: T) => boolean;
  intervalMs?: number;
  /** false: the process waited on has ended, fail now */
  alive?: () => boolean;
  /** more to say when giving up (a log tail) */
  context?: () => string;
}

/** Call `check` until `until` holds for its value; return that value. A rejection counts as "not yet".
 * Gives up after `timeoutMs` (or once `alive()` is false) saying what it waited for and what it saw last. */
export async function waitUntil<T>(
  check: () => T | Promise<T>,
  timeoutMs: number,
  what: string,
  options: WaitOptions<T> = {},
): Promise<T> {
  const until = options.until ?? ((value: T) => Boolean(value));
  const deadline = Date.now() + timeoutMs;
  let last = 'nothing (never checked)';
  for (;;) {
    try {
      const value = await check();
      if (until(value)) return value;
      last = describe(value);
    } catch (err) {
      last = describe(err);
    }
    const more = options.context ? `\n${options.context()}` : '';
    if (options.alive && !options.alive()) {
      throw new Error(`the process ended while waiting for ${what}; last seen: ${last}${more}`);
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs / 1000}s waiting for ${what}; last seen: ${last}${more}`);
    }
    await sleep(options.intervalMs ?? 300);
  }
}

/** A free TCP port on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, HOST, () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

// --- HTTP ---------------------------------------------------------------------------------------------

export interface Reply {
  status: number;
  body: string;
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });

/** One HTTP request to 127.0.0.1:`port` (kept-alive connections); JSON bodies are sent as JSON. */
export function request(
  port: number,
  method: string,
  urlPath: string,
  options: { json?: unknown; headers?: Record<string, string>; timeoutMs?: number } = {},
): Promise<Reply> {
  const body = options.json === undefined ? undefined : JSON.stringify(options.json);
  const headers: Record<string, string> = { ...options.headers };
  if (body !== undefined) headers['content-type'] = 'application/json';
  return new Promise((resolve, reject) => {
    const req = http.request({ host: HOST, port, method, path: urlPath, headers, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.setTimeout(options.timeoutMs ?? 10_000, () => req.destroy(new Error(`${method} ${urlPath}: no answer`)));
    req.on('error', reject);
    req.end(body);
  });
}

// --- child processes ----------------------------------------------------------------------------------

const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

/** A child process, its output (stdout and stderr) kept in memory and in `logPath`. */
export class Child {
  readonly proc: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private output = '';

  constructor(readonly name: string, argv: string[], env: NodeJS.ProcessEnv, readonly logPath: string) {
    const [command, ...args] = argv;
    if (command === undefined) throw new Error(`${name}: no command`);
    const log = fs.openSync(logPath, 'a');
    this.proc = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(this.proc);
    const keep = (chunk: Buffer): void => {
      this.output += chunk.toString('utf8');
      fs.writeSync(log, chunk);
    };
    this.proc.stdout?.on('data', keep);
    this.proc.stderr?.on('data', keep);
    this.exited = new Promise((resolve) => {
      this.proc.once('close', (code, signal) => {
        children.delete(this.proc);
        fs.closeSync(log);
        resolve({ code, signal });
      });
    });
  }

  alive(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  text(): string {
    return this.output;
  }

  tail(lines = 60): string {
    const status = this.alive() ? 'running' : `ended (code ${this.proc.exitCode}, signal ${this.proc.signalCode})`;
    const last = this.output.split('\n').slice(-lines).join('\n');
    return `--- ${this.name} (${status}), last ${lines} lines of ${this.logPath}:\n${last}`;
  }

  /** How many times its output says `needle`. */
  count(needle: string): number {
    return this.output.split(needle).length - 1;
  }

  /** Wait until its output matches `pattern`; return the match. Fails if it ends first. */
  async waitFor(pattern: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
    const match = await waitUntil(() => this.output.match(pattern), timeoutMs, `${pattern} in the output of ${this.name}`, {
      intervalMs: 50,
      alive: () => this.alive(),
      context: () => this.tail(),
    });
    if (match === null) throw new Error('unreachable');
    return match;
  }

  /** Wait for its end, at most `timeoutMs`; fail saying it still runs. */
  async wait(timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(new Error(`${this.name} still running ${timeoutMs / 1000}s later\n${this.tail()}`));
      }, timeoutMs);
    });
    try {
      return await Promise.race([this.exited, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGTERM, then SIGKILL if it still runs `timeoutMs` later. */
  async stop(timeoutMs = 20_000): Promise<void> {
    if (!this.alive()) return;
    this.proc.kill('SIGTERM');
    try {
      await this.wait(timeoutMs);
    } catch {
      this.proc.kill('SIGKILL');
      await this.wait(5_000);
    }
  }
}

/** This process's environment without PULSE_* variables (the test run's own settings). */
function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PULSE_')));
}

/** The embedded broker: `pulse broker`, which says `PULSE_BROKER_URL=kafka://127.0.0.1:PORT` on stderr. */
export async function startBroker(tmp: string): Promise<{ child: Child; url: string; bootstrap: string }> {
  const child = new Child('broker', [pulseBin(), 'broker'], cleanEnv(), path.join(tmp, 'broker.log'));
  const match = await child.waitFor(/PULSE_BROKER_URL=(kafka:\/\/(127\.0\.0\.1:\d+))/, 30_000);
  return { child, url: match[1] ?? '', bootstrap: match[2] ?? '' };
}

export type Samples = { name: string; labels: Record<string, string>; value: number }[];

/** Prometheus text exposition as samples. */
export function parseMetrics(text: string): Samples {
  const out: Samples = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!match) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      labels[pair[1] ?? ''] = (pair[2] ?? '').replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    }
    const raw = match[3] ?? '';
    const value = raw === '+Inf' ? Infinity : raw === '-Inf' ? -Infinity : Number(raw);
    out.push({ name: match[1] ?? '', labels, value });
  }
  return out;
}

/** Samples of `name` summed by the values of `labels`; the key is the JSON array of those values. */
export function byLabel(samples: Samples, name: string, ...labels: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const sample of samples) {
    if (sample.name !== name) continue;
    const key = JSON.stringify(labels.map((label) => sample.labels[label] ?? ''));
    out[key] = (out[key] ?? 0) + sample.value;
  }
  return out;
}

/** GET /health/detailed, as far as the proofs of quiescence read it. */
export interface Detailed {
  kafka: { positions: Record<string, Record<string, number>>; consumerLag: Record<string, number>; partitions: number[] };
  state: { ready?: boolean; stage1Pending?: number };
}

/** One `pulse worker` of a deployment of its own (unique topic prefix and app id) on the test broker. */
export class Worker {
  readonly prefix = `t${crypto.randomBytes(4).toString('hex')}.`;
  readonly appId = `${this.prefix}pulse`;
  readonly partitions = 4;
  child: Child | undefined;
  port = 0;

  constructor(readonly brokerUrl: string, readonly tmp: string) {}

  get bootstrap(): string {
    return this.brokerUrl.replace(/^kafka:\/\//, '');
  }

  /** Start it with the environment tests/support/cluster.py gives a test worker. */
  async start(): Promise<this> {
    this.port = await freePort();
    const env = {
      ...cleanEnv(),
      PULSE_BROKER_URL: this.brokerUrl,
      PULSE_EMBEDDED_BROKER: '1',
      PULSE_TOPIC_PREFIX: this.prefix,
      PULSE_APP_ID: this.appId,
      PULSE_PARTITIONS: String(this.partitions),
      PULSE_SESSION_TIMEOUT: '4s',
      PULSE_DATA_DIR: path.join(this.tmp, 'data'),
      PULSE_LOG_LEVEL: 'info',
      PULSE_LOG_VERBOSE: '1',
      PULSE_WEB_HOST: HOST,
      PULSE_WEB_PORT: String(this.port),
      PYTHONUNBUFFERED: '1',
    };
    this.child = new Child('worker', [pulseBin(), 'worker'], env, path.join(this.tmp, 'worker.log'));
    return this;
  }

  private get running(): Child {
    if (!this.child) throw new Error('the worker was never started');
    return this.child;
  }

  topic(type: keyof typeof EVENT_TOPICS): string {
    return this.prefix + EVENT_TOPICS[type];
  }

  async get(urlPath: string): Promise<Reply> {
    return request(this.port, 'GET', urlPath, { timeoutMs: 30_000 });
  }

  /** Wait until GET /ready answers 200 and the worker owns partitions (a group's first rebalance may
   * hand out an empty assignment before the real one); fail if it ends. */
  async waitReady(timeoutMs = 60_000): Promise<void> {
    await waitUntil(
      async () => {
        const ready = await this.get('/ready');
        const health = JSON.parse((await this.get('/health')).body) as { worker?: { partitions?: number[] } };
        return { ready: ready.status, partitions: health.worker?.partitions ?? [] };
      },
      timeoutMs,
      `the worker ready on port ${this.port} (GET /ready 200), owning partitions`,
      {
        until: (seen) => seen.ready === 200 && seen.partitions.length > 0,
        intervalMs: 200,
        alive: () => this.running.alive(),
        context: () => this.running.tail(),
      },
    );
  }

  async metrics(): Promise<Samples> {
    return parseMetrics((await this.get('/metrics')).body);
  }

  async detailed(): Promise<Detailed> {
    const data = JSON.parse((await this.get('/health/detailed')).body) as Record<string, Record<string, unknown>>;
    const fields = [['kafka', 'positions'], ['kafka', 'consumerLag'], ['kafka', 'partitions'], ['state', undefined]] as const;
    for (const [section, key] of fields) {
      const node = data[section];
      if (typeof node !== 'object' || node === null || (key !== undefined && !(key in node))) {
        throw new Error(`GET /health/detailed has no ${section}${key ? `.${key}` : ''}`);
      }
    }
    return data as unknown as Detailed;
  }

  tail(): string {
    return this.running.tail();
  }

  async stop(timeoutMs = 20_000): Promise<void> {
    await this.child?.stop(timeoutMs);
  }

  // --- the proof that nothing more arrives -----------------------------------------------------------

  /** Return once the worker provably holds every figure that will ever arrive (tests/support/quiet.py's
   * wait_read): call it once every send was acknowledged and nothing else writes.
   *
   * 1. Every input topic is read to its end offsets (`input`), then the worker reports it read each
   *    input partition up to them, owns and reads every partition, has no consumer lag, and stage 1
   *    has nothing pending (every partial it wrote was acknowledged).
   * 2. Only then the partials topic (and the dead letters, read here too) are read to their end
   *    offsets: they include every partial that exists. The worker must have read the partials to
   *    them as well: stage 2 applies a partial as its position advances, so what it serves is final.
   * 3. The assignment did not change in between (same partitions, no new "assigned partitions" line).
   */
  async waitQuiet(timeoutMs = 90_000): Promise<{ input: Read; after: Read }> {
    const inputs = (Object.keys(EVENT_TOPICS) as (keyof typeof EVENT_TOPICS)[]).map((t) => this.topic(t));
    const input = await readToEnd(this.bootstrap, inputs);
    const later = [`${this.appId}-partials`, `${this.prefix}events.deadletter`];
    let result: { input: Read; after: Read } | undefined;
    await waitUntil(
      async () => {
        const assigned = this.running.count('assigned partitions');
        const first = await this.detailed();
        const before = this.problems(first, input.ends);
        if (before.length > 0) return before;
        const after = await readToEnd(this.bootstrap, later);
        const second = await this.detailed();
        const partials = [...after.ends].filter(([tp]) => tp.startsWith(`${this.appId}-partials:`));
        const problems = this.problems(second, new Map([...input.ends, ...partials]));
        if (JSON.stringify([...first.kafka.partitions].sort()) !== JSON.stringify([...second.kafka.partitions].sort())) {
          problems.push(`ownership changed: ${describe(first.kafka.partitions)} -> ${describe(second.kafka.partitions)}`);
        }
        if (this.running.count('assigned partitions') !== assigned) problems.push('an assignment during the check');
        if (problems.length === 0) result = { input, after };
        return problems;
      },
      timeoutMs,
      'the worker to read every input and partial to its end offset',
      { until: (problems) => problems.length === 0, intervalMs: 250, context: () => this.running.tail(20) },
    );
    if (!result) throw new Error('unreachable');
    return result;
  }

  /** What keeps the worker from having read `ends` with nothing in flight (empty: nothing). */
  private problems(detail: Detailed, ends: Map<string, number>): string[] {
    const out: string[] = [];
    if (!detail.state.ready) out.push('not ready');
    const owned = [...detail.kafka.partitions].sort((a, b) => a - b);
    const read = new Set<number>();
    const reading = new Map<string, number>();
    for (const [topic, positions] of Object.entries(detail.kafka.positions)) {
      for (const [partition, position] of Object.entries(positions)) {
        read.add(Number(partition));
        reading.set(`${topic}:${partition}`, Number(position));
      }
    }
    if (JSON.stringify([...read].sort((a, b) => a - b)) !== JSON.stringify(owned)) {
      out.push(`reads partitions ${describe([...read])} but owns ${describe(owned)}`);
    }
    if (detail.state.stage1Pending) out.push(`stage1Pending=${detail.state.stage1Pending}`);
    const lag = Object.entries(detail.kafka.consumerLag).filter(([, n]) => n);
    if (lag.length > 0) out.push(`consumerLag=${describe(Object.fromEntries(lag))}`);
    const missing = Array.from({ length: this.partitions }, (_, p) => p).filter((p) => !owned.includes(p));
    if (missing.length > 0) out.push(`partitions ${describe(missing)} owned by nobody`);
    const behind = [...ends].filter(([tp, end]) => (reading.get(tp) ?? -1) < end);
    if (behind.length > 0) {
      const which = behind.map(([tp, end]) => `${tp} ${reading.get(tp) ?? 'unread'} < ${end}`);
      out.push(`behind (next offset < end offset): ${which.join(', ')}`);
    }
    return out;
  }
}

// --- Kafka topics read to their end offsets -----------------------------------------------------------

export interface KafkaRecord {
  topic: string;
  partition: number;
  offset: number;
  value: Buffer | null;
  headers: Record<string, string>;
}

export interface Read {
  /** "topic:partition" -> end offset */
  ends: Map<string, number>;
  records: KafkaRecord[];
}

/** Read every partition of `topics` from its beginning up to its end offset; return those end offsets and
 * the records.
 *
 * The end offsets are the high-water marks of fetch responses, from a consumer created by the call, so
 * they include everything acknowledged before the call. (The embedded Tansu answers ListOffsets with the
 * base offset of the last record batch + 1, not the end of the log: it is asked first only to tell the
 * empty partitions, which it answers with 0 and whose fetches kafkajs does not report.) kafkajs reads only
 * through a consumer group: each call joins a new one, which the embedded broker holds for a second. */
export async function readToEnd(bootstrap: string, topics: string[], timeoutMs = 60_000): Promise<Read> {
  const kafka = new Kafka({ clientId: 'pulse-e2e-reader', brokers: [bootstrap], logLevel: logLevel.NOTHING });
  const listed = new Map<string, number>();
  const admin = kafka.admin();
  await admin.connect();
  try {
    for (const topic of topics) {
      const partitions = await admin.fetchTopicOffsets(topic);
      if (partitions.length === 0) throw new Error(`the broker knows no partition of ${topic}`);
      for (const p of partitions) listed.set(`${topic}:${p.partition}`, Number(p.high));
    }
  } finally {
    await admin.disconnect();
  }
  const records: KafkaRecord[] = [];
  const positions = new Map<string, number>();
  const highs = new Map<string, number>();
  const consumer = kafka.consumer({
    groupId: `pulse-e2e-reader-${crypto.randomBytes(6).toString('hex')}`,
    sessionTimeout: 2_000,
    heartbeatInterval: 500,
    maxWaitTimeInMs: 50,
    maxBytesPerPartition: 8 << 20,
    allowAutoTopicCreation: false,
  });
  let crashed = '';
  consumer.on(consumer.events.CRASH, (event) => {
    crashed = describe(event.payload.error);
  });
  await consumer.connect();
  try {
    await consumer.subscribe({ topics, fromBeginning: true });
    await consumer.run({
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        const key = `${batch.topic}:${batch.partition}`;
        for (const m of batch.messages) {
          const headers: Record<string, string> = {};
          for (const [name, value] of Object.entries(m.headers ?? {})) headers[name] = String(value);
          records.push({ topic: batch.topic, partition: batch.partition, offset: Number(m.offset), value: m.value, headers });
        }
        positions.set(key, Number(batch.lastOffset()) + 1);
        highs.set(key, Number(batch.highWatermark));
      },
    });
    const behind = (): string[] => [
      ...(crashed ? [`the reader crashed: ${crashed}`] : []),
      ...[...listed]
        .filter(([key, listedEnd]) => highs.has(key) || listedEnd > 0)
        .filter(([key]) => !((positions.get(key) ?? 0) >= (highs.get(key) ?? Infinity)))
        .map(([key, listedEnd]) => `${key} at ${positions.get(key) ?? 0} of ${highs.get(key) ?? `>=${listedEnd}`}`),
    ];
    await waitUntil(behind, timeoutMs, `${topics.join(', ')} read to their end offsets (partitions behind)`, {
      until: (left) => left.length === 0,
      intervalMs: 20,
    });
  } finally {
    await consumer.disconnect();
  }
  const ends = new Map([...listed.keys()].map((key) => [key, highs.get(key) ?? 0]));
  return { ends, records };
}
