import type { AtomicStore, Change, SessionData } from './store';
import { isSessionRecord, replayChanges, toRecord } from './store';

export interface MemoryStoreOptions {
  /** How often expired sessions are swept out, in ms. Default 10 minutes. */
  cleanupInterval?: number;
}

interface Entry {
  /** The record as JSON: a deep copy that nobody outside can reach, and compact. */
  json: string;
  expiresAt: number;
}

/** The longest delay a Node timer can wait (larger ones fire after 1 ms). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Entries are spread over this many Maps, and a sweep rebuilds one Map at a
 * time between two turns of the event loop. Deleting entries one by one from
 * a single big Map is no good: V8 rehashes a Map in one step when it shrinks,
 * which on a million entries blocks for tens of ms.
 */
const SHARDS = 256;

function shardOf(id: string): number {
  let hash = 0;
  for (let i = Math.max(0, id.length - 4); i < id.length; i++) hash = (hash * 31 + id.charCodeAt(i)) | 0;
  return hash & (SHARDS - 1);
}

/**
 * The embedded default store, for one process. Records are kept as JSON, so
 * `get` hands out and `set` takes deep copies: no caller can change stored
 * data behind the store's back. Expired records are invisible at once and
 * swept out every `cleanupInterval`, a slice at a time.
 */
export class MemoryStore implements AtomicStore {
  private shards: Map<string, Entry>[] = Array.from({ length: SHARDS }, () => new Map());
  private readonly timer: NodeJS.Timeout;
  private sweeping = false;

  constructor(options: MemoryStoreOptions = {}) {
    const interval = options.cleanupInterval ?? 10 * 60 * 1000;
    if (typeof interval !== 'number' || !Number.isFinite(interval) || interval <= 0 || interval > MAX_TIMER_MS) {
      throw new TypeError(`koa-locked-session: MemoryStore option cleanupInterval must be a number of milliseconds from 1 to ${MAX_TIMER_MS}`);
    }
    this.timer = setInterval(() => void this.sweep(), interval);
    this.timer.unref(); // the sweep never keeps the process alive
  }

  /** Live sessions held; expired ones not yet swept are not counted. */
  get size(): number {
    const now = Date.now();
    let live = 0;
    for (const shard of this.shards) {
      for (const entry of shard.values()) if (entry.expiresAt > now) live++;
    }
    return live;
  }

  async get(id: string): Promise<SessionData | undefined> {
    const entry = this.live(id);
    return entry === undefined ? undefined : (JSON.parse(entry.json) as SessionData);
  }

  async set(id: string, data: SessionData, maxAgeMs: number): Promise<void> {
    this.shards[shardOf(id)]!.set(id, { json: JSON.stringify(data), expiresAt: Date.now() + maxAgeMs });
  }

  async destroy(id: string): Promise<void> {
    this.shards[shardOf(id)]!.delete(id);
  }

  /** Pushes the expiry out; a record the middleware wrote also notes the push time. */
  async touch(id: string, maxAgeMs: number): Promise<void> {
    const entry = this.live(id);
    if (entry === undefined) return;
    const now = Date.now();
    const stored = JSON.parse(entry.json) as SessionData;
    if (isSessionRecord(stored)) {
      stored.touchedAt = now;
      entry.json = JSON.stringify(stored);
    }
    entry.expiresAt = now + maxAgeMs;
  }

  async applyChanges(id: string, changes: readonly Change[], touchedAt: number, maxAgeMs: number): Promise<boolean> {
    const entry = this.live(id);
    if (entry === undefined) return false;
    const record = toRecord(JSON.parse(entry.json) as SessionData, touchedAt);
    replayChanges(record.data, changes);
    record.touchedAt = touchedAt;
    entry.json = JSON.stringify(record);
    entry.expiresAt = Date.now() + maxAgeMs;
    return true;
  }

  /** Stops the sweep timer. The store still works; nothing is swept any more. */
  close(): void {
    clearInterval(this.timer);
  }

  /**
   * Removes every expired record, one shard per turn of the event loop, so
   * that even a million sessions never block it for more than a few ms.
   * Resolves when every shard has been swept.
   */
  async sweep(): Promise<void> {
    if (this.sweeping) return;
    this.sweeping = true;
    try {
      const now = Date.now();
      for (let i = 0; i < SHARDS; i++) {
        const kept = new Map<string, Entry>();
        this.shards[i]!.forEach((entry, id) => {
          if (entry.expiresAt > now) kept.set(id, entry);
        });
        this.shards[i] = kept;
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    } finally {
      this.sweeping = false;
    }
  }

  private live(id: string): Entry | undefined {
    const shard = this.shards[shardOf(id)]!;
    const entry = shard.get(id);
    if (entry === undefined) return undefined;
    if (entry.expiresAt <= Date.now()) {
      shard.delete(id);
      return undefined;
    }
    return entry;
  }
}

/** A MemoryStore; the same as `new MemoryStore(options)`. */
export function createMemoryStore(options?: MemoryStoreOptions): MemoryStore {
  return new MemoryStore(options);
}
