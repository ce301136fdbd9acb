// PulseTransport: Winston's error lines as error events.
//
// A Winston 3 transport is an object-mode Writable stream with a `log(info, callback)` method; this one
// is exactly that, so the package needs neither winston nor winston-transport at run time.

import { Writable } from 'node:stream';
import { currentRoute } from './context';
import type { ErrorEvent } from './events.generated';
import { label } from './express';

/** Where events go: an Emitter. */
export interface ErrorSink {
  readonly service: string;
  emit(type: 'error', event: ErrorEvent): boolean;
}

export interface PulseTransportOptions {
  /** `service` when the log line has none (default: the emitter's). */
  service?: string;
  /** `route` of lines logged outside a request (inside one: its route template). Default `background`. */
  route?: string;
  /** `error_code` when the line has no `errorCode`, `error_code` or `code`. Default `error`. */
  errorCode?: string;
}

/** Winston's info object: level, message and meta fields. */
export type LogInfo = Record<string | symbol, unknown>;

const LEVEL = Symbol.for('level');
const NPM_LEVELS: Record<string, number> = { error: 0, warn: 1, info: 2, http: 3, verbose: 4, debug: 5, silly: 6 };

function text(value: unknown): string | undefined {
  return typeof value === 'string' && value.length > 0 ? value : undefined;
}

function code(value: unknown): string | number | undefined {
  if (typeof value === 'number' && Number.isInteger(value)) return value;
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  return text(value) === undefined ? undefined : label(value as string, 'error');
}

/** Sends `error`-level log lines (and more severe ones of custom levels) to pulse as error events. */
export class PulseTransport extends Writable {
  /** Winston reads this: the least severe level the transport takes. */
  readonly level = 'error';
  readonly handleExceptions = false;
  private levels: Record<string, number> = NPM_LEVELS;

  constructor(private readonly emitter: ErrorSink, private readonly options: PulseTransportOptions = {}) {
    super({ objectMode: true });
    this.on('pipe', (logger: { levels?: Record<string, number> }) => {
      if (logger && typeof logger.levels === 'object') this.levels = logger.levels;
    });
  }

  /** The error event of a log line, or undefined for lines below `error`. */
  eventOf(info: LogInfo): ErrorEvent | undefined {
    const level = text(info[LEVEL]) ?? text(info['level']) ?? '';
    const rank = this.levels[level];
    const errorRank = this.levels['error'];
    if (rank === undefined || errorRank === undefined || rank > errorRank) return undefined;
    const cause = info['error'] as { code?: unknown } | undefined;
    const detail = text(info['errorMessage']);
    const message = typeof info['message'] === 'string' ? info['message'] : String(info['message'] ?? '');
    const event: ErrorEvent = {
      service: label(text(info['service']) ?? this.options.service ?? this.emitter.service, 'unknown'),
      route: label(text(info['route']) ?? currentRoute() ?? this.options.route ?? 'background', 'background'),
      error_code:
        code(info['errorCode']) ?? code(info['error_code']) ?? code(info['code']) ??
        code(typeof cause === 'object' && cause !== null ? cause.code : undefined) ??
        this.options.errorCode ?? 'error',
      message: detail && detail !== message ? `${message}: ${detail}` : message,
    };
    const stack = text(info['stack']);
    if (stack !== undefined) event.stack = stack;
    return event;
  }

  /** Winston's transport method. Never throws. */
  log(info: LogInfo, callback?: () => void): void {
    try {
      const event = this.eventOf(info);
      if (event) this.emitter.emit('error', event);
    } catch {
      // logging must never fail because of pulse
    }
    callback?.();
  }

  override _write(info: LogInfo, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.log(info);
    callback();
  }
}
