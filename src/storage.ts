import type { Change, DirectStore, DistributedLock, SessionData, Store, StoredSession } from './stores/store';
import { isAtomicStore, isSessionRecord, replayChanges, toRecord, writeLockOf } from './stores/store';
import { SessionStoreError } from './errors';
import type { Expiry } from './expiry';
import type { Eventually } from './lock';
import { sha256Hex } from './ids';
import { directMemoryStore } from './stores/memory';
import type { RedisStore } from './stores/redis';
import { directRedisStore, ownRedisStore } from './stores/redis';
import { cloneChecked, dataOfValues, isObjectPrototype } from './values';
import { trace } from './events';

/**
 * The middleware's view of the user's store: IDs hashed when `hashIds` is
 * on, expired records filtered out, every failure turned into a
 * SessionStoreError (a failed load must never look like "no session"), and
 * one `apply` whether or not the store can apply a change log itself.
 */
export class Storage {
  /** True when the store applies change logs atomically on its side. */
  readonly atomic: boolean;
  /** True when the store remembers when sessions were removed (see removedSince). */
  readonly remembersRemovals: boolean;
  readonly writeLock: DistributedLock | undefined;
  private readonly key: (id: string) => string;
  /** A MemoryStore or RedisStore, reached directly (see DirectStore); undefined for any other store. */
  private readonly direct: DirectStore | undefined;
  /** A RedisStore whose commits can read the session back for the next request in line (see applyAndRead). */
  private readonly readingBack: RedisStore | undefined;
  /**
   * A RedisStore whose destroy is its own: it regenerates with a check
   * against other processes (see move), and remembers when sessions were
   * removed (see removedSince).
   */
  private readonly redis: RedisStore | undefined;

  constructor(
    private readonly store: Store,
    private readonly expiry: Expiry,
    hashIds: boolean,
  ) {
    this.atomic = isAtomicStore(store);
    this.key = hashIds ? sha256Hex : (id) => id;
    this.direct = directMemoryStore(store) ?? directRedisStore(store);
    const lock = writeLockOf(store);
    this.writeLock = lock === undefined ? undefined : { acquire: (id, timeoutMs) => lock.acquire(this.key(id), timeoutMs) };
    // Under a cross-process write lock another process may write between two of ours: no hand-over then.
    this.readingBack = this.writeLock === undefined ? ownRedisStore(store, 'applyChanges') : undefined;
    this.redis = ownRedisStore(store, 'destroy');
    this.remembersRemovals = this.redis !== undefined;
  }

  /** True when applyAndRead may be used. */
  get readsBack(): boolean {
    return this.readingBack !== undefined;
  }

  /**
   * The live session stored for `id`, or undefined: at once from a
   * MemoryStore, else through a promise. `inherited`, what the writer
   * before this request handed over (see HeldLock.inherited), stands in
   * for reading the store.
   */
  load(id: string, now: number, inherited?: StoredSession): Eventually<StoredSession | undefined> {
    if (inherited !== undefined) return this.live(inherited, now); // one request's own: see LockTable.takeHandOver
    const key = this.key(id);
    const direct = this.direct;
    const read = this.attempt('load', () => (direct === undefined ? this.get(key, now) : direct.readSession(key, now)));
    return read instanceof Promise ? read.then((loaded) => this.live(loaded, now)) : this.live(read, now);
  }

  private live(loaded: StoredSession | undefined, now: number): StoredSession | undefined {
    return loaded !== undefined && this.expiry.isLive(loaded, now) ? loaded : undefined;
  }

  /** Stores `session` under `id`, replacing what was there: at once into a MemoryStore, else through a promise. */
  save(id: string, session: StoredSession, ttl: number): Eventually<void> {
    const key = this.key(id);
    const direct = this.direct;
    return this.attempt('save', () => {
      if (direct !== undefined) return direct.writeSession(key, session, ttl);
      const record = { data: dataOfValues(session.values), createdAt: session.createdAt, touchedAt: session.touchedAt };
      return this.store.set(key, record, ttl);
    });
  }

  /**
   * `removalToken`: the request goes on running with the session's lock,
   * and says when it is done, with this token (see removalDone).
   */
  async remove(id: string, removalToken?: string): Promise<void> {
    const redis = this.redis;
    const key = this.key(id);
    await this.attempt('destroy', () =>
      (removalToken !== undefined && redis !== undefined ? redis.removeUntilDone(key, removalToken) : this.store.destroy(key)));
  }

  /**
   * Tells a RedisStore that the request which removed `id` is letting go of
   * it now (see RedisStore.removalDone). Not awaited: sent ahead of the
   * lock's release on the same connection, it lands before any request
   * that waited for that lock reads it. A failure only costs that.
   */
  removalDone(id: string, removalToken: string | undefined): void {
    this.redis?.removalDone(this.key(id), removalToken).catch(() => trace('removal-mark-failed', id));
  }

  /**
   * True when a RedisStore remembers removing `id` after `since` (ms since
   * the epoch), in any process (see RedisStore.removedSince); false for
   * any other store.
   */
  async removedSince(id: string, since: number): Promise<boolean> {
    const redis = this.redis;
    if (redis === undefined) return false;
    return this.attempt('load', () => redis.removedSince(this.key(id), since));
  }

