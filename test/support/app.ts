/**
 * Small shared helpers for the HTTP tests: a Koa app with the session
 * middleware on a loopback port, Set-Cookie parsing, a cookie jar, and
 * stores that record what they are asked.
 */
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import Koa from 'koa';
import type { Middleware } from 'koa';
import supertest from 'supertest';
import { MemoryStore, session } from '../../src';
import type { SessionData, SessionOptions, Store } from '../../src';

// chai 6 is ESM-only and ships no type declarations (and @types/chai is not
// installed), so its `expect` is used untyped; Node 20 can require() it.
export const expect: (value: unknown, message?: string) => any = require('chai').expect;

export interface Running {
  app: Koa;
  server: Server;
  /** `http://127.0.0.1:<port>` */
  url: string;
  /** supertest bound to the listening server (no cookie memory: send cookies yourself). */
  http: ReturnType<typeof supertest>;
  /** Errors Koa reported through `app.on('error')`, in order. */
  errors: unknown[];
}

export interface StartOptions {
  /** `app.keys`, to sign cookies. */
  keys?: string[];
  /** `app.proxy`: trust X-Forwarded-Proto. */
  proxy?: boolean;
  /** Middleware to put before the session middleware. */
  before?: Middleware[];
  /** Session middleware to use instead of `session(sessionOptions)`. */
  middleware?: Middleware;
}

const open = new Set<Server>();
const stores = new Set<MemoryStore>();

/**
 * Starts a Koa app on 127.0.0.1 with `session(sessionOptions)` and then
 * `handler`. Koa's own error logging is silenced; errors are collected in
 * `errors` instead.
 */
export async function start(
  sessionOptions: SessionOptions | undefined,
  handler: Middleware,
  options: StartOptions = {},
): Promise<Running> {
  const app = new Koa();
  app.silent = true;
  if (options.keys !== undefined) app.keys = options.keys;
  if (options.proxy !== undefined) app.proxy = options.proxy;
  const errors: unknown[] = [];
  app.on('error', (error: unknown) => errors.push(error));
  for (const m of options.before ?? []) app.use(m);
  app.use(options.middleware ?? session(sessionOptions));
  app.use(handler);
  const server = await new Promise<Server>((resolve, reject) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
  });
  open.add(server);
  const { port } = server.address() as AddressInfo;
  return { app, server, url: `http://127.0.0.1:${port}`, http: supertest(server), errors };
}

/** Closes every server `start()` opened and every store `memoryStore()` made. */
export async function closeAll(): Promise<void> {
  const servers = [...open];
  open.clear();
  for (const store of stores) store.close();
  stores.clear();
  await Promise.all(
    servers.map(
      (server) =>
        new Promise<void>((resolve) => {
          server.closeAllConnections?.();
          server.close(() => resolve());
        }),
    ),
  );
}

/** A MemoryStore closed by `closeAll()`. */
export function memoryStore(): MemoryStore {
  const store = new MemoryStore();
  stores.add(store);
  return store;
}

// ---------------------------------------------------------------- cookies

export interface SetCookie {
  name: string;
  value: string;
  /** Attributes by lower-case name; flags (HttpOnly, Secure) map to true. */
  attrs: Record<string, string | true>;
  raw: string;
}

export function parseSetCookie(raw: string): SetCookie {
  const [pair, ...rest] = raw.split(';');
  const eq = pair.indexOf('=');
  const name = pair.slice(0, eq).trim();
  const value = pair.slice(eq + 1).trim();
  const attrs: Record<string, string | true> = {};
  for (const part of rest) {
    const i = part.indexOf('=');
    if (i < 0) attrs[part.trim().toLowerCase()] = true;
    else attrs[part.slice(0, i).trim().toLowerCase()] = part.slice(i + 1).trim();
  }
  return { name, value, attrs, raw };
}

interface HasHeaders {
  headers: Record<string, unknown>;
}

/** Every Set-Cookie of a response, parsed. */
export function setCookies(res: HasHeaders): SetCookie[] {
  const header = res.headers['set-cookie'];
  if (header === undefined) return [];
  const list = Array.isArray(header) ? header : [String(header)];
  return list.map((raw) => parseSetCookie(String(raw)));
}

