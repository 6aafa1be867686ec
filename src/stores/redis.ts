import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { AtomicStore, Change, DistributedLock, LockingStore, SessionData, Store, StoredSession } from './store';
import { replayChanges, toRecord } from './store';
import { SessionLockTimeoutError } from '../errors';
import { trace } from '../events';
import { MAX_TIMER_MS } from '../timers';
import { refuseUnknownOptions } from '../unknown-options';
import { dataOfValues, jsonOf } from '../values';
import {
  APPLY,
  APPLY_AND_READ,
  DESTROY,
  DESTROY_UNDER_WAY,
  LOCK,
  LOCK_LOST,
  REMOVED_AT,
  REPLACE,
  RESTAMP,
  RESTAMP_UNDER_WAY,
  RETIRE,
  RENEW,
  Script,
  UNLOCK,
  UNRETIRE,
  applyArgs,
  expiryMs,
  fieldOf,
  replaceArgs,
  retireStamp,
  sessionOfFields,
} from './redis-scripts';

/**
 * The part of an ioredis client (`Redis` or `Cluster`) the store uses.
 * Declared here rather than imported, so ioredis stays an optional peer:
 * nothing in this file loads it, and its types are not needed to compile
 * against the library.
 */
export interface RedisClient {
  /**
   * Called with the script's key and arguments in one array (ioredis's
   * `evalsha(sha1, numkeys, keys)` form): spread into the call, the fields
   * of a session with tens of thousands of keys would overflow the stack.
   */
  evalsha(sha1: string, numkeys: number, keysAndArgs: string[]): Promise<unknown>;
  eval(script: string, numkeys: number, keysAndArgs: string[]): Promise<unknown>;
  hgetall(key: string): Promise<Record<string, string>>;
  del(...keys: string[]): Promise<number>;
}

export interface RedisStoreOptions {
  /** An ioredis client, `new Redis(...)` or `new Cluster(...)`. The README's "Scaling out" recommends its settings. */
  client: RedisClient;
  /** Put before every key. Default `'sess:'`. Must not contain `{` or `}` (they would change the hash tag). */
  prefix?: string;
  /** Also hold write locks in Redis, so write mode is exclusive across processes. Default `false`. */
  lock?: boolean;
  /** Expiry of a lock key in ms, renewed every third of it while its request runs. Default 10 000. */
  lockTtl?: number;
  /**
   * Longest wait for one Redis call, in ms, whatever the client's own retry
   * settings; then the call rejects and the request gets a 503. Default 5000.
   */
  timeout?: number;
}

/**
 * How long a removal is remembered (see removedSince): longer than a
 * request that asked for the session before it was removed should take to
 * load it (it may wait for the lock up to lockTimeout).
 */
const REMOVED_MEMORY_MS = 60_000;

/**
 * The removal time is the removing process's clock as it sent the removal;
 * a request is dated by its own process's clock. A request dated up to
 * this long after a removal still counts as one that came before it: that
 * covers the removal's round trip to Redis, and clocks of different hosts
 * a little apart.
 */
const CLOCK_MARGIN_MS = 500;

/** A regenerate whose old session other processes keep changing gives up after this many copies. */
const MOVE_ATTEMPTS = 10;

/** Lock polling: the first retry after a few ms, then doubling up to this. */
const FIRST_RETRY_MS = 3;
const MAX_RETRY_MS = 50;

/** The longest pause between two tries to undo a removal (see undoRetire): ioredis reconnects about that often. */
const MAX_UNDO_RETRY_MS = 1000;

const KNOWN = new Set(['client', 'prefix', 'lock', 'lockTtl', 'timeout']);

/** What the options of koa-redis and connect-redis, or of session(), are called here. */
const ELSEWHERE: Readonly<Record<string, string>> = {
  ttl: "the lifetime is session()'s maxAge",
  maxAge: 'it is an option of session()',
  lockTimeout: 'it is an option of session(); lockTtl is how long a cross-process lock lives',
  keyPrefix: 'it is prefix',
  redis: 'it is client',
};

function invalid(option: string, expected: string): TypeError {
  return new TypeError(`koa-locked-session: RedisStore option ${option} must be ${expected}`);
}

function positiveMs(value: unknown, option: string, fallback: number, allowInfinity: boolean): number {
  if (value === undefined) return fallback;
  const infinite = allowInfinity && value === Infinity;
  if (typeof value !== 'number' || Number.isNaN(value) || value < 1 || (value > MAX_TIMER_MS && !infinite)) {
    throw invalid(option, `a number of milliseconds from 1 to ${MAX_TIMER_MS} (Node's largest timer delay)${allowInfinity ? ', or Infinity: no limit' : ''}`);
  }
  return Number.isFinite(value) ? Math.ceil(value) : value;
}

