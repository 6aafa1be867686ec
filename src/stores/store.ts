/**
 * The Store contract. Its method names and argument orders are koa-session's
 * external stores' (get / set / destroy), so a store written for koa-session
 * plugs in unchanged.
 */

/** What a store keeps under one ID: a JSON-serialisable record. */
export type SessionData = Record<string, unknown>;

export interface Store {
  /**
   * The record stored for `id`, or `undefined` when there is none or it has
   * expired. Rejects only when the store itself failed: "not found" is never
   * an error, and an error is never "not found". Any falsy answer (null, as
   * koa-redis gives), or an empty object, reads as none; one that is not an
   * object (a string, an array) fails the request with 503.
   */
  get(id: string): Promise<SessionData | undefined>;

  /** Stores `data` under `id` for `maxAgeMs`, replacing what was there. */
  set(id: string, data: SessionData, maxAgeMs: number): Promise<void>;

  /** Removes `id`; removing a missing ID is not an error. */
  destroy(id: string): Promise<void>;

  /**
   * Optional: pushes the expiry of `id` out to `maxAgeMs` from now without
   * rewriting its data. Never creates a session that is not stored.
   */
  touch?(id: string, maxAgeMs: number): Promise<void>;
}

/** One entry of a request's change log, replayed in order at commit. */
export type Change =
  | { readonly op: 'set'; readonly key: string; readonly value: unknown }
  | { readonly op: 'delete'; readonly key: string }
  | { readonly op: 'clear' };

/**
 * A store that applies a request's change log on its own side in one atomic
 * step (MemoryStore, RedisStore). The middleware prefers it to
 * get-merge-set, so concurrent commits to different keys never race, even
 * across processes. Its `get()` must hand out a copy the caller may change.
 */
export interface AtomicStore extends Store {
  /**
   * Replays `changes` on the data stored under `id`, records `touchedAt` as
   * the last expiry push and sets the expiry to `maxAgeMs` from now, all at
   * once; when the stored push time is later than `touchedAt` (another
   * process pushed meanwhile), only the changes are applied: the push time
   * and expiry never move back. Resolves `false`, changing nothing, when
   * `id` is not stored: a commit never brings back a session that was
   * destroyed meanwhile.
   */
  applyChanges(id: string, changes: readonly Change[], touchedAt: number, maxAgeMs: number): Promise<boolean>;
}

export function isAtomicStore(store: Store): store is AtomicStore {
  return typeof (store as Partial<AtomicStore>).applyChanges === 'function';
}

/**
 * The record the middleware hands to `set()`. What the library keeps for
 * itself sits beside the user's data, never among its keys, so no key is
 * reserved.
 */
export interface SessionRecord {
  /** The session's values, key by key. */
  data: SessionData;
  /** When the session's ID was created (ms since epoch): `absoluteTimeout` counts from here. */
  createdAt: number;
  /** When the expiry was last pushed out (ms since epoch): the touch throttle counts from here. */
  touchedAt: number;
}

function isPlainObject(value: unknown): value is SessionData {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Whether a stored record has the shape the middleware writes. */
export function isSessionRecord(stored: SessionData): stored is SessionData & SessionRecord {
  return isPlainObject(stored.data) && Number.isFinite(stored.createdAt) && Number.isFinite(stored.touchedAt);
}

/**
 * Reads what a store returned as a SessionRecord. A record in another shape
 * (written by another library, or by hand) is taken as plain data created now.
 */
export function toRecord(stored: SessionData, now: number): SessionRecord {
  if (isSessionRecord(stored)) return { data: stored.data, createdAt: stored.createdAt, touchedAt: stored.touchedAt };
  return { data: stored, createdAt: now, touchedAt: now };
}

/**
 * @internal Throws unless `maxAgeMs` is a lifetime `store` can keep: a
 * positive number of milliseconds, at most Number.MAX_SAFE_INTEGER (beyond
 * that Redis refuses the expiry, after the script has already written the
 * data, which would then never expire).
 */
export function assertLifetime(store: string, maxAgeMs: unknown): asserts maxAgeMs is number {
  if (typeof maxAgeMs !== 'number' || !(maxAgeMs > 0) || !(maxAgeMs <= Number.MAX_SAFE_INTEGER)) {
    throw new TypeError(`koa-locked-session: ${store} needs a positive, finite maxAgeMs, at most Number.MAX_SAFE_INTEGER`);
  }
}

/** What a change log can be replayed on: a Map of a session's values is one. */
export interface ChangeTarget {
  set(key: string, value: unknown): unknown;
  delete(key: string): unknown;
  clear(): void;
}

/** Replays a change log on `target`, in order. */
export function replayChanges(changes: readonly Change[], target: ChangeTarget): void {
  for (const change of changes) {
    if (change.op === 'set') target.set(change.key, change.value);
    else if (change.op === 'delete') target.delete(change.key);
    else target.clear();
  }
}

/**
 * A session as the middleware works on it: its values by key (a value may
 * still be JSON text, see JsonText) and its times.
 */
export interface StoredSession {
  readonly values: Map<string, unknown>;
  readonly createdAt: number;
  readonly touchedAt: number;
  /**
   * Read from a record the library did not write (see toRecord), whose
   * times are taken as now: no push time is known, so an expiry push is
   * due at once, which writes it as the library's own record.
   */
  readonly foreign?: true;
}

/**
 * @internal What MemoryStore and RedisStore offer the middleware besides
 * the Store API: sessions whose values are JSON text (see JsonText), so a
 * load decodes nothing a handler does not read and a save re-encodes
 * nothing a handler did not change. MemoryStore answers at once, without a
 * promise; RedisStore with one.
 */
export interface DirectStore {
  /** The session stored under `id`, or undefined. */
  readSession(id: string, now: number): StoredSession | undefined | Promise<StoredSession | undefined>;
  /** Stores `session` under `id` for `maxAgeMs`, replacing what was there. */
  writeSession(id: string, session: StoredSession, maxAgeMs: number): void | Promise<void>;
  /** AtomicStore.applyChanges. */
  applySession(id: string, changes: readonly Change[], touchedAt: number, maxAgeMs: number): boolean | Promise<boolean>;
}

/**
 * A write lock shared by every process using the same store
 * (`RedisStore({ lock: true })`). Taken after the in-process lock, so one
 * process never has more than one waiter per session at the store.
 */
export interface DistributedLock {
  /**
   * Takes the write lock on `id`; resolves with the function that gives it
   * back. Rejects with SessionLockTimeoutError after `timeoutMs`.
   */
  acquire(id: string, timeoutMs: number): Promise<() => Promise<void>>;
}

/** A store that offers a cross-process write lock. */
export interface LockingStore extends Store {
  readonly writeLock: DistributedLock | undefined;
}

export function writeLockOf(store: Store): DistributedLock | undefined {
  return (store as Partial<LockingStore>).writeLock;
}
