import type { Change, DistributedLock, SessionData, Store, StoredSession } from './stores/store';
import { isAtomicStore, replayChanges, toRecord, writeLockOf } from './stores/store';
import { SessionStoreError } from './errors';
import type { Expiry } from './expiry';
import { sha256Hex } from './ids';
import type { MemoryStore } from './stores/memory';
import { directMemoryStore } from './stores/memory';
import type { RedisStore } from './stores/redis';
import { directRedisStore } from './stores/redis';
import { cloneChecked, dataOfValues } from './values';

/**
 * The middleware's view of the user's store: IDs hashed when `hashIds` is
 * on, expired records filtered out, every failure turned into a
 * SessionStoreError (a failed load must never look like "no session"), and
 * one `apply` whether or not the store can apply a change log itself.
 */
export class Storage {
  /** True when the store applies change logs atomically on its side. */
  readonly atomic: boolean;
  readonly writeLock: DistributedLock | undefined;
  private readonly key: (id: string) => string;
  /** The default MemoryStore, reached directly (see directMemoryStore); undefined for any other store. */
  private readonly memory: MemoryStore | undefined;
  /** A RedisStore read directly (see directRedisStore); undefined for any other store. */
  private readonly redis: RedisStore | undefined;

  constructor(
    private readonly store: Store,
    private readonly expiry: Expiry,
    hashIds: boolean,
  ) {
    this.atomic = isAtomicStore(store);
    this.key = hashIds ? sha256Hex : (id) => id;
    this.memory = directMemoryStore(store);
    this.redis = directRedisStore(store);
    const lock = writeLockOf(store);
    this.writeLock = lock === undefined ? undefined : { acquire: (id, timeoutMs) => lock.acquire(this.key(id), timeoutMs) };
  }

  /** The live session stored for `id`, or undefined. */
  async load(id: string, now: number): Promise<StoredSession | undefined> {
    const loaded = this.memory === undefined ? await this.get(this.key(id), now) : this.memory.readSession(this.key(id), now);
    return loaded !== undefined && this.expiry.isLive(loaded, now) ? loaded : undefined;
  }

  /** Stores `session` under `id`, replacing what was there. */
  async save(id: string, session: StoredSession, ttl: number): Promise<void> {
    if (this.memory !== undefined) return this.memory.writeSession(this.key(id), session, ttl);
    const record = { data: dataOfValues(session.values), createdAt: session.createdAt, touchedAt: session.touchedAt };
    await this.call('save', () => this.store.set(this.key(id), record, ttl));
  }

  async remove(id: string): Promise<void> {
    await this.call('destroy', () => this.store.destroy(this.key(id)));
  }

  /**
   * Replays `changes` onto the freshest stored data of `id` and records the
   * push time. Resolves false, writing nothing, when the session is gone.
   * Without an atomic store this is get-merge-set, so the caller must hold
   * the exclusive lock.
   */
  async apply(id: string, changes: readonly Change[], now: number, ttl: number): Promise<boolean> {
    const store = this.store;
    if (this.memory !== undefined) return this.memory.applyChangesNow(this.key(id), changes, now, ttl);
    if (isAtomicStore(store)) {
      return this.call('commit', () => store.applyChanges(this.key(id), changes, now, ttl));
    }
    const fresh = await this.load(id, now);
    if (fresh === undefined) return false;
    replayChanges(changes, fresh.values);
    await this.save(id, { ...fresh, touchedAt: now }, ttl);
    return true;
  }

  /** What the store itself holds under `key`, read as a session. */
  private async get(key: string, now: number): Promise<StoredSession | undefined> {
    let stored: SessionData | undefined | null;
    try {
      // The hot path: awaited here, not through call().
      if (this.redis !== undefined) return await this.redis.readSession(key, now);
      stored = await this.store.get(key);
    } catch (error) {
      throw new SessionStoreError('load', error);
    }
    if (stored === undefined || stored === null) return undefined;
    // A plain store may have handed out its own object, which must stay untouched.
    const { data, createdAt, touchedAt } = toRecord(this.atomic ? stored : cloneChecked(stored), now);
    return { values: valuesOf(data), createdAt, touchedAt };
  }

  private async call<T>(operation: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (error) {
      throw new SessionStoreError(operation, error);
    }
  }
}

function valuesOf(data: SessionData): Map<string, unknown> {
  const values = new Map<string, unknown>();
  for (const key of Object.keys(data)) values.set(key, data[key]);
  return values;
}
