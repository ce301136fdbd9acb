// Test doubles: a producer that records what it sends (or fails, or hangs), and a sink that records
// what the helpers emit.

import type { ProducerLike, PulseLogger } from '../src';

export interface Sent {
  topic: string;
  value: string;
}

export class FakeProducer implements ProducerLike {
  readonly sent: Sent[] = [];
  readonly requests: number[] = [];
  /** fail this many sends, then work */
  failNext = 0;
  /** every connect and send fails */
  down = false;
  /** sends never settle */
  hang = false;
  connects = 0;

  async connect(): Promise<void> {
    this.connects += 1;
    if (this.down) throw new Error('connect ECONNREFUSED 127.0.0.1:1');
  }

  async disconnect(): Promise<void> {}

  sendBatch(batch: { topicMessages: { topic: string; messages: { value: string }[] }[] }): Promise<unknown> {
    if (this.hang) return new Promise(() => undefined);
    if (this.down) return Promise.reject(new Error('broker down'));
    if (this.failNext > 0) {
      this.failNext -= 1;
      return Promise.reject(new Error('NOT_LEADER_FOR_PARTITION'));
    }
    let n = 0;
    for (const { topic, messages } of batch.topicMessages) {
      for (const { value } of messages) {
        this.sent.push({ topic, value });
        n += 1;
      }
    }
    this.requests.push(n);
    return Promise.resolve([]);
  }

  /** Every envelope decoded. */
  envelopes(): Record<string, unknown>[][] {
    return this.sent.map((m) => JSON.parse(m.value) as Record<string, unknown>[]);
  }
}

export class Lines implements PulseLogger {
  readonly lines: string[] = [];
  warn(message: string): void {
    this.lines.push(`warn ${message}`);
  }
  error(message: string): void {
    this.lines.push(`error ${message}`);
  }
}

export class Sink {
  readonly service = 'shop-api';
  readonly events: { type: string; event: Record<string, unknown> }[] = [];
  readonly discarded: string[] = [];
  emit(type: string, event: object): boolean {
    this.events.push({ type, event: { ...event } as Record<string, unknown> });
    return true;
  }
  discard(_reason: string, why: string): false {
    this.discarded.push(why);
    return false;
  }
  of(type: string): Record<string, unknown>[] {
    return this.events.filter((e) => e.type === type).map((e) => e.event);
  }
}

export function order(i: number): {
  order_id: string; status: 'created'; amount: number; currency: string; user_id: number;
  user_role: string; payment_method: string; item_count: number;
} {
  return {
    order_id: `o-${i}`, status: 'created', amount: 1000 + i, currency: 'KRW', user_id: i,
    user_role: 'customer', payment_method: 'card', item_count: 1,
  };
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