  /**
   * Replays `changes` onto the freshest stored data of `id` and records the
   * push time `touchedAt` (usually now): false, writing nothing, when the
   * session is gone. At once from a MemoryStore, else through a promise.
   * Without an atomic store this is get-merge-set, so the caller must hold
   * the exclusive lock.
   */
  apply(id: string, changes: readonly Change[], touchedAt: number, ttl: number): Eventually<boolean> {
    const key = this.key(id);
    const direct = this.direct;
    const store = this.store;
    if (direct !== undefined) return this.attempt('commit', () => direct.applySession(key, changes, touchedAt, ttl));
    if (isAtomicStore(store)) return this.attempt('commit', () => store.applyChanges(key, changes, touchedAt, ttl));
    return this.mergeAndSet(id, changes, touchedAt, ttl);
  }

  /**
   * apply(), for a RedisStore that reads the session back in the same step
   * (readsBack): the session as stored right after, or undefined when it is
   * gone, having written nothing.
   */
  async applyAndRead(id: string, changes: readonly Change[], now: number, ttl: number): Promise<StoredSession | undefined> {
    const store = this.readingBack as RedisStore;
    const key = this.key(id);
    return this.attempt('commit', () => store.applyAndRead(key, changes, now, ttl));
  }

  /**
   * Regenerate: the freshest stored data of `oldId` with `changes`
   * replayed, saved under `newId` as created and touched at `now`, before
   * `oldId` is removed (a failure in between loses nothing). False,
   * changing nothing, when `oldId` is gone. The caller holds the exclusive
   * lock, which covers this process; a RedisStore also checks that no
   * other process wrote or removed `oldId` meanwhile (see
   * RedisStore.moveSession).
   */
  async move(oldId: string, newId: string, changes: readonly Change[], now: number, ttl: number): Promise<boolean> {
    const redis = this.redis;
    if (redis !== undefined) {
      const live = (session: StoredSession) => this.live(session, now) !== undefined;
      return this.attempt('regenerate', () => redis.moveSession(this.key(oldId), this.key(newId), changes, now, ttl, live));
    }
    const fresh = await this.load(oldId, now);
    if (fresh === undefined) return false;
    replayChanges(changes, fresh.values);
    await this.save(newId, { values: fresh.values, createdAt: now, touchedAt: now }, ttl);
    await this.remove(oldId);
    return true;
  }

  private async mergeAndSet(id: string, changes: readonly Change[], touchedAt: number, ttl: number): Promise<boolean> {
    const fresh = await this.load(id, touchedAt); // live at its new push time (at or before now), as at now
    if (fresh === undefined) return false;
    replayChanges(changes, fresh.values);
    await this.save(id, { ...fresh, touchedAt }, ttl);
    return true;
  }

  /** What a plain store holds under `key`, read as a session. */
  private async get(key: string, now: number): Promise<StoredSession | undefined> {
    const answer: unknown = await this.store.get(key);
    // Nothing, as koa-session reads a store's answer: undefined, null (koa-redis), or any other falsy value.
    if (!answer) return undefined;
    // Anything but a plain object would be read as a session of the cookie's ID (the client's choice), or
    // with no keys of its own (a Map, a Date) as none: a user logged out, a new session stored over theirs.
    const unreadable = notPlainObject(answer);
    if (unreadable !== undefined) throw new TypeError(`the store's get() answered ${unreadable}, not a record or nothing`);
    const stored = answer as SessionData;
    // An empty object too: what a store built on HGETALL answers for a missing key. Read as a session,
    // it would adopt the cookie's ID; the library never writes one, and one from elsewhere holds nothing.
    if (Object.keys(stored).length === 0) return undefined;
    // One koa-session left (see README, "Stores written for koa-session") and held past its end, which
    // koa-session would have refused: a cookie kept since (a stolen one) must not bring it back.
    if (!isSessionRecord(stored) && typeof stored._expire === 'number' && stored._expire <= now) return undefined;
    // A plain store may have handed out its own object, which must stay untouched.
    const { data, createdAt, touchedAt } = toRecord(this.atomic ? stored : cloneChecked(stored), now);
    const values = valuesOf(data);
    return isSessionRecord(stored) ? { values, createdAt, touchedAt } : { values, createdAt, touchedAt, foreign: true };
  }

  /**
   * `run()`'s answer, its failure (thrown now or rejected later) turned into
   * a SessionStoreError: a failed load must never look like "no session".
   * An answer given at once (MemoryStore) is handed back at once, without a
   * promise; a store's own thenable (a Bluebird promise, say) becomes a
   * native one.
   */
  private attempt<T>(operation: string, run: () => T | PromiseLike<T>): Eventually<T> {
    let answer: T | PromiseLike<T>;
    try {
      answer = run();
    } catch (error) {
      throw new SessionStoreError(operation, error);
    }
    if (!isThenable(answer)) return answer;
    return Promise.resolve(answer).catch((error: unknown) => {
      throw new SessionStoreError(operation, error);
    });
  }
}

/** What `answer` is, when it is not a plain object; undefined when it is. */
function notPlainObject(answer: unknown): string | undefined {
  if (typeof answer !== 'object' || answer === null) return `a ${typeof answer}`;
  if (Array.isArray(answer)) return 'an array';
  const prototype: unknown = Object.getPrototypeOf(answer);
  // None at all is plain too: node-redis's hGetAll answers such objects.
  if (prototype === null || isObjectPrototype(prototype)) return undefined;
  const name: unknown = (prototype as { constructor?: { name?: unknown } }).constructor?.name;
  return typeof name === 'string' && name !== '' ? `an instance of ${name}` : 'an instance of a class';
}

function isThenable<T>(value: T | PromiseLike<T>): value is PromiseLike<T> {
  return typeof (value as Partial<PromiseLike<T>> | null | undefined)?.then === 'function';
}

function valuesOf(data: SessionData): Map<string, unknown> {
  const values = new Map<string, unknown>();
  for (const key of Object.keys(data)) values.set(key, data[key]);
  return values;
}
