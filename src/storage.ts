import type { Change, DistributedLock, SessionData, SessionRecord, Store } from './stores/store';
import { isAtomicStore, replayChanges, toRecord, writeLockOf } from './stores/store';
import { SessionStoreError } from './errors';
import type { Expiry } from './expiry';
import { sha256Hex } from './ids';
import { cloneChecked } from './values';

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

  constructor(
    private readonly store: Store,
    private readonly expiry: Expiry,
    hashIds: boolean,
  ) {
    this.atomic = isAtomicStore(store);
    this.key = hashIds ? sha256Hex : (id) => id;
    const lock = writeLockOf(store);
    this.writeLock = lock === undefined ? undefined : { acquire: (id, timeoutMs) => lock.acquire(this.key(id), timeoutMs) };
  }

  /** The live record stored for `id`, or undefined. */
  async load(id: string, now: number): Promise<SessionRecord | undefined> {
    let stored: SessionData | undefined | null;
    try {
      stored = await this.store.get(this.key(id)); // the hot path: awaited here, not through call()
    } catch (error) {
      throw new SessionStoreError('load', error);
    }
    if (stored === undefined || stored === null) return undefined;
    // Changes are replayed onto what we load; a plain store may have handed
    // out its own object, which must stay untouched until set() succeeds.
    const record = toRecord(this.atomic ? stored : cloneChecked(stored), now);
    return this.expiry.isLive(record, now) ? record : undefined;
  }

  async save(id: string, record: SessionRecord, ttl: number): Promise<void> {
    await this.call('save', () => this.store.set(this.key(id), { ...record }, ttl));
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
    if (isAtomicStore(store)) {
      return this.call('commit', () => store.applyChanges(this.key(id), changes, now, ttl));
    }
    const fresh = await this.load(id, now);
    if (fresh === undefined) return false;
    replayChanges(fresh.data, changes);
    await this.save(id, { ...fresh, touchedAt: now }, ttl);
    return true;
  }

  private async call<T>(operation: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (error) {
      throw new SessionStoreError(operation, error);
    }
  }
}
