import type { AtomicStore, Change, ChangeTarget, SessionData, Store, StoredSession } from './store';
import { assertLifetime, isSessionRecord, replayChanges, toRecord } from './store';
import { JsonText, assignOwn, jsonOf, parseJson } from '../values';
import { MAX_TIMER_MS } from '../timers';

export interface MemoryStoreOptions {
  /** How often expired sessions are swept out, in ms. Default 10 minutes. */
  cleanupInterval?: number;
}

/**
 * A session as the middleware writes it: the meta beside the data, and each
 * value as its own JSON string, so a commit re-encodes only the values it
 * changed and a read decodes nothing it does not hand out.
 */
interface RecordEntry {
  expiresAt: number;
  createdAt: number;
  touchedAt: number;
  /** Keys and their values as JSON, in turn: [key, json, key, json, …]. */
  fields: string[];
}

/** Anything else a caller stored, kept whole as JSON and handed back as it was. */
interface OtherEntry {
  expiresAt: number;
  json: string;
}

type Entry = RecordEntry | OtherEntry;

function isRecordEntry(entry: Entry): entry is RecordEntry {
  return (entry as Partial<RecordEntry>).fields !== undefined;
}

/** JSON's view of `data`, one value per key (a value JSON leaves out, such as undefined, is left out). */
function fieldsOf(data: SessionData): string[] {
  const keys = Object.keys(data);
  const fields = fieldsArray(keys.length);
  let at = 0;
  for (const key of keys) {
    const json = JSON.stringify(data[key]);
    if (json === undefined) continue;
    fields[at++] = key;
    fields[at++] = json;
  }
  fields.length = at;
  return fields;
}

/**
 * An array for the fields of `keys` keys, of just that size: pushed onto
 * an empty array, V8 would reserve 16 slots or more, which every stored
 * session would keep.
 */
function fieldsArray(keys: number): string[] {
  return new Array<string>(2 * keys);
}

/** The fields of `values`, each value's JSON given by `json`. */
function fieldsOfMap<T>(values: ReadonlyMap<string, T>, json: (value: T) => string): string[] {
  const fields = fieldsArray(values.size);
  let at = 0;
  for (const [key, value] of values) {
    fields[at++] = key;
    fields[at++] = json(value);
  }
  return fields;
}

function dataFromFields(fields: readonly string[]): SessionData {
  const data: SessionData = {};
  for (let i = 0; i < fields.length; i += 2) assignOwn(data, fields[i]!, parseJson(fields[i + 1]!));
  return data;
}

/**
 * A record's fields as a change log's target: values are encoded as they
 * are set. Each change looks its key up along the list, which is the
 * quickest way for the few keys and changes of most commits; see
 * replayOnto for long ones.
 */
class FieldList implements ChangeTarget {
  constructor(private readonly fields: string[]) {}

  set(key: string, value: unknown): void {
    const json = JSON.stringify(value);
    const at = this.indexOf(key);
    if (json === undefined) this.fields.splice(at, 2);
    else if (at < this.fields.length) this.fields[at + 1] = json;
    else this.fields.push(key, json);
  }

  delete(key: string): void {
    this.fields.splice(this.indexOf(key), 2);
  }

  clear(): void {
    this.fields.length = 0;
  }

  private indexOf(key: string): number {
    let at = 0;
    while (at < this.fields.length && this.fields[at] !== key) at += 2;
    return at;
  }
}

/** FieldList's work for a change log too long to look up each key along the list: keyed, then laid out flat again. */
class FieldMap implements ChangeTarget {
  private readonly values = new Map<string, string>();

  constructor(fields: readonly string[]) {
    for (let i = 0; i < fields.length; i += 2) this.values.set(fields[i]!, fields[i + 1]!);
  }

  set(key: string, value: unknown): void {
    const json = JSON.stringify(value);
    if (json === undefined) this.values.delete(key);
    else this.values.set(key, json); // a Map keeps a key where it was, as FieldList does
  }

  delete(key: string): void {
    this.values.delete(key);
  }

  clear(): void {
    this.values.clear();
  }

  fields(): string[] {
    return fieldsOfMap(this.values, (json) => json);
  }
}

/**
 * Above this many key lookups along the list, a commit is replayed
 * through a FieldMap: through a FieldList, a handler that sets thousands
 * of keys (from a request body, say) would take time growing with their
 * square, blocking the event loop for seconds.
 */
