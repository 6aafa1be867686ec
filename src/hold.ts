import { performance } from 'node:perf_hooks';
import { SessionLockTimeoutError, SessionStoreError } from './errors';
import { trace } from './events';
import type { Eventually, LockMode, LockTable, Release } from './lock';
import type { DistributedLock, StoredSession } from './stores/store';

/*
 * A request's hold on its session: the in-process lock from the store's
 * lock table (lock.ts), and for writes on a store that offers one the
 * cross-process lock too, taken and given back as one.
 */

/** The locks of one middleware, in the lock table of its store: see SessionLocks.acquire. */
export class SessionLocks {
  constructor(
    private readonly timeoutMs: number,
    private readonly remote: DistributedLock | undefined,
    /** The lock table of the middleware's store (see lockTableOf); a HeldLock asks it directly. */
    readonly table: LockTable,
  ) {}

  /** Takes `id`'s lock in `mode`; the request holds it until it calls `release()`. */
  acquire(id: string, mode: LockMode): Eventually<HeldLock> {
    return new HeldLock(this, id, this.table.nextTicket()).take(mode);
  }

  /**
   * The in-process lock, then, for writes on a store that offers one, the
   * cross-process lock: always in that order, so one process never sends
   * the store more than one waiter per session. `whenTaken` makes what the
   * caller wants of the releasers (see LockTable.acquire).
   */
  take<T>(id: string, mode: LockMode, whenTaken: (releasers: Releasers) => T): Eventually<T> {
    const remote = mode === 'write' ? this.remote : undefined;
    if (remote !== undefined) {
      const started = performance.now();
      return this.withRemote(id, remote, started, this.table.acquire(id, 'write', this.timeoutMs)).then(whenTaken);
    }
    return this.table.acquire(id, mode, this.timeoutMs, (local, queued) =>
      // Granted at once: nobody was in line, so no writer just handed anything over.
      whenTaken({ local, remote: undefined, inherited: queued ? this.table.takeHandOver(id) : undefined }),
    );
  }

  /**
   * Makes a shared hold on `id` exclusive, ahead of the requests in line
   * (see LockTable.upgrade), then takes the cross-process lock where the
   * store offers one: the order of take.
   */
  upgrade(id: string): Promise<Releasers> {
    const started = performance.now();
    const local = this.table.upgrade(id, this.timeoutMs);
    if (this.remote !== undefined) return this.withRemote(id, this.remote, started, local);
    return Promise.resolve(local).then((release) => ({ local: release, remote: undefined, inherited: undefined }));
  }

  /**
   * The cross-process lock, once the in-process one (`taking`, asked for at
   * `started`) has come, within what is left of lockTimeout. On the
   * monotonic clock, as the lock table counts: a wall clock stepped
   * meanwhile (NTP, a VM resumed) would give the store an hour, or nothing.
   */
  private async withRemote(id: string, remote: DistributedLock, started: number, taking: Eventually<Release>): Promise<Releasers> {
    const local = await taking;
    try {
      // Nothing is handed over under a cross-process lock: another process may write between two of ours (see Storage.readingBack).
      const left = Math.max(0, this.timeoutMs - (performance.now() - started));
      return { local, remote: await remote.acquire(id, left), inherited: undefined };
    } catch (error) {
      local();
      // The store waited for what was left of lockTimeout; the request waited all of it.
      if (error instanceof SessionLockTimeoutError) throw new SessionLockTimeoutError(this.timeoutMs);
      if (error instanceof SessionStoreError) throw error;
      throw new SessionStoreError('lock', error);
    }
  }
}

interface Releasers {
  local: Release;
  remote: (() => Promise<void>) | undefined;
  /** What the writer before was handing over when the lock was granted. */
  inherited: StoredSession | undefined;
}

/** The lock one request holds on its session. */
export class HeldLock {
  private releasers: Releasers | undefined;
  private heldMode: LockMode | undefined;
  private leaving: StoredSession | undefined;
  /** This request removed its session and still holds the lock (see markRemoved). */
  private removedSession = false;

  constructor(
    private readonly locks: SessionLocks,
    readonly id: string,
    private readonly ticket: number,
  ) {}

  get mode(): LockMode | undefined {
    return this.heldMode;
  }

  /**
   * The session as the writer just before this request left it in the
   * store, when it handed it over (see handOver and
   * LockTable.takeHandOver): the request starts from it instead of loading
   * the session.
   */
  get inherited(): StoredSession | undefined {
    return this.releasers?.inherited;
  }

  /** True when the hold is exclusive and other requests wait for the lock. */
  hasWaiters(): boolean {
    return this.heldMode === 'write' && this.locks.table.isWaitedFor(this.id);
  }

  /** Notes that this request has removed its session from the store, until it lets go of the lock (see LockTable.removalStarted). */
  markRemoved(): void {
    if (this.removedSession || this.releasers === undefined) return;
    this.removedSession = true;
    this.locks.table.removalStarted(this.id);
  }

  /** True when this request removed its session and still holds the lock (see markRemoved). */
  get removedTheSession(): boolean {
    return this.removedSession;
  }

  /** See LockTable.claimDestroyReport. */
  claimDestroyReport(): boolean {
    return this.locks.table.claimDestroyReport(this.id);
  }

  /** True when a request holding this lock removed the session while this one asked for it or waited (see LockTable.removalStarted). */
  get removedAfterAsking(): boolean {
    return this.locks.table.removedAfterAsking(this.id, this.ticket);
  }

  /**
   * Leaves `session`, as this exclusive hold's commit left it in the store,
   * to the requests after it (see inherited). Ignored on a shared hold.
   */
  handOver(session: StoredSession): void {
    this.leaving = session;
  }

  /** Takes the lock in `mode`: this hold at once when it is granted at once, else a promise of it. */
  take(mode: LockMode): Eventually<this> {
    return this.locks.take(this.id, mode, (releasers) => this.hold(mode, releasers));
  }

  /**
   * Makes the hold exclusive, before the requests in line: they came after
   * this one (see LockTable.upgrade). The shared hold is given up as it
   * waits: two readers that both waited for exclusivity while still holding
   * their shared locks would wait for each other for ever. It holds nothing
   * when the wait fails.
   */
  exclusive(): Promise<void> | undefined {
    if (this.heldMode === 'write') return undefined;
    return this.upgrade();
  }

  private async upgrade(): Promise<void> {
    // A shared hold is in-process only: nothing to hand back to the store.
    this.releasers = undefined;
    this.heldMode = undefined;
    this.hold('write', await this.locks.upgrade(this.id));
  }

  /** Gives the lock back; a promise only when a cross-process lock is handed back too. */
  release(): Promise<void> | undefined {
    // Everyone who asked for the lock while this request held it was in line behind the removal.
    if (this.removedSession) {
      this.removedSession = false;
      this.locks.table.removalDone(this.id);
    }
    const releasers = this.releasers;
    const leaving = this.leaving;
    this.releasers = undefined;
    this.heldMode = undefined;
    this.leaving = undefined;
    if (releasers === undefined) return undefined;
    const { local, remote } = releasers;
    if (remote === undefined) {
      local(leaving);
      return undefined;
    }
    // Remote first, so the next local waiter finds it free. A lock that
    // cannot be handed back expires by itself in the store; the request's
    // commit has already succeeded and must not fail now.
    return remote().then(() => local(leaving), () => {
      trace('remote-unlock-failed', this.id);
      local(leaving);
    });
  }

  private hold(mode: LockMode, releasers: Releasers): this {
    this.releasers = releasers;
    this.heldMode = mode;
    return this;
  }
}
