// Deadlines for the waits in tests: a wait that never ends must fail the test
// with what did not happen, not hang the run until CI kills it. Each timer is
// cleared once the wait ends, so a test file also ends on its own (without
// --test-force-exit).

/** The failure of a wait that ran out of time. */
class LateError extends Error {
  constructor(what: string, ms: number) {
    super(`${what}: not done after ${(ms / 1000).toFixed(1)} s`);
  }
}

/** `promise`, or a failure naming `what` once `ms` have passed. */
export async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new LateError(what, ms)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** `promise`, or a failure naming `what` and the whole wait (`totalMs`) once `deadline` (a Date.now() time) has passed: for the last of several checks. */
export function byDeadline<T>(deadline: number, totalMs: number, what: string, promise: Promise<T>): Promise<T> {
  return within(Math.max(1, deadline - Date.now()), what, promise).catch((err: unknown) => {
    throw err instanceof LateError ? new LateError(what, totalMs) : err;
  });
}

/** Polls `check` every `everyMs` until it holds; fails naming `what` after `ms`. */
export async function until(ms: number, what: string, check: () => boolean | Promise<boolean>, everyMs = 20): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await byDeadline(deadline, ms, what, Promise.resolve(check()))) return;
    if (Date.now() > deadline) throw new LateError(what, ms);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Waits for `emitter` to emit `event` (its arguments), failing after `ms` or on its 'error'. */
export function event<A extends unknown[] = unknown[]>(
  ms: number,
  what: string,
  emitter: { once(event: string, listener: (...args: never[]) => void): unknown; off(event: string, listener: (...args: never[]) => void): unknown },
  name: string,
): Promise<A> {
  let onEvent: (...args: never[]) => void = () => undefined;
  let onError: (...args: never[]) => void = () => undefined;
  const happened = new Promise<A>((resolve, reject) => {
    onEvent = (...args: never[]) => resolve(args as unknown as A);
    onError = (err: never) => reject(err);
    emitter.once(name, onEvent);
    if (name !== "error") emitter.once("error", onError);
  });
  return within(ms, what, happened).finally(() => {
    emitter.off(name, onEvent);
    emitter.off("error", onError);
  });
}