const LIST_LOOKUPS = 4096;

/** `changes` replayed onto `entry`'s fields. */
function replayOnto(entry: RecordEntry, changes: readonly Change[]): void {
  // At most: each change looks along the keys stored and the ones the changes before it added.
  if (changes.length * (entry.fields.length / 2 + changes.length) <= LIST_LOOKUPS) {
    const length = entry.fields.length;
    replayChanges(changes, new FieldList(entry.fields));
    // Adding a key grew the array with room to spare, which the stored session would keep (see fieldsArray).
    if (entry.fields.length > length) entry.fields = entry.fields.slice();
    return;
  }
  const keyed = new FieldMap(entry.fields);
  replayChanges(changes, keyed);
  entry.fields = keyed.fields();
}

/** What someone else stored, read as a record the middleware writes (see toRecord). */
function recordOfOther(entry: OtherEntry, now: number): Omit<RecordEntry, 'expiresAt'> {
  const record = toRecord(JSON.parse(entry.json) as SessionData, now);
  return { createdAt: record.createdAt, touchedAt: record.touchedAt, fields: fieldsOf(record.data) };
}

/**
 * Entries are spread over this many Maps. V8 rehashes a Map in one step
 * when it shrinks, which on a million entries blocks for tens of ms; on a
 * thousand (one shard of a million) it is a matter of microseconds.
 */
const SHARDS = 1024;

/**
 * Entries a sweep looks at between two turns of the event loop. In a store
 * of a million sessions a slice takes tens of microseconds; the first ones
 * after the store sat idle take longer (its memory is cold: up to about
 * 1 ms on the benchmark machine).
 */
const SWEEP_SLICE = 128;

/**
 * Deletes the expired entries among the next `budget` of `ids`, a shard's
 * keys. Returns what is left of `budget` when the shard is done first, 0
 * when the budget ran out. A plain function, apart from the async sweep, so
 * that V8 makes it a loop that allocates nothing per entry (inside the
 * async sweep each entry cost an iterator result and a [key, value] pair,
 * and the scavenges of that garbage were the sweep's longest blocks).
 */
function sweepSlice(shard: Map<string, Entry>, ids: Iterator<string>, now: number, budget: number): number {
  for (; budget > 0; budget--) {
    const next = ids.next();
    if (next.done === true) return budget;
    const entry = shard.get(next.value);
    if (entry !== undefined && entry.expiresAt <= now) shard.delete(next.value);
  }
  return 0;
}

/**
 * @internal The shard of `id`, from a hash of all its characters (FNV-1a
 * over 32-bit words, each step folding the high half into the low, then a
 * final mix): a custom genid's IDs may share a prefix or a suffix, or count
 * up, and must not pile into a few shards (a Map that large shrinks in one
 * long step as a sweep deletes from it).
 *
 * An ID of up to 256 characters is hashed two characters at a time: copied
 * into a scratch buffer as UTF-16 (both bytes of every character, so IDs
 * that differ only in a character's high byte still hash apart), then read
 * as 32-bit words. Reading it a character at a time costs much more, as V8
 * pays dearly for `charCodeAt` on the slice of the Cookie header an ID is.
 * A multiplication only carries a difference upwards, so each step folds
 * the high half back down: otherwise a character in the upper half of a
 * word would reach only the top bits of the hash, and IDs that differ only
 * in such characters would share a fraction of the shards.
 */
export function shardOf(id: string): number {
  const length = id.length;
  let hash = 0x811c9dc5 | 0;
  if (length <= SCRATCH_CHARS) {
    writeUtf16(id);
    const whole = length >>> 1;
    for (let i = 0; i < whole; i++) {
      hash = Math.imul(hash ^ scratchWords[i]!, 0x01000193);
      hash ^= hash >>> 16;
    }
    if ((length & 1) === 1) hash = Math.imul(hash ^ id.charCodeAt(length - 1), 0x01000193);
  } else {
    for (let i = 0; i < length; i++) hash = Math.imul(hash ^ id.charCodeAt(i), 0x01000193);
  }
  hash = Math.imul(hash ^ (hash >>> 15), 0x2c1b3c6d);
  return (hash ^ (hash >>> 16)) & (SHARDS - 1);
}

