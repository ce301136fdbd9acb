// pulseMiddleware: one request event per finished response, with the route *template*.
//
// The route is the guide's `req.route.path`, but whole: `req.baseUrl + req.route.path`, so routers
// mounted with app.use('/api/orders', router) keep their prefix. `req.baseUrl` is the matched text of
// the mount paths, so a mount path with parameters (app.use('/users/:userId/cart', router)) would put ids
// in it; the middleware turns those segments back into `:name` with the parameters Express matched.
// A request that matched no route gets `unmatched`, never its raw path.

import { requestContext, type RequestState } from './context';
import type { RequestEvent } from './events.generated';

/** The parts of an Express request the middleware reads (Express 4 and 5 requests fit). */
export interface RequestLike {
  method?: string;
  baseUrl?: string;
  route?: unknown;
  params?: unknown;
}

/** The parts of an Express response the middleware reads. */
export interface ResponseLike {
  statusCode: number;
  once(event: 'finish', listener: () => void): unknown;
}

/** Where events go: an Emitter. */
export interface RequestSink {
  readonly service: string;
  emit(type: 'request', event: RequestEvent): boolean;
}

export interface PulseMiddlewareOptions<Req> {
  /** `service` of the events (default: the emitter's). */
  service?: string;
  /** The caller's user id, read when the response finished (e.g. `(req) => req.user?.id`). */
  userId?: (req: Req) => string | number | null | undefined;
}

const MAX_LABEL = 512;
const METHOD = /^[A-Za-z]{1,16}$/;

/** A label cut to the schema's 512 characters (whole code points), never empty. */
export function label(text: string, fallback: string): string {
  if (text.length === 0) return fallback;
  if (text.length <= MAX_LABEL) return text;
  return Array.from(text).slice(0, MAX_LABEL).join('');
}

function pathOf(route: unknown): string {
  const path = (route as { path?: unknown } | null | undefined)?.path;
  if (typeof path === 'string') return path;
  if (Array.isArray(path)) return path.map(String).join(',');
  return path === undefined ? '' : String(path);
}

function paramsOf(req: RequestLike): [string, string][] {
  const params = req.params;
  if (typeof params !== 'object' || params === null) return [];
  return Object.entries(params as Record<string, unknown>).filter(
    (pair): pair is [string, string] => typeof pair[1] === 'string' && pair[1].length > 0,
  );
}

function decode(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

/** `part` of a matched path with each segment that is a matched parameter's value as `:name`. */
export function templatize(part: string, params: [string, string][]): string {
  if (params.length === 0) return part;
  return part
    .split('/')
    .map((segment) => {
      const value = decode(segment);
      const found = params.find(([, v]) => v === value);
      return segment && found ? `:${found[0]}` : segment;
    })
    .join('/');
}

/** A mount template and a route path: router.get('/') under '/api/orders' is '/api/orders'. */
function join(base: string, path: string): string {
  return label(path === '/' && base !== '' ? base : base + path, '/');
}

/** Follows `req.baseUrl` and `req.route` as Express sets them, keeping the route as a template. */
class RouteTracker {
  /** matched `baseUrl` text -> its template */
  private readonly templates = new Map<string, string>([['', '']]);

  constructor(private readonly req: RequestLike, private readonly state: RequestState) {}

  install(): void {
    const { req } = this;
    let baseUrl = typeof req.baseUrl === 'string' ? req.baseUrl : '';
    let route = req.route;
    this.base(baseUrl);
    if (route) this.matched(baseUrl, route);
    try {
      Object.defineProperty(req, 'baseUrl', {
        configurable: true,
        enumerable: true,
        get: () => baseUrl,
        set: (value: unknown) => {
          baseUrl = value as string;
          if (typeof value === 'string') this.base(value);
        },
      });
      Object.defineProperty(req, 'route', {
        configurable: true,
        enumerable: true,
        get: () => route,
        set: (value: unknown) => {
          route = value;
          if (value) this.matched(baseUrl, value);
        },
      });
    } catch {
      // A frozen request: fall back to reading req.baseUrl and req.route when the response finishes.
    }
  }

  /** Express just set `req.baseUrl` (entering or leaving a mounted router): its params are those of
   * the mount path. */
  private base(raw: string): string {
    const known = this.templates.get(raw);
    if (known !== undefined) return known;
    let parent = '';
    for (const candidate of this.templates.keys()) {
      if (candidate.length > parent.length && raw.startsWith(candidate) && raw[candidate.length] === '/') {
        parent = candidate;
      }
    }
    const template = this.templates.get(parent)! + templatize(raw.slice(parent.length), paramsOf(this.req));
    this.templates.set(raw, template);
    return template;
  }

  private matched(baseUrl: string, route: unknown): void {
    this.state.route = join(this.base(baseUrl), pathOf(route));
  }

  /** The route when the response finished. */
  finalRoute(): string {
    if (this.state.route !== undefined) return this.state.route;
    const { req } = this;
    if (req.route) return join(this.base(typeof req.baseUrl === 'string' ? req.baseUrl : ''), pathOf(req.route));
    return 'unmatched';
  }
}

/** Express middleware: one request event per finished response. Install it before the routes:
 * `app.use(pulseMiddleware(emitter))`. It never throws and always calls `next()`. */
export function pulseMiddleware<Req extends RequestLike = RequestLike>(
  emitter: RequestSink,
  options: PulseMiddlewareOptions<Req> = {},
): (req: Req, res: ResponseLike, next: (err?: unknown) => void) => void {
  const service = label(options.service ?? emitter.service, 'unknown');
  const userIdOf = options.userId;
  return (req, res, next) => {
    const state: RequestState = { route: undefined };
    try {
      const started = process.hrtime.bigint();
      const tracker = new RouteTracker(req, state);
      tracker.install();
      res.once('finish', () => {
        try {
          const elapsed = Number(process.hrtime.bigint() - started) / 1e6;
          const method = typeof req.method === 'string' && METHOD.test(req.method) ? req.method.toUpperCase() : 'OTHER';
          const event: RequestEvent = {
            service,
            method,
            route: tracker.finalRoute(),
            status_code: res.statusCode,
            duration_ms: Math.round(elapsed * 1000) / 1000,
          };
          if (userIdOf) {
            const user = userIdOf(req);
            if (typeof user === 'string' && user.length > 0) event.user_id = user;
            else if (typeof user === 'number' && Number.isFinite(user)) event.user_id = Number.isInteger(user) ? user : String(user);
          }
          emitter.emit('request', event);
        } catch {
          // a failing userId hook or emitter must not reach the server
        }
      });
    } catch {
      // never in the way of the request
    }
    requestContext.run(state, next);
  };
}
