/**
 * Helpers for the locking, expiry, MemoryStore and regenerate/destroy tests:
 * a Koa app with the session middleware on a real loopback server, promises
 * the test resolves itself (gates), a log of what handlers did in which
 * order, a store wrapper that counts and can delay or fail calls, and a
 * cookie reader.
 */
import type http from 'node:http';
import { performance } from 'node:perf_hooks';
import Koa from 'koa';
import type { Context, Middleware } from 'koa';
import supertest from 'supertest';
import { serve } from './hardening-harness';
import { MemoryStore, session } from '../../src';
import type { AtomicStore, Change, SessionData, SessionOptions, Store } from '../../src';

// chai 6 is ESM-only and ships no type declarations (@types/chai is not
// installed), so its `expect` is used untyped; Node 20 can require() it.
// eslint-disable-next-line @typescript-eslint/no-require-imports
export const expect: (value: unknown, message?: string) => any = require('chai').expect;

// ---------------------------------------------------------------------------
// Deterministic coordination

/** A promise the test resolves when it chooses. */
export interface Gate {
  readonly promise: Promise<void>;
  readonly opened: boolean;
  open(): void;
}

export function gate(): Gate {
  let open!: () => void;
  let opened = false;
  const promise = new Promise<void>((resolve) => {
    open = () => {
      opened = true;
      resolve();
    };
  });
  return {
    promise,
    get opened() {
      return opened;
    },
    open: () => open(),
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Lets every already queued callback and I/O run a few times over. */
export async function settle(turns = 5): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

/**
 * Resolves once `condition()` holds; rejects with `what` after `timeoutMs`,
 * on the monotonic clock, which withHeldClock leaves running.
 */
export async function waitUntil(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await sleep(2);
  }
}

/**
 * An ordered log of named events ("enter W", "exit R1", ...), with a way to
 * wait for one of them.
 */
export class EventLog {
  readonly entries: string[] = [];
  private readonly waiters: Array<{ name: string; resolve: () => void }> = [];

  add(name: string): void {
    this.entries.push(name);
    for (const waiter of this.waiters.filter((w) => w.name === name)) waiter.resolve();
  }

  has(name: string): boolean {
    return this.entries.includes(name);
  }

  indexOf(name: string): number {
    const at = this.entries.indexOf(name);
    if (at < 0) throw new Error(`"${name}" never happened; log: ${this.entries.join(', ')}`);
    return at;
  }

  /** Resolves once `name` has been logged (now or later). */
  waitFor(name: string, timeoutMs = 15_000): Promise<void> {
    if (this.has(name)) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`"${name}" did not happen; log: ${this.entries.join(', ')}`)), timeoutMs);
      this.waiters.push({
        name,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
    });
  }
}

/**
 * A `lockMode` that logs "queue <tag>" for every request that is about to
 * take its session's lock (tag: the `x-tag` request header, or the path),
 * then answers like the default: read for GET/HEAD/OPTIONS, write otherwise.
 * The middleware calls lockMode and then, in the same synchronous step,
 * joins the lock's queue, so once "queue X" is logged, X is in line.
 */
export function loggingLockMode(log: EventLog): (ctx: Context) => 'read' | 'write' {
  return (ctx) => {
    log.add(`queue ${tagOf(ctx)}`);
    return ['GET', 'HEAD', 'OPTIONS'].includes(ctx.method) ? 'read' : 'write';
  };
}

export function tagOf(ctx: Context): string {
  const tag = ctx.get('x-tag');
  return tag === '' ? ctx.path : tag;
}

// ---------------------------------------------------------------------------
// Apps on real loopback servers

export type Handler = (ctx: Context) => unknown;

export interface TestApp {
  readonly app: Koa;
  readonly server: http.Server;
  /** A supertest client for the running server; it keeps no cookies, tests send them explicitly. */
  readonly client: ReturnType<typeof supertest>;
  close(): Promise<void>;
}

export interface AppSetup {
  /** Middleware put in front of the session middleware (to catch its errors, say). */
  outer?: Middleware;
  /** Handlers by "METHOD /path"; anything else is 404. */
  routes: Record<string, Handler>;
}

/** A Koa app: [outer], session(options), the routes; listening on 127.0.0.1. */
export async function startApp(options: SessionOptions, setup: AppSetup): Promise<TestApp> {
  const app = new Koa();
  app.silent = true; // the 5xx these tests provoke on purpose are not noise for the run's output
  if (setup.outer !== undefined) app.use(setup.outer);
  app.use(session(options));
  app.use(async (ctx) => {
    const handler = setup.routes[`${ctx.method} ${ctx.path}`];
    if (handler === undefined) {
      ctx.status = 404;
      return;
    }
    const result = await handler(ctx);
    if (result !== undefined) ctx.body = result;
    else if (ctx.body === undefined) ctx.body = { ok: true };
  });
  const { server, port, close } = await serve(app);
  server.keepAliveTimeout = 1; // lets close() finish quickly
  return { app, server, client: supertest(`http://127.0.0.1:${port}`), close };
}

/** What a handler reports about its session, for assertions. */
export function describeSession(ctx: Context): { id: string; isNew: boolean; data: Record<string, unknown> } {
  return { id: ctx.session.id, isNew: ctx.session.isNew, data: ctx.session.toJSON() };
}