const SCRATCH_CHARS = 256;
const scratchWords = new Uint32Array(SCRATCH_CHARS / 2);
const scratchBytes = Buffer.from(scratchWords.buffer);

/** Buffer's UTF-16 writer (two bytes per character) without its encoding lookup, where Node has it (it is not documented). */
const ucs2Write = (scratchBytes as Buffer & { ucs2Write?: (text: string, offset: number) => number }).ucs2Write;

function writeUtf16(text: string): void {
  if (typeof ucs2Write === 'function') ucs2Write.call(scratchBytes, text, 0);
  else scratchBytes.write(text, 0, 'utf16le');
}

/**
 * The embedded default store, for one process. Values are kept as JSON, so
 * `get` hands out and `set` takes deep copies: no caller can change stored
 * data behind the store's back. Expired records are invisible at once and
 * swept out every `cleanupInterval`, a slice at a time.
 */
export class MemoryStore implements AtomicStore {
  private readonly shards: Map<string, Entry>[] = Array.from({ length: SHARDS }, () => new Map());
  private readonly timer: NodeJS.Timeout;
  /** The sweep under way, for a second sweep() to wait for. */
  private sweeping: Promise<void> | undefined;

  constructor(options: MemoryStoreOptions = {}) {
    if (typeof options !== 'object' || options === null) throw new TypeError('koa-locked-session: MemoryStore options must be an object');
    for (const key of Object.keys(options)) {
      if (key !== 'cleanupInterval') throw new TypeError(`koa-locked-session: unknown MemoryStore option ${key} (the one option is cleanupInterval)`);
    }
    const interval = options.cleanupInterval === undefined ? 10 * 60 * 1000 : options.cleanupInterval;
    if (typeof interval !== 'number' || !Number.isFinite(interval) || interval < 1 || interval > MAX_TIMER_MS) {
      throw new TypeError(`koa-locked-session: MemoryStore option cleanupInterval must be a number of milliseconds from 1 to ${MAX_TIMER_MS}`);
    }
    // The timer holds the store weakly: one the app drops without close() (each session() without a store
    // in an app made per test or per tenant, say) is collected with its sessions, and its timer stops.
    const store = new WeakRef(this);
    const timer = setInterval(() => {
      const alive = store.deref();
      if (alive === undefined) clearInterval(timer);
      else void alive.sweep();
    }, interval);
    timer.unref(); // the sweep never keeps the process alive
    this.timer = timer;
  }

