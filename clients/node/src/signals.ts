// SIGTERM and SIGINT: every live Emitter sends what it holds (each within its closeTimeoutMs), then the
// process ends the way it would have without us: by the signal's default action, unless the service
// listens for that signal itself, in which case its own handler decides when to exit.

interface Closable {
  close(): Promise<unknown>;
}

const SIGNALS = ['SIGTERM', 'SIGINT'] as const;
const live = new Set<Closable>();
let installed = false;
let stopping = false;

function onSignal(signal: NodeJS.Signals): void {
  const othersListen = process.listenerCount(signal) > 1;
  if (stopping) {
    // A second signal while flushing: stop waiting.
    if (!othersListen) reraise(signal);
    return;
  }
  stopping = true;
  void Promise.all([...live].map((emitter) => emitter.close().catch(() => undefined))).then(() => {
    if (!othersListen) reraise(signal);
  });
}

function reraise(signal: NodeJS.Signals): void {
  uninstall();
  process.kill(process.pid, signal);
}

function uninstall(): void {
  for (const signal of SIGNALS) process.removeListener(signal, onSignal);
  installed = false;
}

/** Flush `emitter` on SIGTERM/SIGINT (until it is closed). */
export function register(emitter: Closable): void {
  live.add(emitter);
  if (!installed) {
    for (const signal of SIGNALS) process.on(signal, onSignal);
    installed = true;
  }
}

/** Forget a closed emitter; the last one removes the signal handlers. */
export function unregister(emitter: Closable): void {
  live.delete(emitter);
  if (live.size === 0 && installed && !stopping) uninstall();
}
