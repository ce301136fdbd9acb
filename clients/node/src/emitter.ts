// The Emitter: batches events into envelopes (JSON arrays) and sends them to Kafka with kafkajs.
//
// It mirrors the Python emitter (pipeline/tools/emit.py): envelopes per topic, sent when they hold
// `maxEvents`, would exceed `maxBytes`, or have waited `lingerMs`; `ts` filled in when missing; the
// topic prefix applied. Unlike the Python one it sits in a service's request path, so it never throws
// there: what it cannot keep or send is counted in `stats().dropped`, by reason.

import { Kafka, logLevel, Partitioners, type KafkaConfig } from 'kafkajs';
import { EVENT_TOPICS, type EventMap, type EventType } from './events.generated';
import { register, unregister } from './signals';

/** Why events were dropped (`stats().dropped`). */
export type DropReason =
  /** the buffer was full (Kafka slow or unreachable): the newest event was dropped */
  | 'buffer_full'
  /** a batch still failed after `retries` retries */
  | 'send_failed'
  /** still buffered when `close()` (or SIGTERM/SIGINT) ran out of `closeTimeoutMs` */
  | 'shutdown'
  /** emitted after `close()` */
  | 'closed'
  /** unknown event type, not JSON-serialisable (BigInt, cycles), or an order the helper cannot map */
  | 'invalid';

export const DROP_REASONS: readonly DropReason[] = ['buffer_full', 'send_failed', 'shutdown', 'closed', 'invalid'];

/** What the Emitter did so far. */
export interface EmitterStats {
  /** events handed to `emit()` */
  emitted: number;
  /** events the broker acknowledged */
  sentEvents: number;
  /** Kafka messages (envelopes) the broker acknowledged */
  sentMessages: number;
  /** failed send attempts (each retry counts) */
  sendFailures: number;
  /** events waiting or in flight now */
  bufferedEvents: number;
  /** their JSON bytes */
  bufferedBytes: number;
  /** events dropped, by reason */
  dropped: Record<DropReason, number>;
  /** the sum of `dropped` */
  droppedTotal: number;
}

/** Where the Emitter reports trouble (default: the console, rate-limited). */
export interface PulseLogger {
  warn(message: string): void;
  error(message: string): void;
}

/** The part of a kafkajs Producer the Emitter uses (tests pass their own). */
export interface ProducerLike {
  connect(): Promise<void>;
  disconnect(): Promise<void>;
  sendBatch(batch: {
    topicMessages: { topic: string; messages: { value: string }[] }[];
    acks?: number;
  }): Promise<unknown>;
}

export interface EmitterOptions {
  /** Brokers: `host:port`, a list, or a PULSE_BROKER_URL (`kafka://h1:9092;h2:9092`).
   * Default: $PULSE_BROKER_URL, else 127.0.0.1:9092. */
  brokers?: string | string[];
  /** Topic prefix, as the worker's PULSE_TOPIC_PREFIX. Default: $PULSE_TOPIC_PREFIX, else `o4o.`. */
  prefix?: string;
  /** `service` of request, error and heartbeat events the helpers make. Default: $PULSE_SERVICE, else `o4o-platform`. */
  service?: string;
  /** Longest wait before a batch is sent (Python: `linger`, in seconds). Default 50. */
  lingerMs?: number;
  /** Most events in one envelope. Default 100. */
  maxEvents?: number;
  /** Most bytes of one envelope (an event larger than this goes alone). Default 512 KiB. */
  maxBytes?: number;
  /** Most events buffered (waiting or in flight); beyond it new events are dropped. Default 20,000. */
  maxBufferedEvents?: number;
  /** Most JSON bytes buffered; beyond it new events are dropped. Default 16 MiB. */
  maxBufferedBytes?: number;
  /** Retries of a failed batch before it is dropped. Default 3. */
  retries?: number;
  /** First retry delay; it doubles per retry, up to 2 s. Default 200. */
  retryBackoffMs?: number;
  /** How long `close()` and SIGTERM/SIGINT may take to send the rest. Default 5,000. */
  closeTimeoutMs?: number;
  /** Flush, then exit, on SIGTERM and SIGINT. Default true. */
  handleSignals?: boolean;
  /** Where failures are logged (null: nowhere). Default: console, one line per kind per 10 s. */
  logger?: PulseLogger | null;
  /** More kafkajs client settings (clientId, ssl, sasl, ...). */
  kafka?: Omit<KafkaConfig, 'brokers'>;
  /** A producer to use instead of a kafkajs one (tests). */
  producer?: ProducerLike;
}

