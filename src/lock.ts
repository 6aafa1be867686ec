import { Semaphore } from 'async-mutex';
import { SessionLockTimeoutError, SessionStoreError } from './errors';
import { trace } from './events';
import type { DistributedLock } from './stores/store';

/** `'read'` is shared, `'write'` is exclusive. */
export type LockMode = 'read' | 'write';

/** Gives a granted lock back. Calling it again does nothing. */
export type Release = () => void;

/**
 * One session's read/write lock, out of two async-mutex semaphores of one
 * unit each, i.e. mutexes (both serve waiters in arrival order; the bare
 * Semaphore is used for its lighter acquire):
 * - `turn` is the line everyone queues in. A writer keeps its place at the
 *   head until it holds `resource`, so readers that arrive after a waiting
 *   writer queue behind it: no writer starvation, first come first served.
 * - `resource` is held by one writer, or by the readers as a group: the
 *   first reader in takes it, the last one out gives it back. Any number of
 *   readers share it.
 */
class ReadWriteLock {
  private readonly turn = new Semaphore(1);
  private readonly resource = new Semaphore(1);
  private readers = 0;
  private releaseReaders: (() => void) | undefined;
  /** Requests holding or waiting for this lock. */
  users = 0;

  /** Whether a request in `mode` would have to wait (a reader joins other readers at once). */
  wouldWait(mode: LockMode): boolean {
    return this.turn.isLocked() || (this.resource.isLocked() && (mode === 'write' || this.readers === 0));
  }

  async acquire(mode: LockMode): Promise<() => void> {
    const [, releaseTurn] = await this.turn.acquire();
    try {
      if (mode === 'write') return (await this.resource.acquire())[1];
      if (++this.readers === 1) this.releaseReaders = (await this.resource.acquire())[1];
      return () => {
        if (--this.readers === 0) this.releaseReaders?.();
      };
    } finally {
      releaseTurn();
    }
  }
}

/**
 * One read/write lock per session ID, alive only while some request holds
 * or waits for it: the entry is deleted when its last user leaves, so memory
 * does not grow with the number of distinct sessions ever seen.
 */
export class LockTable {
  private readonly entries = new Map<string, ReadWriteLock>();

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
    let lock = this.entries.get(id);
    const uncontended = lock === undefined;
    if (lock === undefined) {
      lock = new ReadWriteLock();
      this.entries.set(id, lock);
    } else if (lock.wouldWait(mode)) {
      trace('lock-wait', id, mode);
    }
    lock.users++;
    const granted = lock.acquire(mode);
    const owned = lock;
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
    if (uncontended || timeoutMs === Infinity) return granted.then(leave);

    return new Promise<Release>((resolve, reject) => {
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        reject(new SessionLockTimeoutError(timeoutMs));
      }, timeoutMs);
      void granted.then((release) => {
        // A waiter cannot leave the mutexes' queues, so one that gave up
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
  private readonly table = new LockTable();

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