  /**
   * Live sessions held; expired ones not yet swept are not counted. Counted
   * one by one (expiry is lazy, so a running count could not tell): some
   * 30-60 ms of blocking per million sessions.
   */
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
    if (entry === undefined) return undefined;
    if (!isRecordEntry(entry)) return JSON.parse(entry.json) as SessionData;
    return { data: dataFromFields(entry.fields), createdAt: entry.createdAt, touchedAt: entry.touchedAt };
  }

  async set(id: string, data: SessionData, maxAgeMs: number): Promise<void> {
    assertLifetime('MemoryStore', maxAgeMs);
    const expiresAt = Date.now() + maxAgeMs;
    const entry: Entry = isSessionRecord(data)
      ? { expiresAt, createdAt: data.createdAt, touchedAt: data.touchedAt, fields: fieldsOf(data.data) }
      : { expiresAt, json: JSON.stringify(data) };
    this.shards[shardOf(id)]!.set(id, entry);
  }

  /**
   * @internal The middleware's direct way in (see directMemoryStore): the
   * live session under `id`, its values left as JSON text until read.
   */
  readSession(id: string, now: number): StoredSession | undefined {
    const entry = this.live(id, now);
    if (entry === undefined) return undefined;
    const own = isRecordEntry(entry);
    const { createdAt, touchedAt, fields } = own ? entry : recordOfOther(entry, now);
    const values = new Map<string, unknown>();
    for (let i = 0; i < fields.length; i += 2) values.set(fields[i]!, new JsonText(fields[i + 1]!));
    return own ? { values, createdAt, touchedAt } : { values, createdAt, touchedAt, foreign: true };
  }

  /** @internal Stores `session` under `id` for `maxAgeMs`, replacing what was there. */
  writeSession(id: string, session: StoredSession, maxAgeMs: number): void {
    const fields = fieldsOfMap(session.values, jsonOf);
    const entry: RecordEntry = { expiresAt: Date.now() + maxAgeMs, createdAt: session.createdAt, touchedAt: session.touchedAt, fields };
    this.shards[shardOf(id)]!.set(id, entry);
  }

  async destroy(id: string): Promise<void> {
    this.shards[shardOf(id)]!.delete(id);
  }

  /** Pushes the expiry out; a record the middleware wrote also notes the push time. */
  async touch(id: string, maxAgeMs: number): Promise<void> {
    assertLifetime('MemoryStore', maxAgeMs);
    const entry = this.live(id);
    if (entry === undefined) return;
    const now = Date.now();
    if (isRecordEntry(entry)) entry.touchedAt = now;
    entry.expiresAt = now + maxAgeMs;
  }

  async applyChanges(id: string, changes: readonly Change[], touchedAt: number, maxAgeMs: number): Promise<boolean> {
    assertLifetime('MemoryStore', maxAgeMs);
    // All or nothing: a value JSON cannot encode (a BigInt) would throw part-way through the replay.
    // The middleware's own commits never carry one (set() refuses it).
    for (const change of changes) if (change.op === 'set') JSON.stringify(change.value);
    return this.applySession(id, changes, touchedAt, maxAgeMs);
  }

  /** @internal applyChanges, done before it returns. */
  applySession(id: string, changes: readonly Change[], touchedAt: number, maxAgeMs: number): boolean {
    const found = this.live(id);
    if (found === undefined) return false;
    // Stored by someone else: from now on a record the middleware keeps.
    const entry = isRecordEntry(found) ? found : { expiresAt: 0, ...recordOfOther(found, touchedAt) };
    replayOnto(entry, changes);
    // The push time and expiry never move back (as in RedisStore, where another process may have pushed meanwhile).
    if (touchedAt >= entry.touchedAt) {
      entry.touchedAt = touchedAt;
      entry.expiresAt = Date.now() + maxAgeMs;
    }
    if (entry !== found) this.shards[shardOf(id)]!.set(id, entry);
    return true;
  }

  /** Stops the sweep timer. The store still works; nothing is swept any more. */
  close(): void {
    clearInterval(this.timer);
  }

  /**
   * Removes every expired record, SWEEP_SLICE entries per turn of the event
   * loop, deleting in place (each shard is small enough to shrink in
   * microseconds). Resolves when every shard has been swept; called
   * while a sweep is under way, it resolves with that sweep.
   */
  sweep(): Promise<void> {
    this.sweeping ??= this.sweepShards().finally(() => {
      this.sweeping = undefined;
    });
    return this.sweeping;
  }

  private async sweepShards(): Promise<void> {
    const now = Date.now();
    let budget = SWEEP_SLICE;
    for (const shard of this.shards) {
      // A Map's iterator carries on past deletions, and past what requests set or delete while the sweep waits.
      const ids = shard.keys();
      for (;;) {
        budget = sweepSlice(shard, ids, now, budget);
        if (budget > 0) break; // the shard is done, with budget left for the next
        await new Promise<void>((resolve) => setImmediate(resolve));
        budget = SWEEP_SLICE;
      }
    }
  }

  /** The entry under `id` unless it has expired by `now`; an expired one is dropped. */
  private live(id: string, now = Date.now()): Entry | undefined {
    const shard = this.shards[shardOf(id)]!;
    const entry = shard.get(id);
    if (entry === undefined) return undefined;
    if (entry.expiresAt <= now) {
      shard.delete(id);
      return undefined;
    }
    return entry;
  }
}

/**
 * `store` when it is a MemoryStore whose methods are its own, else
 * undefined. The middleware then reads and writes its sessions through the
 * internal methods above: no promise, no copy of the data object, and only
 * the values a handler reads are decoded. A subclass that overrides a store
 * method expects it to be called, so it is used as a plain store.
 * @internal
 */
export function directMemoryStore(store: Store): MemoryStore | undefined {
  if (!(store instanceof MemoryStore)) return undefined;
  const own = MemoryStore.prototype;
  const untouched = store.get === own.get && store.set === own.set && store.applyChanges === own.applyChanges && store.destroy === own.destroy;
  return untouched ? store : undefined;
}

/** A MemoryStore; the same as `new MemoryStore(options)`. */
export function createMemoryStore(options?: MemoryStoreOptions): MemoryStore {
  return new MemoryStore(options);
}