/** Whether `value` has the commands the store sends: an ioredis Redis or Cluster. */
function isClient(value: unknown): boolean {
  return typeof value === 'object' && value !== null &&
    ['evalsha', 'eval', 'hgetall', 'del'].every((method) => typeof (value as Record<string, unknown>)[method] === 'function');
}

/**
 * The keyPrefix of an ioredis Redis or Cluster (a Cluster's may sit in its
 * redisOptions): the client puts it before every key, so a brace there
 * would make the hash tag instead of {ID}. ioredis takes bytes too.
 */
function keyPrefixesOf(client: unknown): string[] {
  const options = (client as { options?: { keyPrefix?: unknown; redisOptions?: { keyPrefix?: unknown } } }).options;
  const text = (prefix: unknown): string => (typeof prefix === 'string' ? prefix : prefix instanceof Uint8Array ? Buffer.from(prefix).toString('latin1') : '');
  return [text(options?.keyPrefix), text(options?.redisOptions?.keyPrefix)];
}

function hasBraces(texts: string[]): boolean {
  return texts.some((text) => /[{}]/.test(text));
}

function checkOptions(options: RedisStoreOptions): Required<RedisStoreOptions> {
  if (typeof options !== 'object' || options === null) throw new TypeError('koa-locked-session: RedisStore options must be an object');
  // new RedisStore(client): a client's own keys (its `options`, say) would read as unknown options.
  if (isClient(options)) throw new TypeError('koa-locked-session: pass the ioredis client as an option: new RedisStore({ client })');
  refuseUnknownOptions(options, KNOWN, ELSEWHERE, 'RedisStore option');
  const client: unknown = options.client;
  if (!isClient(client)) throw invalid('client', 'an ioredis client (new Redis(...) or new Cluster(...))');
  if (hasBraces(keyPrefixesOf(client))) throw invalid('client', 'a client whose keyPrefix has no { or } (the session ID is the hash tag)');
  // Only undefined means the default: a null (prefix: process.env.X ?? null) would put the app on the shared default prefix.
  const prefix = options.prefix === undefined ? 'sess:' : options.prefix;
  if (typeof prefix !== 'string' || hasBraces([prefix])) {
    throw invalid('prefix', 'a string without { or } (the session ID is the hash tag)');
  }
  const lock = options.lock === undefined ? false : options.lock;
  if (typeof lock !== 'boolean') throw invalid('lock', 'a boolean');
  return {
    client: client as RedisClient,
    prefix,
    lock,
    lockTtl: positiveMs(options.lockTtl, 'lockTtl', 10_000, false),
    timeout: positiveMs(options.timeout, 'timeout', 5000, true),
  };
}

/**
 * A commit made under a write lock that expired meanwhile: its process was
 * stalled for longer than lockTtl, and another process may have taken the
 * lock and written since. Nothing was written.
 */
class RedisLockLostError extends Error {
  constructor(ms: number) {
    super(`koa-locked-session: the session's Redis lock expired (lockTtl ${ms} ms) before the commit, so nothing was written`);
    this.name = 'RedisLockLostError';
  }
}

/** A Redis call that did not answer in time. */
class RedisTimeoutError extends Error {
  constructor(ms: number) {
    super(`koa-locked-session: Redis did not answer within ${ms} ms`);
    this.name = 'RedisTimeoutError';
  }
}

/** `keepsProcess: false` for work behind the response, which must not keep the process from exiting. */
const sleep = (ms: number, keepsProcess = true) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    if (!keepsProcess) timer.unref();
  });

/**
 * Sessions in Redis, shared by every process that uses the same server (or
 * Cluster) and prefix. Commits are Lua scripts that apply a request's change
 * log key by key on the server, so concurrent commits from different
 * processes to different keys all survive, and none brings back a session
 * that was destroyed. With `lock: true` the write lock is held in Redis too,
 * making write mode exclusive across processes.
 */
export class RedisStore implements AtomicStore, LockingStore {
  readonly client: RedisClient;
  readonly prefix: string;
  /** The cross-process write lock; `undefined` unless `lock: true`. */
  readonly writeLock: DistributedLock | undefined;
  private readonly lockTtl: number;
  private readonly timeout: number;
  /**
   * The tokens of the write locks that requests of this process hold, by
   * lock key (see holdLock): their commits write only while the lock is
   * still theirs. The in-process lock admits one holder per session.
   */
  private readonly heldLocks = new Map<string, string>();

