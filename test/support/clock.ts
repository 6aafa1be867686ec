import { performance } from 'node:perf_hooks';

/**
 * Runs `body` with the wall clock (Date.now) held at what `clock.at` says,
 * moved only by the test: to land a call on an exact millisecond.
 */
export async function withHeldClock(body: (clock: { at: number }) => Promise<void>): Promise<void> {
  const realNow = Date.now;
  const clock = { at: realNow() };
  Date.now = () => clock.at;
  try {
    await body(clock);
  } finally {
    Date.now = realNow;
  }
}

/**
 * Runs `body` with the wall clock (Date.now) stepped by `stepMs` and still
 * running, as when the host's clock is set (NTP, a VM resumed); the
 * monotonic clock (performance.now()) is left alone.
 */
export async function withSteppedClock(stepMs: number, body: () => Promise<void>): Promise<void> {
  const realNow = Date.now;
  Date.now = () => realNow() + stepMs;
  try {
    await body();
  } finally {
    Date.now = realNow;
  }
}

/**
 * Runs `body` with setTimeout and clearTimeout faked and perf_hooks'
 * performance.now() left alone, as fake-timer libraries do: Jest's (legacy
 * and modern) and sinon's before @sinonjs/fake-timers 15, which fake only
 * the global `performance`. A timer runs only when `tick` moves the fake
 * clock to it.
 */
export async function withFakeTimers(body: (tick: (ms: number) => void) => Promise<void>): Promise<void> {
  const real = { setTimeout: globalThis.setTimeout, clearTimeout: globalThis.clearTimeout };
  const timers = new Map<number, { at: number; run: () => void }>();
  let now = 0;
  let ids = 0;
  globalThis.setTimeout = ((run: () => void, ms = 0) => {
    timers.set(++ids, { at: now + Math.max(1, ms), run });
    return ids;
  }) as unknown as typeof setTimeout;
  globalThis.clearTimeout = ((id: number | undefined) => {
    if (id !== undefined) timers.delete(id);
  }) as typeof clearTimeout;
  const tick = (ms: number): void => {
    const until = now + ms;
    for (;;) {
      let next: number | undefined;
      for (const [id, timer] of timers) if (timer.at <= until && (next === undefined || timer.at < timers.get(next)!.at)) next = id;
      if (next === undefined) break;
      const timer = timers.get(next)!;
      timers.delete(next);
      now = timer.at;
      timer.run();
    }
    now = until;
  };
  try {
    await body(tick);
  } finally {
    Object.assign(globalThis, real);
  }
}

/**
 * Runs `body` with perf_hooks' performance.now() (the monotonic clock, on
 * which the lock table times how lately a session was removed) moved ahead
 * by the test, `advance(ms)` at a time, on top of its own running: time
 * measured on it passes at once. The wall clock is left alone.
 */
export async function withMonotonicClockAhead(body: (advance: (ms: number) => void) => Promise<void>): Promise<void> {
  const realNow = performance.now;
  let ahead = 0;
  performance.now = () => realNow.call(performance) + ahead;
  try {
    await body((ms) => {
      ahead += ms;
    });
  } finally {
    performance.now = realNow;
  }
}
