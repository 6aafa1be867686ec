import type { Context } from 'koa';
import { reportIfTimedOut, report, trace } from './events';
import type { HeldLock, SessionLocks } from './hold';
import type { Eventually, LockMode } from './lock';
import type { ResolvedOptions } from './options';
import type { SessionState } from './session';
import { newState, stateAfterRemoval } from './session';
import type { Storage } from './storage';
import type { StoredSession } from './stores/store';

/** A request's session, opened: its state, and the lock held on the stored one (none for a new session). */
export interface Opened {
  readonly state: SessionState;
  readonly lock: HeldLock | undefined;
}

/**
 * How a request gets its session: lock, then load. At once when both
 * answer at once (a free lock, a MemoryStore), as most requests find them:
 * no promise round trip then. A session not found goes through a promise
 * (see notFound).
 */
export class SessionOpener {
  constructor(
    private readonly storage: Storage,
    private readonly locks: SessionLocks,
    /** Called as methods of the options, as the app's lockMode has always been (its `this`). */
    private readonly options: Pick<ResolvedOptions, 'genid' | 'lockMode'>,
  ) {}

  /** A new session, under a new ID: nothing stored, nothing to lock. */
  fresh(): Opened {
    return { state: newState(this.options.genid()), lock: undefined };
  }

  /** The stored session `id`, locked; a fresh one when it is gone. */
  open(ctx: Context, id: string): Eventually<Opened> {
    // When this request asked for the session: see notFound. Only a store that remembers removals needs it.
    const askedAt = this.storage.remembersRemovals ? Date.now() : 0;
    // Lock before load: a request must not read what a writer ahead of it is about to change.
    const granted = this.locks.acquire(id, this.lockModeOf(ctx));
    return granted instanceof Promise ? this.loadWhenLocked(ctx, id, granted, askedAt) : this.load(ctx, id, granted, askedAt);
  }

  private async loadWhenLocked(ctx: Context, id: string, granted: Promise<HeldLock>, askedAt: number): Promise<Opened> {
    let lock: HeldLock;
    try {
      lock = await granted;
    } catch (error) {
      throw reportIfTimedOut(ctx, id, error);
    }
    return this.load(ctx, id, lock, askedAt);
  }

  private load(ctx: Context, id: string, lock: HeldLock, askedAt: number): Eventually<Opened> {
    trace('locked', id, lock.mode);
    let read: Eventually<StoredSession | undefined>;
    try {
      read = this.storage.load(id, Date.now(), lock.inherited);
    } catch (error) {
      return releaseAndThrow(lock, error);
    }
    if (!(read instanceof Promise)) return this.opened(ctx, id, lock, read, askedAt); // a MemoryStore answers at once
    return read.then(
      (session) => this.opened(ctx, id, lock, session, askedAt),
      (error: unknown) => releaseAndThrow(lock, error),
    );
  }

  private opened(ctx: Context, id: string, lock: HeldLock, session: StoredSession | undefined, askedAt: number): Eventually<Opened> {
    if (session === undefined) return this.notFound(ctx, id, lock, askedAt);
    trace('loaded', id);
    return { state: newState(id, session), lock };
  }

  /**
   * Gone. Removed by a request ahead of this one (a logout, a login) after
   * this one asked for it (at `askedAt`): starting a session here would send
   * a cookie that replaces the one that request sent, so this one commits
   * nothing. Otherwise (expired, unknown, removed before this request came):
   * start afresh under a new ID, never the client's.
   */
  private async notFound(ctx: Context, id: string, lock: HeldLock, askedAt: number): Promise<Opened> {
    let removedAhead: boolean;
    try {
      // In this process the lock saw the removal; a RedisStore remembers when one was made, in any process.
      removedAhead = lock.removedAfterAsking || (await this.storage.removedSince(id, askedAt));
    } catch (error) {
      return releaseAndThrow(lock, error);
    }
    await lock.release();
    if (removedAhead) return { state: stateAfterRemoval(this.options.genid(), id), lock: undefined };
    report(ctx, 'session:missed', id);
    return this.fresh();
  }

  private lockModeOf(ctx: Context): LockMode {
    const mode = this.options.lockMode(ctx);
    if (mode !== 'read' && mode !== 'write') throw new TypeError("koa-locked-session: lockMode must return 'read' or 'write'");
    return mode;
  }
}

/**
 * A failed request answers at once, without waiting for a cross-process
 * lock to be handed back: with the store not answering, that would take
 * as long again (a lock left behind expires by itself, after lockTtl).
 */
async function releaseAndThrow(lock: HeldLock, error: unknown): Promise<never> {
  void lock.release();
  throw error;
}