  constructor(options: RedisStoreOptions) {
    const checked = checkOptions(options);
    this.client = checked.client;
    this.prefix = checked.prefix;
    this.lockTtl = checked.lockTtl;
    this.timeout = checked.timeout;
    this.writeLock = checked.lock ? { acquire: (id, timeoutMs) => this.acquireLock(id, timeoutMs) } : undefined;
  }

  /** The Redis key of session `id`. */
  key(id: string): string {
    return `${this.prefix}{${id}}`;
  }

  /** The Redis key of session `id`'s write lock. */
  lockKey(id: string): string {
    return `${this.key(id)}:lock`;
  }

  /** The Redis key that remembers for REMOVED_MEMORY_MS when session `id` was removed. */
  removedKey(id: string): string {
    return `${this.key(id)}:removed`;
  }

  /**
   * The Redis key that keeps the removals of session `id` under way (see
   * removeUntilDone). Not `:removing`, where earlier versions kept a count:
   * their INCR/DECR on a sorted set would fail with WRONGTYPE during a
   * rolling upgrade.
   */
  removersKey(id: string): string {
    return `${this.key(id)}:removers`;
  }

  /**
   * The record stored for `id` ({ data, createdAt, touchedAt }), or
   * undefined. Redis drops expired ones itself. A hash the library did not
   * write (no push time) reads as its plain data, as MemoryStore gives back
   * plain data, so that the middleware takes it for what it is (see toRecord).
   */
  async get(id: string): Promise<SessionData | undefined> {
    const session = await this.readSession(id, Date.now());
    if (session === undefined) return undefined;
    const data = dataOfValues(session.values);
    return session.foreign === true ? data : { data, createdAt: session.createdAt, touchedAt: session.touchedAt };
  }

  /**
   * @internal The middleware's way in (see directRedisStore): the session
   * stored for `id`, its values left as JSON text until a handler reads them.
   */
  async readSession(id: string, now: number): Promise<StoredSession | undefined> {
    return sessionOfFields(await this.guard(this.client.hgetall(this.key(id)), this.timeout), now);
  }

  /** Replaces what is stored under `id` with `record`, expiring in `maxAgeMs`, in one step. */
  async set(id: string, record: SessionData, maxAgeMs: number): Promise<void> {
    const { data, createdAt, touchedAt } = toRecord(record, Date.now());
    const args = replaceArgs(createdAt, touchedAt, maxAgeMs);
    for (const [key, value] of Object.entries(data)) {
      const json = JSON.stringify(value);
      if (json !== undefined) args.push(fieldOf(key), json); // as JSON would: undefined values are left out
    }
    await this.run(REPLACE, [this.key(id)], args);
  }

  /**
   * @internal set() for the middleware (see directRedisStore): values still
   * JSON text, never read by a handler, are stored as they came.
   */
  async writeSession(id: string, session: StoredSession, maxAgeMs: number): Promise<void> {
    const args = replaceArgs(session.createdAt, session.touchedAt, maxAgeMs);
    for (const [key, slot] of session.values) args.push(fieldOf(key), jsonOf(slot));
    await this.run(REPLACE, [this.key(id)], args);
  }

  /**
   * Removes `id`, and remembers for REMOVED_MEMORY_MS when it did (see
   * removedSince). Its lock, if held, stays with its holder, who removes it.
   */
  async destroy(id: string): Promise<void> {
    await this.run(DESTROY, [this.key(id), this.removedKey(id)], [REMOVED_MEMORY_MS, Date.now()]);
  }

  /**
   * @internal destroy(), by a request that goes on running with the
   * session's lock (a logout, a login that destroy()s first): its `removalToken`
   * under `removersKey(id)` says the removal is under way until removalDone
   * with that token (see removedSince), or for lockTtl after the removal at
   * most, should the request's process end first (as its Redis lock would).
   */
  async removeUntilDone(id: string, removalToken: string): Promise<void> {
    const keys = [this.key(id), this.removedKey(id), this.removersKey(id)];
    await this.run(DESTROY_UNDER_WAY, keys, [REMOVED_MEMORY_MS, Date.now(), this.lockTtl, removalToken]);
  }

