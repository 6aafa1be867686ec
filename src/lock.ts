import { Semaphore } from 'async-mutex';
import { SessionLockTimeoutError, SessionStoreError } from './errors';
import { trace } from './events';
import type { DistributedLock } from './stores/store';

/** `'read'` is shared, `'write'` is exclusive. */
export type LockMode = 'read' | 'write';

/** Gives a granted lock back. Calling it again does nothing. */
export type Release = () => void;

/**
 * A read/write lock out of one weighted semaphore: readers take 1 unit,
 * writers take all of them. async-mutex's semaphore serves its queue in
 * order and lets nobody jump it, so a writer waiting behind readers is not
 * starved by readers that arrive after it. Each release walks every unit of
 * the semaphore's value, so the capacity (the most readers at once, later
 * ones queue in order) is kept modest.
 */
const CAPACITY = 1024;

interface Entry {
  readonly semaphore: Semaphore;
  /** Requests holding or waiting for this lock. */
  users: number;
}

/**
 * One read/write lock per session ID, alive only while some request holds
 * or waits for it: the entry is deleted when its last user leaves, so memory
 * does not grow with the number of distinct sessions ever seen.
 */
export class LockTable {
  private readonly entries = new Map<string, Entry>();

  /** How many sessions have a lock held or waited for right now. */
  get size(): number {
    return this.entries.size;
  }

  /**
   * Resolves with the lock's release function once `mode` is granted on
   * `id`; rejects with SessionLockTimeoutError after `timeoutMs`
   * (`Infinity` waits for ever).
   */
  acquire(id: string, mode: LockMode, timeoutMs: number): Promise<Release> {
    let entry = this.entries.get(id);
    const uncontended = entry === undefined;
    if (entry === undefined) {
      entry = { semaphore: new Semaphore(CAPACITY), users: 0 };
      this.entries.set(id, entry);
    }
    const weight = mode === 'write' ? CAPACITY : 1;
    if (entry.semaphore.getValue() < weight) trace('lock-wait', id, mode);
    entry.users++;
    const granted = entry.semaphore.acquire(weight);
    const owned = entry;
    const leave = (release: () => void): Release => {
      let done = false;
      return () => {
        if (done) return;
        done = true;
        // The last user drops the whole entry: nobody is left to hand it to.
        if (--owned.users === 0) this.entries.delete(id);
        else release();
      };
    };

    // A fresh entry is granted at once: no timer needed.
    if (uncontended || timeoutMs === Infinity) return granted.then(([, release]) => leave(release));

    return new Promise<Release>((resolve, reject) => {
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        reject(new SessionLockTimeoutError(timeoutMs));
      }, timeoutMs);
      void granted.then(([, release]) => {
        // A waiter cannot leave the semaphore's queue, so one that gave up
        // takes its turn when it comes and hands it straight back.
        if (timedOut) return leave(release)();
        clearTimeout(timer);
        resolve(leave(release));
      });
    });
  }
}

/** The locks of one middleware: see SessionLocks.acquire. */
export class SessionLocks {
  readonly table = new LockTable();

  constructor(
    private readonly timeoutMs: number,
    private readonly remote: DistributedLock | undefined,
  ) {}

  /** Takes `id`'s lock in `mode`; the request holds it until it calls `release()`. */
  async acquire(id: string, mode: LockMode): Promise<HeldLock> {
    const held = new HeldLock(this, id);
    await held.take(mode);
    return held;
  }

  /**
   * The in-process lock, then, for writes on a store that offers one, the
   * cross-process lock: always in that order, so one process never sends
   * the store more than one waiter per session.
   */
  async take(id: string, mode: LockMode): Promise<() => Promise<void>> {
    const started = Date.now();
    const releaseLocal = await this.table.acquire(id, mode, this.timeoutMs);
    const remote = this.remote;
    if (mode === 'read' || remote === undefined) return async () => releaseLocal();
    let releaseRemote: () => Promise<void>;
    try {
      releaseRemote = await remote.acquire(id, Math.max(0, this.timeoutMs - (Date.now() - started)));
    } catch (error) {
      releaseLocal();
      if (error instanceof SessionLockTimeoutError || error instanceof SessionStoreError) throw error;
      throw new SessionStoreError('lock', error);
    }
    return async () => {
      // Remote first, so the next local waiter finds it free. A lock that
      // cannot be handed back expires by itself in the store; the request's
      // commit has already succeeded and must not fail now.
      await releaseRemote().catch(() => trace('remote-unlock-failed', id));
      releaseLocal();
    };
  }
}

/** The lock one request holds on its session. */
export class HeldLock {
  private releaser: (() => Promise<void>) | undefined;
  private heldMode: LockMode | undefined;

  constructor(
    private readonly locks: SessionLocks,
    private readonly id: string,
  ) {}

  get mode(): LockMode | undefined {
    return this.heldMode;
  }

  async take(mode: LockMode): Promise<void> {
    this.releaser = await this.locks.take(this.id, mode);
    this.heldMode = mode;
  }

  /**
   * Makes the hold exclusive. A shared hold is given up first: two readers
   * that both waited for exclusivity while still holding their shared locks
   * would wait for each other for ever.
   */
  async exclusive(): Promise<void> {
    if (this.heldMode === 'write') return;
    await this.release();
    await this.take('write');
  }

  async release(): Promise<void> {
    const releaser = this.releaser;
    this.releaser = undefined;
    this.heldMode = undefined;
    if (releaser !== undefined) await releaser();
  }
}
