// startHeartbeat: run a health check every N seconds and send a heartbeat event (the basis of pulse's
// deadman rules: a service that stops sending heartbeats is found too).

import type { HeartbeatEvent } from './events.generated';
import { label } from './express';

/** Where events go: an Emitter. */
export interface HeartbeatSink {
  emit(type: 'heartbeat', event: HeartbeatEvent): boolean;
}

export interface HeartbeatOptions {
  /** Time between checks. Default 15,000. */
  everyMs?: number;
  /** A check that takes longer counts as unhealthy. Default: everyMs, at most 5,000. */
  timeoutMs?: number;
}

export interface Heartbeat {
  /** Run the check now and send its heartbeat. Never rejects. */
  beat(): Promise<HeartbeatEvent>;
  /** Stop the timer (an ongoing check still sends its heartbeat). */
  stop(): void;
}

/** Healthy when `check` resolves (to anything but `false`) within the timeout; unhealthy when it
 * throws, rejects, resolves `false` or times out. The first beat is sent at once; the timer does not
 * keep the process alive. */
export function startHeartbeat(
  emitter: HeartbeatSink,
  service: string,
  check: () => unknown,
  options: HeartbeatOptions = {},
): Heartbeat {
  const everyMs = options.everyMs ?? 15_000;
  const timeoutMs = options.timeoutMs ?? Math.min(everyMs, 5_000);
  const name = label(service, 'unknown');
  let running: Promise<HeartbeatEvent> | undefined;

  async function probe(): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    try {
      const result = await Promise.race([Promise.resolve().then(check), timeout]);
      return result !== false;
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  function beat(): Promise<HeartbeatEvent> {
    running ??= (async () => {
      const started = process.hrtime.bigint();
      const healthy = await probe();
      const elapsed = Number(process.hrtime.bigint() - started) / 1e6;
      const event: HeartbeatEvent = {
        service: name,
        status: healthy ? 'healthy' : 'unhealthy',
        response_time_ms: Math.round(elapsed * 1000) / 1000,
      };
      try {
        emitter.emit('heartbeat', event);
      } catch {
        // never let the timer throw
      }
      running = undefined;
      return event;
    })();
    return running;
  }

  const timer = setInterval(() => void beat(), everyMs);
  timer.unref();
  void beat();
  return { beat, stop: () => clearInterval(timer) };
}