  /**
   * @internal True when `id` was removed (destroyed or regenerated away),
   * by any process, after a request that asked for it at `since` (its own
   * clock, ms since the epoch; see CLOCK_MARGIN_MS). Such a request, sent
   * before its client heard of the logout or the login, must not start a
   * new session, whose cookie would replace the login's. In one process
   * the lock table knows this of the requests that waited (see
   * LockTable.removalStarted); this is how other processes know it. A
   * request that came after the removal is one with an unknown ID. While
   * the remover still runs (removeUntilDone), every request is in line
   * behind it, as a request of its process would wait for its lock.
   */
  async removedSince(id: string, since: number): Promise<boolean> {
    const answer = await this.run(REMOVED_AT, [this.removedKey(id), this.removersKey(id)], [Date.now()]);
    const [removedAt, underWay] = Array.isArray(answer) ? answer : [];
    if (Number(underWay) > 0) return true;
    return removedAt !== null && removedAt !== undefined && Number(String(removedAt)) + CLOCK_MARGIN_MS >= since;
  }

  /**
   * @internal The request that removed `id` is done with it: its mark's
   * time moves on to now. A request in another process that asked for the
   * session while the remover still ran (after a destroy(), a login's
   * handler may run on for a while before its set()) then counts as one
   * in line behind the removal, as it does in the remover's own process.
   * `removalToken`: the request removed it with removeUntilDone, with
   * that token, whose removal is then no longer under way.
   */
  async removalDone(id: string, removalToken?: string): Promise<void> {
    if (removalToken === undefined) {
      await this.run(RESTAMP, [this.removedKey(id)], [REMOVED_MEMORY_MS, Date.now()]);
      return;
    }
    const args = [REMOVED_MEMORY_MS, Date.now(), removalToken, this.lockTtl];
    await this.run(RESTAMP_UNDER_WAY, [this.removedKey(id), this.removersKey(id)], args);
  }

  /** Pushes the expiry of `id` out to `maxAgeMs` from now; never creates a session. */
  async touch(id: string, maxAgeMs: number): Promise<void> {
    await this.applyChanges(id, [], Date.now(), maxAgeMs);
  }

  async applyChanges(id: string, changes: readonly Change[], touchedAt: number, maxAgeMs: number): Promise<boolean> {
    return this.checked(await this.runApply(APPLY, id, changes, touchedAt, maxAgeMs)) === 1;
  }

  /** @internal applyChanges, for the middleware (see DirectStore); an override of applyChanges is called. */
  applySession(id: string, changes: readonly Change[], touchedAt: number, maxAgeMs: number): Promise<boolean> {
    return this.applyChanges(id, changes, touchedAt, maxAgeMs);
  }

  /**
   * @internal applyChanges, answering with the session as stored right
   * after it (undefined when it is gone), read in the same step on the
   * server: see ownRedisStore.
   */
  async applyAndRead(id: string, changes: readonly Change[], touchedAt: number, maxAgeMs: number): Promise<StoredSession | undefined> {
    const answer = this.checked(await this.runApply(APPLY_AND_READ, id, changes, touchedAt, maxAgeMs));
    if (!Array.isArray(answer)) return undefined;
    const fields: Record<string, string> = {};
    for (let i = 0; i + 1 < answer.length; i += 2) fields[String(answer[i])] = String(answer[i + 1]);
    return sessionOfFields(fields, touchedAt);
  }

  /**
   * Runs APPLY or APPLY_AND_READ on `id`, checked against the write lock
   * this process holds on it, if any. An expiry push alone (no changes) is
   * not: it never moves the push time or the expiry back, so it can spoil
   * nothing another process wrote, and a request that changed nothing does
   * not fail over a lock that expired.
   */
  private runApply(script: Script, id: string, changes: readonly Change[], touchedAt: number, maxAgeMs: number): Promise<unknown> {
    const lock = this.heldLockOf(id);
    const token = changes.length === 0 ? '' : lock.token;
    return this.run(script, [this.key(id), lock.key], applyArgs(changes, touchedAt, maxAgeMs, token));
  }

  /** The key of `id`'s lock, and the token this process holds it with ('' for none). */
  private heldLockOf(id: string): { key: string; token: string } {
    const key = this.lockKey(id);
    return { key, token: this.heldLocks.get(key) ?? '' };
  }

  /** `answer`, unless it says the caller's lock was lost (see LOCK_LOST in redis-scripts.ts). */
  private checked(answer: unknown): unknown {
    if (answer === LOCK_LOST) throw new RedisLockLostError(this.lockTtl);
    return answer;
  }

