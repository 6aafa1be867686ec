import type { AtomicStore, Change, SessionData } from './store';
import { replayChanges, toRecord } from './store';

export interface MemoryStoreOptions {
  /** How often expired sessions are swept out, in ms. Default 10 minutes. */
  cleanupInterval?: number;
}

interface Entry {
  /** The record as JSON: a deep copy that nobody outside can reach, and compact. */
  json: string;
  expiresAt: number;
}

/** How long one slice of a sweep may keep the event loop, in ms. */
const SWEEP_SLICE_MS = 2;

/**
 * The embedded default store, for one process. Records are kept as JSON, so
 * `get` hands out and `set` takes deep copies: no caller can change stored
 * data behind the store's back. Expired records are invisible at once and
 * swept out every `cleanupInterval`, a slice at a time.
 */
export class MemoryStore implements AtomicStore {
  private readonly entries = new Map<string, Entry>();
  private readonly timer: NodeJS.Timeout;
  private sweeping = false;

  constructor(options: MemoryStoreOptions = {}) {
    const interval = options.cleanupInterval ?? 10 * 60 * 1000;
    if (typeof interval !== 'number' || !Number.isFinite(interval) || interval <= 0) {
      throw new TypeError('koa-locked-session: MemoryStore option cleanupInterval must be a positive number of milliseconds');
    }
    this.timer = setInterval(() => void this.sweep(), interval);
    this.timer.unref(); // the sweep never keeps the process alive
  }

  /** Live sessions held; expired ones not yet swept are not counted. */
  get size(): number {
    const now = Date.now();
    let live = 0;
    for (const entry of this.entries.values()) if (entry.expiresAt > now) live++;
    return live;
  }

  async get(id: string): Promise<SessionData | undefined> {
    const entry = this.live(id);
    return entry === undefined ? undefined : (JSON.parse(entry.json) as SessionData);
  }

  async set(id: string, data: SessionData, maxAgeMs: number): Promise<void> {
    this.entries.set(id, { json: JSON.stringify(data), expiresAt: Date.now() + maxAgeMs });
  }

  async destroy(id: string): Promise<void> {
    this.entries.delete(id);
  }

  async touch(id: string, maxAgeMs: number): Promise<void> {
    await this.applyChanges(id, [], Date.now(), maxAgeMs);
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
   * Removes every expired record, yielding to the event loop every
   * SWEEP_SLICE_MS so that even a million entries never block it for long.
   * Resolves when the whole map has been walked.
   */
  async sweep(): Promise<void> {
    if (this.sweeping) return;
    this.sweeping = true;
    try {
      const now = Date.now();
      const walk = this.entries.entries();
      for (;;) {
        const sliceEnd = performance.now() + SWEEP_SLICE_MS;
        let walked = 0;
        for (let step = walk.next(); ; step = walk.next()) {
          if (step.done) return;
          const [id, entry] = step.value;
          if (entry.expiresAt <= now) this.entries.delete(id);
          // Reading the clock is not free: check it every 256 entries.
          if ((++walked & 255) === 0 && performance.now() >= sliceEnd) break;
        }
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    } finally {
      this.sweeping = false;
    }
  }

  private live(id: string): Entry | undefined {
    const entry = this.entries.get(id);
    if (entry === undefined) return undefined;
    if (entry.expiresAt <= Date.now()) {
      this.entries.delete(id);
      return undefined;
    }
    return entry;
  }
}

/** A MemoryStore; the same as `new MemoryStore(options)`. */
export function createMemoryStore(options?: MemoryStoreOptions): MemoryStore {
  return new MemoryStore(options);
}