interface Envelope {
  topic: string;
  value: string;
  events: number;
  bytes: number;
}

interface OpenBatch {
  parts: string[];
  /** bytes of the envelope `[a,b]`: 1 + Σ (len + 1), as the Python emitter counts */
  size: number;
}

const MAX_BACKOFF_MS = 2_000;
const LOG_EVERY_MS = 10_000;
const REQUEST_BYTES = 1_048_576;

/** Host:port strings from `host:port`, lists, or a PULSE_BROKER_URL. */
export function parseBrokers(brokers: string | string[]): string[] {
  const parts = (Array.isArray(brokers) ? brokers : [brokers]).flatMap((b) => b.split(/[;,]/));
  return parts
    .map((part) => part.trim().replace(/^[a-z][a-z0-9+.-]*:\/\//i, '').replace(/\/.*$/, ''))
    .filter((part) => part.length > 0)
    .map((part) => (/:\d+$/.test(part) ? part : `${part}:9092`));
}

/** `text` with each lone surrogate escape (`\ud800`, which JSON.stringify writes for a string that is
 * not well-formed UTF-16) replaced by U+FFFD, as UTF-8 encoding does. The worker's JSON parser refuses
 * such escapes, and would dead-letter the whole envelope for one of them. */
function wellFormed(text: string): string {
  if (!text.includes('\\ud')) return text;
  return text.replace(/(\\+)u(d[89a-f][0-9a-f]{2})/g, (match: string, slashes: string) =>
    slashes.length % 2 === 1 ? `${slashes.slice(0, -1)}\ufffd` : match,
  );
}

/** The JSON text of one event, `ts` (epoch ms) added when missing, as the Python emitter does. */
export function encodeEvent(event: unknown, nowMs: number): string {
  const json = JSON.stringify(event);
  if (typeof json !== 'string') throw new TypeError('the event is not JSON-serialisable');
  const text = wellFormed(json);
  const record = event as Record<string, unknown> | null;
  if (
    typeof record === 'object' && record !== null && !Array.isArray(record) &&
    record['ts'] === undefined && text.startsWith('{')
  ) {
    return text === '{}' ? `{"ts":${nowMs}}` : `${text.slice(0, -1)},"ts":${nowMs}}`;
  }
  return text;
}

/** One envelope (a JSON array) of encoded events. */
export function encodeEnvelope(parts: readonly string[]): string {
  return `[${parts.join(',')}]`;
}

function positive(name: string, value: number, min: number): number {
  if (!Number.isFinite(value) || value < min) throw new RangeError(`${name} must be a number >= ${min}`);
  return value;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
}

function describe(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

const consoleLogger: PulseLogger = {
  warn: (message) => console.warn(message),
  error: (message) => console.error(message),
};

/** Batching, bounded, never-throwing event producer for services. */
export class Emitter {
  readonly prefix: string;
  readonly service: string;
  readonly lingerMs: number;
  readonly maxEvents: number;
  readonly maxBytes: number;
  readonly maxBufferedEvents: number;
  readonly maxBufferedBytes: number;
  readonly retries: number;
  readonly retryBackoffMs: number;
  readonly closeTimeoutMs: number;

  private readonly producer: ProducerLike;
  private readonly logger: PulseLogger | null;
  private readonly open = new Map<string, OpenBatch>();
  private readonly queue: Envelope[] = [];
  private readonly dropped: Record<DropReason, number> = {
    buffer_full: 0, send_failed: 0, shutdown: 0, closed: 0, invalid: 0,
  };
  private readonly logged = new Map<string, { at: number; suppressed: number }>();
  private readonly idle: (() => void)[] = [];
  private timer: NodeJS.Timeout | undefined;
  private sending = false;
  private connected = false;
  private failing = false;
  private closing: Promise<EmitterStats> | undefined;
  private deadline = Infinity;
  private abandoned = false;
  private emitted = 0;
  private sentEvents = 0;
  private sentMessages = 0;
  private sendFailures = 0;
  private bufferedEvents = 0;
  private bufferedBytes = 0;

  constructor(options: EmitterOptions = {}) {
    const env = process.env;
    this.prefix = options.prefix ?? env['PULSE_TOPIC_PREFIX'] ?? 'o4o.';
    this.service = options.service ?? env['PULSE_SERVICE'] ?? 'o4o-platform';
    this.lingerMs = positive('lingerMs', options.lingerMs ?? 50, 0);
    this.maxEvents = Math.floor(positive('maxEvents', options.maxEvents ?? 100, 1));
    this.maxBytes = positive('maxBytes', options.maxBytes ?? 512 * 1024, 64);
    this.maxBufferedEvents = positive('maxBufferedEvents', options.maxBufferedEvents ?? 20_000, 1);
    this.maxBufferedBytes = positive('maxBufferedBytes', options.maxBufferedBytes ?? 16 * 1024 * 1024, 64);
    this.retries = Math.floor(positive('retries', options.retries ?? 3, 0));
    this.retryBackoffMs = positive('retryBackoffMs', options.retryBackoffMs ?? 200, 0);
    this.closeTimeoutMs = positive('closeTimeoutMs', options.closeTimeoutMs ?? 5_000, 0);
    this.logger = options.logger === undefined ? consoleLogger : options.logger;
    this.producer = options.producer ?? this.kafkaProducer(options);
    if (options.handleSignals ?? true) register(this);
  }

  private kafkaProducer(options: EmitterOptions): ProducerLike {
    const brokers = parseBrokers(options.brokers ?? process.env['PULSE_BROKER_URL'] ?? '127.0.0.1:9092');
    const kafka = new Kafka({
      clientId: 'o4o-pulse-client',
      connectionTimeout: 1_000,
      requestTimeout: 10_000,
      // Bounded: the Emitter retries batches itself and must finish within closeTimeoutMs.
      retry: { retries: 1, initialRetryTime: 100, maxRetryTime: 1_000 },
      logLevel: logLevel.NOTHING,
      ...options.kafka,
      brokers,
    });
    return kafka.producer({
      createPartitioner: Partitioners.DefaultPartitioner,
      allowAutoTopicCreation: false,
      maxInFlightRequests: 1,
    });
  }

  /** Connect now (optional: the first send connects). Resolves false instead of rejecting. */
  async start(): Promise<boolean> {
    try {
      await this.producer.connect();
      this.connected = true;
      return true;
    } catch (err) {
      this.note('warn', 'connect', `cannot connect to Kafka yet (${describe(err)}); events are buffered`);
      return false;
    }
  }

  /** Queue one event; returns false when it was dropped (see `stats().dropped`). Never throws. */
  emit<K extends EventType>(type: K, event: EventMap[K]): boolean {
    this.emitted += 1;
    try {
      return this.add(type, event);
    } catch (err) {
      return this.discard('invalid', `cannot encode a ${String(type)} event (${describe(err)})`);
    }
  }

  /** Count one event as dropped for `reason` and log why; returns false (for `return discard(...)`). */
  discard(reason: DropReason, why: string): false {
    this.dropped[reason] += 1;
    this.note(reason === 'invalid' ? 'warn' : 'error', `drop:${reason}`, `dropped an event: ${why}`);
    return false;
  }

  private add(type: EventType, event: unknown): boolean {
    if (this.closing) return this.discard('closed', 'the emitter is closed');
    if (!Object.prototype.hasOwnProperty.call(EVENT_TOPICS, type)) {
      return this.discard('invalid', `unknown event type ${JSON.stringify(type)}; use one of ${Object.keys(EVENT_TOPICS).join(', ')}`);
    }
    const body = encodeEvent(event, Date.now());
    const bytes = Buffer.byteLength(body);
    if (this.bufferedEvents + 1 > this.maxBufferedEvents || this.bufferedBytes + bytes + 1 > this.maxBufferedBytes) {
      return this.discard('buffer_full', `the buffer holds ${this.bufferedEvents} events (${this.bufferedBytes} bytes), its limit`);
    }
    const topic = this.prefix + EVENT_TOPICS[type];
    let batch = this.open.get(topic);
    if (batch && batch.size + bytes + 1 > this.maxBytes) {
      this.seal(topic);
      batch = undefined;
    }
    if (!batch) {
      batch = { parts: [], size: 1 };
      this.open.set(topic, batch);
    }
    batch.parts.push(body);
    batch.size += bytes + 1;
    this.bufferedEvents += 1;
    this.bufferedBytes += bytes + 1;
    if (batch.parts.length >= this.maxEvents || this.lingerMs === 0) {
      this.seal(topic);
    } else if (this.timer === undefined) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.sealAll();
      }, this.lingerMs);
    }
    return true;
  }

  private seal(topic: string): void {
    const batch = this.open.get(topic);
    this.open.delete(topic);
    if (this.open.size === 0 && this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (!batch || batch.parts.length === 0) return;
    // bytes: as counted in bufferedBytes (Σ (len + 1)), one less than the envelope's size
    this.queue.push({ topic, value: encodeEnvelope(batch.parts), events: batch.parts.length, bytes: batch.size - 1 });
    void this.pump();
  }

  private sealAll(): void {
    for (const topic of [...this.open.keys()]) this.seal(topic);
  }

  private async pump(): Promise<void> {
    if (this.sending) return;
    this.sending = true;
    try {
      while (this.queue.length > 0 && !this.abandoned) {
        let bytes = 0;
        let count = 0;
        while (count < this.queue.length && (count === 0 || bytes + this.queue[count]!.bytes <= REQUEST_BYTES)) {
          bytes += this.queue[count]!.bytes;
          count += 1;
        }
        await this.deliver(this.queue.splice(0, count));
      }
    } finally {
      this.sending = false;
      if (this.queue.length === 0 || this.abandoned) for (const resolve of this.idle.splice(0)) resolve();
    }
  }

  private async deliver(chunk: Envelope[]): Promise<void> {
    const byTopic = new Map<string, { value: string }[]>();
    for (const envelope of chunk) {
      const messages = byTopic.get(envelope.topic) ?? [];
      messages.push({ value: envelope.value });
      byTopic.set(envelope.topic, messages);
    }
    const topicMessages = [...byTopic].map(([topic, messages]) => ({ topic, messages }));
    const events = chunk.reduce((n, e) => n + e.events, 0);
    const bytes = chunk.reduce((n, e) => n + e.bytes, 0);
    for (let attempt = 0; ; attempt += 1) {
      try {
        if (!this.connected) {
          await this.producer.connect();
          this.connected = true;
        }
        await this.producer.sendBatch({ topicMessages, acks: -1 });
        if (this.abandoned) return;
        this.sentEvents += events;
        this.sentMessages += chunk.length;
        this.release(events, bytes);
        if (this.failing) {
          this.failing = false;
          this.logger?.warn('pulse-client: Kafka accepts events again');
        }
        return;
      } catch (err) {
        if (this.abandoned) return;
        this.sendFailures += 1;
        this.connected = false;
        this.failing = true;
        const delay = Math.min(this.retryBackoffMs * 2 ** attempt, MAX_BACKOFF_MS);
        if (attempt >= this.retries || Date.now() + delay >= this.deadline) {
          const reason: DropReason = Date.now() + delay >= this.deadline ? 'shutdown' : 'send_failed';
          this.dropped[reason] += events;
          this.release(events, bytes);
          this.note('error', `drop:${reason}`, `dropped ${events} events after ${attempt + 1} failed sends: ${describe(err)}`);
          return;
        }
        this.note('warn', 'retry', `sending ${events} events failed (${describe(err)}); retrying in ${delay} ms`);
        await sleep(delay);
      }
    }
  }

  private release(events: number, bytes: number): void {
    this.bufferedEvents -= events;
    this.bufferedBytes -= bytes;
  }

  /** Send every pending batch; resolves true once the broker has them (or they were dropped), false
   * when `timeoutMs` passed first. Never rejects. */
  flush(timeoutMs = Infinity): Promise<boolean> {
    this.sealAll();
    if (!this.sending && this.queue.length === 0) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = (): void => {
        if (timer !== undefined) clearTimeout(timer);
        resolve(true);
      };
      this.idle.push(done);
      if (Number.isFinite(timeoutMs)) {
        timer = setTimeout(() => {
          const at = this.idle.indexOf(done);
          if (at >= 0) this.idle.splice(at, 1);
          resolve(false);
        }, timeoutMs);
      }
    });
  }

  /** Send the rest within `timeoutMs` (default `closeTimeoutMs`), count what is left as dropped
   * (`shutdown`), disconnect. Later `emit()`s are dropped (`closed`). Never rejects; idempotent. */
  close(timeoutMs = this.closeTimeoutMs): Promise<EmitterStats> {
    this.closing ??= this.shutdown(timeoutMs);
    return this.closing;
  }

  private async shutdown(timeoutMs: number): Promise<EmitterStats> {
    unregister(this);
    this.deadline = Date.now() + timeoutMs;
    const drained = await this.flush(timeoutMs);
    if (!drained || this.bufferedEvents > 0) {
      this.abandoned = true;
      this.dropped.shutdown += this.bufferedEvents;
      if (this.bufferedEvents > 0) {
        this.note('error', 'drop:shutdown', `dropped ${this.bufferedEvents} events still buffered after ${timeoutMs} ms`);
      }
      this.release(this.bufferedEvents, this.bufferedBytes);
      this.queue.length = 0;
      this.open.clear();
    }
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.producer.disconnect().catch(() => undefined),
      new Promise((resolve) => { timer = setTimeout(resolve, 1_000); }),
    ]);
    clearTimeout(timer);
    return this.stats();
  }

  /** A snapshot of the counters: export `dropped` to your metrics (see the README). */
  stats(): EmitterStats {
    const dropped = { ...this.dropped };
    return {
      emitted: this.emitted,
      sentEvents: this.sentEvents,
      sentMessages: this.sentMessages,
      sendFailures: this.sendFailures,
      bufferedEvents: this.bufferedEvents,
      bufferedBytes: this.bufferedBytes,
      dropped,
      droppedTotal: DROP_REASONS.reduce((n, r) => n + dropped[r], 0),
    };
  }

  /** Log at most one line per kind per 10 s, saying how many were suppressed in between. */
  private note(level: 'warn' | 'error', kind: string, message: string): void {
    if (!this.logger) return;
    const now = Date.now();
    const last = this.logged.get(kind);
    if (last && now - last.at < LOG_EVERY_MS) {
      last.suppressed += 1;
      return;
    }
    const more = last && last.suppressed > 0 ? ` (and ${last.suppressed} more like it since the last report)` : '';
    this.logged.set(kind, { at: now, suppressed: 0 });
    try {
      this.logger[level](`pulse-client: ${message}${more}`);
    } catch {
      // a broken logger must not break the caller
    }
  }
}