/** The Set-Cookie for `name`, or undefined; fails when there are several. */
export function cookieNamed(res: HasHeaders, name = 'session_id'): SetCookie | undefined {
  const found = setCookies(res).filter((c) => c.name === name);
  if (found.length > 1) throw new Error(`${found.length} Set-Cookie headers for ${name}`);
  return found[0];
}

/** True when a Set-Cookie tells the browser to drop the cookie. */
export function isExpired(cookie: SetCookie): boolean {
  const expires = cookie.attrs.expires;
  return typeof expires === 'string' && Date.parse(expires) <= Date.now();
}

/** A browser-like cookie jar: keeps what responses set, drops what they expire. */
export class Jar {
  readonly cookies = new Map<string, string>();

  /** Takes in every Set-Cookie of `res`; returns `res` for chaining. */
  take<T extends HasHeaders>(res: T): T {
    for (const c of setCookies(res)) {
      if (isExpired(c)) this.cookies.delete(c.name);
      else this.cookies.set(c.name, c.value);
    }
    return res;
  }

  get(name = 'session_id'): string | undefined {
    return this.cookies.get(name);
  }

  set(name: string, value: string): this {
    this.cookies.set(name, value);
    return this;
  }

  /** The Cookie request header ('' when empty). */
  header(): string {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }
}

// ---------------------------------------------------------------- stores

export interface Call {
  method: string;
  id: string;
  args: unknown[];
}

/**
 * A plain koa-session-style store over a Map (get / set / destroy only),
 * recording every call. `fail` makes the named methods reject.
 */
export class RecordingStore implements Store {
  readonly map = new Map<string, SessionData>();
  readonly calls: Call[] = [];
  readonly fail = new Set<'get' | 'set' | 'destroy'>();

  /** Every ID any method was called with. */
  get ids(): string[] {
    return this.calls.map((c) => c.id);
  }

  callsOf(method: string): Call[] {
    return this.calls.filter((c) => c.method === method);
  }

  async get(id: string): Promise<SessionData | undefined> {
    this.calls.push({ method: 'get', id, args: [] });
    if (this.fail.has('get')) throw new Error('store get is down');
    const found = this.map.get(id);
    return found === undefined ? undefined : (JSON.parse(JSON.stringify(found)) as SessionData);
  }

  async set(id: string, data: SessionData, maxAgeMs: number): Promise<void> {
    this.calls.push({ method: 'set', id, args: [data, maxAgeMs] });
    if (this.fail.has('set')) throw new Error('store set is down');
    this.map.set(id, JSON.parse(JSON.stringify(data)) as SessionData);
  }

  async destroy(id: string): Promise<void> {
    this.calls.push({ method: 'destroy', id, args: [] });
    if (this.fail.has('destroy')) throw new Error('store destroy is down');
    this.map.delete(id);
  }
}

/** A 64-lowercase-hex string that no generator made. */
export function hexId(fill = 'a'): string {
  return fill.repeat(64).slice(0, 64);
}

export const HEX64 = /^[0-9a-f]{64}$/;

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

type Method = 'get' | 'post' | 'put' | 'delete' | 'head' | 'options' | 'patch';

/**
 * One request to `run` carrying the jar's cookies (plus `headers`); the
 * response's Set-Cookie headers go back into the jar.
 */
export async function call(
  run: Running,
  jar: Jar,
  method: Method = 'get',
  path = '/',
  headers: Record<string, string> = {},
): Promise<supertest.Response> {
  let req = run.http[method](path);
  const cookie = jar.header();
  if (cookie !== '') req = req.set('Cookie', cookie);
  for (const [name, value] of Object.entries(headers)) req = req.set(name, value);
  return jar.take(await req);
}

/** The messages of the process warnings with `code` emitted while `run` runs. */
export async function warningsDuring(code: string, run: () => Promise<void>): Promise<string[]> {
  const seen: string[] = [];
  const onWarning = (warning: Error & { code?: string }) => {
    if (warning.code === code) seen.push(warning.message);
  };
  process.on('warning', onWarning);
  try {
    await run();
    await new Promise((resolve) => setImmediate(resolve));
  } finally {
    process.off('warning', onWarning);
  }
  return seen;
}
