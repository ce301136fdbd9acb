// The request a piece of code runs for, so that log lines (the Winston transport) know their route.

import { AsyncLocalStorage } from 'node:async_hooks';

/** What pulseMiddleware knows about the request being served. */
export interface RequestState {
  /** The route template once Express matched one (`req.baseUrl` as a template + `req.route.path`). */
  route: string | undefined;
}

export const requestContext = new AsyncLocalStorage<RequestState>();

/** The route template of the request being served: undefined outside a request, `unmatched` inside
 * one that matched no route (yet). */
export function currentRoute(): string | undefined {
  const state = requestContext.getStore();
  return state ? (state.route ?? 'unmatched') : undefined;
}