// ---------------------------------------------------------------------------
// Cookies

export interface SetCookie {
  name: string;
  value: string;
  expires: Date | undefined;
  raw: string;
}

/** The Set-Cookie lines of a response, parsed. */
export function setCookies(res: { headers: Record<string, unknown> }): SetCookie[] {
  const header = res.headers['set-cookie'];
  const lines = header === undefined ? [] : Array.isArray(header) ? (header as string[]) : [String(header)];
  return lines.map((raw) => {
    const [pair, ...attributes] = raw.split(';').map((part) => part.trim());
    const eq = pair.indexOf('=');
    const expiresAttr = attributes.find((a) => a.toLowerCase().startsWith('expires='));
    return {
      name: pair.slice(0, eq),
      value: pair.slice(eq + 1),
      expires: expiresAttr === undefined ? undefined : new Date(expiresAttr.slice('expires='.length)),
      raw,
    };
  });
}

/** The session cookie the response sets, if any. */
export function sessionCookie(res: { headers: Record<string, unknown> }, name = 'session_id'): SetCookie | undefined {
  return setCookies(res).find((c) => c.name === name);
}

/** A Cookie request header naming session `id`. */
export function cookieFor(id: string, name = 'session_id'): string {
  return `${name}=${id}`;
}

// ---------------------------------------------------------------------------
// Stores

export type StoreMethod = 'get' | 'set' | 'destroy' | 'touch' | 'applyChanges';

export interface SpyHooks {
  /** Runs before the inner store is called; may delay (return a promise) or throw. */
  before?: (method: StoreMethod, id: string) => void | Promise<void>;
}

/**
 * Wraps an atomic store (a MemoryStore, usually): counts every call by
 * method and lets a test delay or fail one.
 */
export class SpyStore implements AtomicStore {
  readonly calls: Record<StoreMethod, number> = { get: 0, set: 0, destroy: 0, touch: 0, applyChanges: 0 };
  hooks: SpyHooks = {};

  constructor(readonly inner: AtomicStore) {}

  /** Calls that write: set, destroy, touch, applyChanges. */
  get writes(): number {
    return this.calls.set + this.calls.destroy + this.calls.touch + this.calls.applyChanges;
  }

  private async enter(method: StoreMethod, id: string): Promise<void> {
    this.calls[method]++;
    await this.hooks.before?.(method, id);
  }

  async get(id: string): Promise<SessionData | undefined> {
    await this.enter('get', id);
    return this.inner.get(id);
  }

  async set(id: string, data: SessionData, maxAgeMs: number): Promise<void> {
    await this.enter('set', id);
    return this.inner.set(id, data, maxAgeMs);
  }

  async destroy(id: string): Promise<void> {
    await this.enter('destroy', id);
    return this.inner.destroy(id);
  }

  async touch(id: string, maxAgeMs: number): Promise<void> {
    await this.enter('touch', id);
    return this.inner.touch?.(id, maxAgeMs);
  }

  async applyChanges(id: string, changes: readonly Change[], touchedAt: number, maxAgeMs: number): Promise<boolean> {
    await this.enter('applyChanges', id);
    return this.inner.applyChanges(id, changes, touchedAt, maxAgeMs);
  }
}

/**
 * A koa-session style store (get/set/destroy only) that keeps everything
 * for ever: it ignores `maxAgeMs`, so only the middleware can tell that a
 * record it returns has expired.
 */
export class ForgetfulStore implements Store {
  readonly records = new Map<string, string>();

  async get(id: string): Promise<SessionData | undefined> {
    const json = this.records.get(id);
    return json === undefined ? undefined : (JSON.parse(json) as SessionData);
  }

  async set(id: string, data: SessionData): Promise<void> {
    this.records.set(id, JSON.stringify(data));
  }

  async destroy(id: string): Promise<void> {
    this.records.delete(id);
  }
}

/** The user data a store holds for `id` (the record's `data`), or undefined. */
export async function storedData(store: Store, id: string): Promise<Record<string, unknown> | undefined> {
  const record = await store.get(id);
  if (record === undefined) return undefined;
  return (record as { data?: Record<string, unknown> }).data;
}

/** A fresh ID in the default format (64 lowercase hex). */
export function hexId(seed: number): string {
  return seed.toString(16).padStart(64, '0');
}

/**
 * What a test file starts, closed again after each of its tests: `track()`
 * an app, `memoryStore()` for a store whose sweep timer is stopped.
 */
export function closedAfterEachTest(): { track(t: TestApp): TestApp; adopt(store: MemoryStore): MemoryStore; memoryStore(): MemoryStore } {
  const running: TestApp[] = [];
  const stores: MemoryStore[] = [];
  afterEach(async () => {
    await Promise.all(running.splice(0).map((t) => t.close()));
    for (const store of stores.splice(0)) store.close();
  });
  const adopt = (store: MemoryStore): MemoryStore => {
    stores.push(store);
    return store;
  };
  return {
    track: (t) => {
      running.push(t);
      return t;
    },
    adopt,
    memoryStore: () => adopt(new MemoryStore()),
  };
}
