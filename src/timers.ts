import { performance } from 'node:perf_hooks';

/** Node's largest timer delay: setTimeout and setInterval silently turn anything longer into 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** A timeout started in a TimeoutLine (see TimeoutLine.start). */
export interface LineTimeout {
  readonly endsAt: number;
  /** What runs when the time runs out; undefined once the timeout has ended or run out. */
  expire: (() => void) | undefined;
  /** The timeout started after this one. */
  next: LineTimeout | undefined;
}

/**
 * Timeouts of one length, started one after the other, so that they run out
 * in the order they started: one Node timer, armed for the oldest, serves
 * them all. A request that waits for a lock (lockTimeout) then costs a
 * small list entry instead of a Node timer of its own, set and cleared.
 */
export class TimeoutLine {
  /**
   * Started and not run out, oldest first, as a linked list. The oldest is
   * always running (see dropEnded); one that ended behind it stays until
   * it reaches the front.
   */
  private oldest: LineTimeout | undefined;
  private newest: LineTimeout | undefined;
  /** Timeouts started that have neither ended nor run out. */
  private running = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly ms: number) {}

  /** Runs `expire` in `ms` milliseconds, unless end() comes first. */
  start(expire: () => void): LineTimeout {
    const timeout: LineTimeout = { endsAt: performance.now() + this.ms, expire, next: undefined };
    if (this.newest === undefined) this.oldest = timeout;
    else this.newest.next = timeout;
    this.newest = timeout;
    this.running++;
    this.timer ??= setTimeout(this.runOut, this.ms);
    return timeout;
  }

  /** The timeout is no longer needed. Ending it again, or after it ran out, does nothing. */
  end(timeout: LineTimeout): void {
    if (timeout.expire === undefined) return;
    timeout.expire = undefined; // what it would have run (a request) need not be kept while the entry waits to be dropped
    this.running--;
    this.dropEnded();
    if (this.running > 0) return;
    // Nothing left to time: no timer keeps the process alive.
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private readonly runOut = (): void => {
    this.timer = undefined;
    const now = performance.now();
    for (let oldest = this.oldest; oldest !== undefined; oldest = this.oldest) {
      // Node's timer may fire up to a millisecond before performance.now() says the time is up: wait for the rest.
      // An expire() that started a timeout armed the timer for that one: the oldest comes first.
      if (oldest.endsAt > now) {
        clearTimeout(this.timer);
        this.timer = setTimeout(this.runOut, Math.ceil(oldest.endsAt - now));
        return;
      }
      const expire = oldest.expire;
      this.end(oldest);
      expire?.();
    }
  };

  /**
   * Drops the ended timeouts at the front: waiters are mostly granted in
   * the order they came. Each is unlinked: a dropped entry that survived to
   * the old generation would otherwise keep the newer ones it links to, and
   * what they hold, alive through every young-generation collection.
   */
  private dropEnded(): void {
    let oldest = this.oldest;
    while (oldest !== undefined && oldest.expire === undefined) {
      const next = oldest.next;
      oldest.next = undefined;
      oldest = next;
    }
    this.oldest = oldest;
    if (oldest === undefined) this.newest = undefined;
  }
}