  /**
   * @internal regenerate, for the middleware (see ownRedisStore): the
   * session stored under `oldId`, with `changes` replayed, saved under
   * `newId` as created and touched at `now`, then `oldId` removed; false,
   * changing nothing, when `oldId` is gone (or not `live`). Other processes
   * may write or remove `oldId` meanwhile, and the old and new keys may sit
   * on different Cluster nodes, so this is not one script: `oldId` is
   * removed only if it is still exactly what was copied (RETIRE). When it
   * changed, the copy is made again; when it is gone, the copy is deleted.
   * So a write or a logout in another process is never undone, and two
   * regenerates in two processes never leave two sessions.
   */
  async moveSession(oldId: string, newId: string, changes: readonly Change[], now: number, maxAgeMs: number,
    live: (session: StoredSession) => boolean): Promise<boolean> {
    for (let attempt = 1; ; attempt++) {
      const fields = await this.guard(this.client.hgetall(this.key(oldId)), this.timeout);
      const session = sessionOfFields(fields, now);
      if (session === undefined || !live(session)) return false;
      replayChanges(changes, session.values);
      await this.writeSession(newId, { values: session.values, createdAt: now, touchedAt: now }, maxAgeMs);
      const lock = this.heldLockOf(oldId);
      const keys = [this.key(oldId), this.removedKey(oldId), lock.key];
      const stamp = retireStamp();
      const copied = Object.entries(fields).flat();
      let retired: unknown;
      try {
        retired = await this.run(RETIRE, keys, [REMOVED_MEMORY_MS, stamp, lock.token, ...copied]);
      } catch (error) {
        // The request fails, but RETIRE may still run: undo it, whenever it runs (the expiry
        // of a fresh lifetime, as a push would give), and drop the copy no client heard of.
        void this.undoRetire(keys.slice(0, 2), [expiryMs(maxAgeMs), stamp, REMOVED_MEMORY_MS, ...copied], this.key(newId));
        throw error;
      }
      if (retired === 1) return true;
      await this.guard(this.client.del(this.key(newId)), this.timeout); // a copy no client ever heard of
      this.checked(retired);
      if (retired === 0) return false;
      if (attempt === MOVE_ATTEMPTS) {
        throw new Error(`the session changed in another process during each of ${MOVE_ATTEMPTS} attempts to regenerate it`);
      }
    }
  }

  /**
   * UNRETIRE with `args` (see moveSession), then the delete of the copy
   * under `newKey`, each sent again until Redis answers it. ioredis drops
   * queued commands at a failed reconnection (maxRetriesPerRequest), yet
   * sends again a RETIRE that was written to the connection that dropped:
   * an undoing dropped once must still reach Redis, before or after that
   * RETIRE (see UNRETIRE in redis-scripts.ts).
   */
  private async undoRetire(keys: string[], args: (string | number)[], newKey: string): Promise<void> {
    const steps = [() => this.run(UNRETIRE, keys, args, Infinity), () => this.client.del(newKey)];
    for (const step of steps) {
      for (let pause = FIRST_RETRY_MS; ; pause = Math.min(pause * 2, MAX_UNDO_RETRY_MS)) {
        try {
          await step();
          break;
        } catch (error) {
          // An error reply is an answer too; a client closed for good sends nothing again.
          if ((error as Error | undefined)?.name === 'ReplyError' || (this.client as { status?: unknown }).status === 'end') break;
          await sleep(pause, false);
        }
      }
    }
  }

  /**
   * Takes `id`'s lock key with SET NX PX and a random token, polling with a
   * growing pause until `timeoutMs`. Polling, not queueing: processes are
   * not served in arrival order, but each sends at most one waiter per
   * session (SessionLocks takes the in-process lock first).
   */
  private async acquireLock(id: string, timeoutMs: number): Promise<() => Promise<void>> {
    const key = this.lockKey(id);
    const token = randomBytes(16).toString('hex');
    // On the monotonic clock: a wall clock stepped while waiting must neither end the wait at once nor stretch it by the step.
    const deadline = performance.now() + timeoutMs;
    let pause = FIRST_RETRY_MS;
    for (let attempt = 0; ; attempt++) {
      // The first try is one store call like any other (bounded by `timeout`),
      // even when the in-process wait used up the whole lockTimeout; later
      // tries are waiting for the lock, and stop at the deadline.
      const cap = attempt === 0 ? this.timeout : Math.max(1, Math.min(deadline - performance.now(), this.timeout));
      let reply: unknown;
      try {
        reply = await this.run(LOCK, [key], [token, this.lockTtl], cap);
      } catch (error) {
        // A SET still queued in the client may land later: queue its undoing behind it.
        this.run(UNLOCK, [key], [token]).catch(() => undefined);
        if (error instanceof RedisTimeoutError && cap < this.timeout) throw new SessionLockTimeoutError(timeoutMs);
        throw error;
      }
      if (reply === 'OK') return this.holdLock(key, token);
      const wait = deadline - performance.now();
      if (wait <= 0) throw new SessionLockTimeoutError(timeoutMs);
      // Jitter keeps waiters of different processes from polling in step.
      await sleep(Math.min(wait, pause * (0.5 + Math.random() / 2)));
      pause = Math.min(pause * 2, MAX_RETRY_MS);
    }
  }

  /**
   * Keeps the lock alive while its request runs (a long handler must not
   * lose it), and returns its release. A renewal that finds another token
   * stops: the lock expired meanwhile and is someone else's now, and the
   * request's commit will find that out too (see applySource in redis-scripts.ts).
   */
  private holdLock(key: string, token: string): () => Promise<void> {
    this.heldLocks.set(key, token);
    let lost = false;
    const renewal = setInterval(() => {
      this.run(RENEW, [key], [token, this.lockTtl]).then(
        (renewed) => {
          // Renewals sent during a stall all answer after it: the loss is told once.
          if (renewed !== 1 && !lost) {
            lost = true;
            clearInterval(renewal);
            trace('redis-lock-lost');
          }
        },
        () => trace('redis-lock-renew-failed'), // Redis hiccup: try again next tick
      );
    }, Math.max(1, Math.floor(this.lockTtl / 3)));
    renewal.unref(); // a held lock never keeps the process alive
    let released: Promise<void> | undefined;
    return () => {
      released ??= (async () => {
        clearInterval(renewal);
        if (this.heldLocks.get(key) === token) this.heldLocks.delete(key);
        await this.run(UNLOCK, [key], [token]);
      })();
      return released;
    };
  }

  /** Runs `script` on `keys` by its SHA, loading it on a node that does not have it yet. */
  private run(script: Script, keys: string[], args: (string | number)[], timeoutMs = this.timeout): Promise<unknown> {
    const keysAndArgs = [...keys];
    for (const arg of args) keysAndArgs.push(String(arg));
    const call = async () => {
      try {
        return await this.client.evalsha(script.sha, script.keys, keysAndArgs);
      } catch (error) {
        if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error;
        return this.client.eval(script.source, script.keys, keysAndArgs);
      }
    };
    return this.guard(call(), timeoutMs);
  }

  /**
   * Rejects after `ms` when Redis has not answered: with Redis gone, an
   * ioredis client on default settings would queue a command for many
   * seconds. The command itself may still run later; the request has
   * already been answered with a 503 by then.
   */
  private guard<T>(pending: Promise<T>, ms: number): Promise<T> {
    if (ms === Infinity) return pending;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new RedisTimeoutError(ms)), ms);
      // After a timeout these settle a promise already rejected: a late answer or failure has no one left to tell.
      pending.then(
        (value) => {
          clearTimeout(timer);
          resolve(value);
        },
        (error: unknown) => {
          clearTimeout(timer);
          reject(error);
        },
      );
    });
  }
}

/**
 * `store` when it is a RedisStore whose `get` and `set` are its own, else
 * undefined. The middleware then loads and saves sessions with
 * readSession and writeSession: only the values a handler reads are
 * decoded, and only those it sets are encoded. A subclass that overrides
 * `get` or `set` expects them to be called, so it is used through them.
 * @internal
 */
export function directRedisStore(store: Store): RedisStore | undefined {
  if (!(store instanceof RedisStore)) return undefined;
  const own = RedisStore.prototype;
  return store.get === own.get && store.set === own.set ? store : undefined;
}

/**
 * `store` when it is a direct RedisStore (see directRedisStore) whose
 * `method` is its own too, for a step that does the method's work without
 * calling it: `applyChanges` for a commit that reads the session back in
 * the same step (applyAndRead), `destroy` for a regenerate that removes
 * the old session only if unchanged (moveSession).
 * @internal
 */
export function ownRedisStore(store: Store, method: 'applyChanges' | 'destroy'): RedisStore | undefined {
  const direct = directRedisStore(store);
  return direct !== undefined && direct[method] === RedisStore.prototype[method] ? direct : undefined;
}
