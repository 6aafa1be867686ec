/**
 * The servers being compared. Each contender answers the same routes with
 * the same handler logic; only the session library (or none) differs.
 *
 *   GET  /init   new session with a few small keys (user, role, theme, n = 0)
 *   GET  /read   reads one key                               (W1, W4)
 *   POST /write  increments the counter n                    (W2, W4)
 *   GET  /new    sets one key on a fresh session             (W3)
 *   POST /rmw    read n, wait 5 ms, write n + 1              (lost-update check)
 *   GET  /count  reads n
 *
 * This file runs in the child processes only (compiled to plain JS): the
 * library under test is required from the path in BENCH_LIB.
 *
 * The peers are loaded with loose types on purpose: their type packages
 * augment Koa's context with their own `session`, which would clash with
 * this library's augmentation in one compilation.
 */
import type http from 'node:http';
import { randomBytes } from 'node:crypto';

/* eslint-disable @typescript-eslint/no-explicit-any, @typescript-eslint/no-require-imports */
type Any = any;

export const APP_KEYS = ['bench key one, long enough to be a real secret', 'bench key two, an older one'];
export const SECRET = APP_KEYS[0];
export const SESSION_KEYS = { user: 'user-42', role: 'member', theme: 'dark', n: 0 };

/** One built server: a request listener and how to let go of its stores. */
export interface Built {
  listener: http.RequestListener;
  close(): Promise<void>;
  /** Stores whose contents the memory probe may inspect (unused in load runs). */
  store?: unknown;
}

export interface Env {
  /** Path of the compiled koa-locked-session entry point. */
  lib: string;
  redisPort?: number;
}

/** The minimum a handler needs from any session library. */
interface Access {
  get(key: string): unknown;
  set(key: string, value: unknown): void;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Bare frameworks: a fixed, read-only "session", so responses look alike. */
const NO_SESSION: Access = { get: (key) => (SESSION_KEYS as Record<string, unknown>)[key], set: () => undefined };

function koaHandler(access: (ctx: Any) => Access) {
  return async (ctx: Any): Promise<void> => {
    switch (ctx.path) {
      case '/read':
        ctx.body = String(access(ctx).get('user'));
        return;
      case '/write': {
        const s = access(ctx);
        const n = Number(s.get('n')) + 1;
        s.set('n', n);
        ctx.body = String(n);
        return;
      }
      case '/new':
        access(ctx).set('visits', 1);
        ctx.body = 'ok';
        return;
      case '/init': {
        const s = access(ctx);
        for (const [key, value] of Object.entries(SESSION_KEYS)) s.set(key, value);
        ctx.body = 'ok';
        return;
      }
      case '/rmw': {
        const s = access(ctx);
        const n = Number(s.get('n'));
        await sleep(5);
        s.set('n', n + 1);
        ctx.body = String(n + 1);
        return;
      }
      case '/count':
        ctx.body = String(access(ctx).get('n'));
        return;
      default:
        ctx.status = 404;
    }
  };
}

function expressHandler(access: (req: Any) => Access) {
  return (req: Any, res: Any, next: Any): void => {
    const send = (body: string) => res.type('text/plain').send(body);
    switch (req.path) {
      case '/read':
        send(String(access(req).get('user')));
        return;
      case '/write': {
        const s = access(req);
        const n = Number(s.get('n')) + 1;
        s.set('n', n);
        send(String(n));
        return;
      }
      case '/new':
        access(req).set('visits', 1);
        send('ok');
        return;
      case '/init': {
        const s = access(req);
        for (const [key, value] of Object.entries(SESSION_KEYS)) s.set(key, value);
        send('ok');
        return;
      }
      case '/rmw': {
        const s = access(req);
        const n = Number(s.get('n'));
        sleep(5).then(() => {
          s.set('n', n + 1);
          send(String(n + 1));
        }, next);
        return;
      }
      case '/count':
        send(String(access(req).get('n')));
        return;
      default:
        next();
    }
  };
}

const ours = (ctx: Any): Access => ctx.session;
const propertyBag = (session: Any): Access => ({
  get: (key) => session[key],
  set: (key, value) => {
    session[key] = value;
  },
});
const koaSessionAccess = (ctx: Any): Access => propertyBag(ctx.session);
const expressAccess = (req: Any): Access => propertyBag(req.session);

function newKoa(signed: boolean): Any {
  const Koa = require('koa');
  const app = new Koa();
  if (signed) app.keys = APP_KEYS;
  return app;
}

function koaBuilt(app: Any, close: () => Promise<void> = async () => undefined, store?: unknown): Built {
  return { listener: app.callback(), close, store };
}

/** koa-session's README store: a Map, data kept as the object koa-session hands over. */
export function mapStore() {
  const map = new Map<string, unknown>();
  return {
    map,
    get: async (key: string) => map.get(key),
    set: async (key: string, sess: unknown) => {
      map.set(key, sess);
    },
    destroy: async (key: string) => {
      map.delete(key);
    },
  };
}

function lib(env: Env): typeof import('../src/index') {
  return require(env.lib);
}

/**
 * What both ioredis contenders (ours and koa-redis) get: commands batched per
 * turn of the event loop, the setting this library's README recommends.
 * node-redis, under connect-redis, batches that way by itself.
 */
const IOREDIS_TRANSPORT = { enableAutoPipelining: true };

async function ioredis(env: Env): Promise<Any> {
  if (env.redisPort === undefined) throw new Error('no Redis server for this contender');
  const Redis = require('ioredis');
  const client = new Redis({ host: '127.0.0.1', port: env.redisPort, lazyConnect: true, maxRetriesPerRequest: 1, ...IOREDIS_TRANSPORT });
  await client.connect();
  return client;
}

export type Factory = (env: Env) => Promise<Built>;

/** Keeps the CPU busy for `us` microseconds: a middleware of known cost. */
function busyFor(us: number): void {
  const end = process.hrtime.bigint() + BigInt(us * 1000);
  while (process.hrtime.bigint() < end);
}

/** This library on a MemoryStore of its own, signed with app.keys or not. */
async function oursOnMemory(env: Env, signed: boolean, options: { hashIds?: boolean }): Promise<Built> {
  const { session, MemoryStore } = lib(env);
  const store = new MemoryStore();
  const app = newKoa(signed);
  app.use(session({ store, ...options }));
  app.use(koaHandler(ours));
  return koaBuilt(app, async () => store.close(), store);
}

export const FACTORIES: Record<string, Factory> = {
  async koa() {
    const app = newKoa(false);
    app.use(koaHandler(() => NO_SESSION));
    return koaBuilt(app);
  },

  /**
   * Calibration: bare Koa plus a middleware that only burns 5 µs of CPU per
   * request. Its ratio shows what a fixed in-process cost does to a ratio
   * over loopback HTTP on this machine.
   */
  async 'koa-busy'() {
    const app = newKoa(false);
    app.use(async (_ctx: Any, next: () => Promise<void>) => {
      busyFor(5);
      await next();
    });
    app.use(koaHandler(() => NO_SESSION));
    return koaBuilt(app);
  },

  /**
   * Calibration: bare Koa that answers every write (POST) and every W3
   * request with the response headers a signed session save sends (SPEC:
   * the cookie goes out with each save; its `.sig` line; `Vary: Cookie`;
   * `Cache-Control: no-cache="Set-Cookie"`), and does nothing else. Its
   * ratio is what those headers alone cost over loopback HTTP: a part of
   * W2's and W3's cost that no session library following SPEC can drop.
   */
  async 'koa-headers'() {
    const app = newKoa(false);
    const expires = new Date(Date.now() + 86_400_000).toUTCString();
    const attributes = `; path=/; expires=${expires}; samesite=lax; httponly`;
    const lines = [`session_id=${'0'.repeat(64)}${attributes}`, `session_id.sig=${'A'.repeat(27)}${attributes}`];
    app.use(async (ctx: Any, next: () => Promise<void>) => {
      await next();
      if (ctx.method !== 'POST' && ctx.path !== '/new') return;
      ctx.res.setHeader('Set-Cookie', lines);
      ctx.res.setHeader('Vary', 'Cookie');
      ctx.res.setHeader('Cache-Control', 'no-cache="Set-Cookie"');
    });
    app.use(koaHandler(() => NO_SESSION));
    return koaBuilt(app);
  },

  ours: (env) => oursOnMemory(env, false, {}),
  'ours-signed': (env) => oursOnMemory(env, true, {}),
  'ours-signed-hash': (env) => oursOnMemory(env, true, { hashIds: true }),

  async 'koa-session-cookie'() {
    const createSession = require('koa-session').default;
    const app = newKoa(true);
    app.use(createSession({}, app));
    app.use(koaHandler(koaSessionAccess));
    return koaBuilt(app);
  },

  async 'koa-session-store'() {
    const createSession = require('koa-session').default;
    const store = mapStore();
    const app = newKoa(true);
    app.use(createSession({ store }, app));
    app.use(koaHandler(koaSessionAccess));
    return koaBuilt(app, async () => undefined, store);
  },

  async 'koa-generic-session'() {
    const genericSession = require('koa-generic-session');
    const MemoryStore = require('koa-generic-session/lib/memory_store');
    const store = new MemoryStore();
    const app = newKoa(true);
    app.use(genericSession({ store }));
    app.use(koaHandler(koaSessionAccess));
    return koaBuilt(app, async () => undefined, store);
  },

  async express() {
    const express = require('express');
    const app = express();
    app.use(expressHandler(() => NO_SESSION));
    return { listener: app, close: async () => undefined };
  },

  async 'express-session'() {
    const express = require('express');
    const expressSession = require('express-session');
    const store = new expressSession.MemoryStore();
    const app = express();
    app.use(expressSession({ secret: SECRET, store, resave: false, saveUninitialized: false }));
    app.use(expressHandler(expressAccess));
    return { listener: app, close: async () => undefined, store };
  },

  async 'ours-redis'(env) {
    const { session, RedisStore } = lib(env);
    const client = await ioredis(env);
    const store = new RedisStore({ client, prefix: 'ours:' });
    const app = newKoa(true);
    app.use(session({ store }));
    app.use(koaHandler(ours));
    return koaBuilt(app, async () => {
      await client.quit();
    });
  },

  async 'koa-session-redis'(env) {
    if (env.redisPort === undefined) throw new Error('no Redis server for this contender');
    const createSession = require('koa-session').default;
    const redisStore = require('koa-redis');
    const store = redisStore({ host: '127.0.0.1', port: env.redisPort, ...IOREDIS_TRANSPORT });
    const app = newKoa(true);
    app.use(createSession({ store }, app));
    app.use(koaHandler(koaSessionAccess));
    return koaBuilt(app, async () => {
      await store.quit();
    });
  },

  async 'express-session-redis'(env) {
    if (env.redisPort === undefined) throw new Error('no Redis server for this contender');
    const express = require('express');
    const expressSession = require('express-session');
    const { RedisStore } = require('connect-redis');
    const { createClient } = require('redis');
    const client = createClient({ url: `redis://127.0.0.1:${env.redisPort}` });
    client.on('error', (error: Error) => console.error('express-session-redis:', error.message));
    await client.connect();
    const store = new RedisStore({ client, prefix: 'express:' });
    const app = express();
    app.use(expressSession({ secret: SECRET, store, resave: false, saveUninitialized: false }));
    app.use(expressHandler(expressAccess));
    return {
      listener: app,
      close: async () => {
        await client.quit();
      },
    };
  },
};

/** Session IDs the way each library makes them (for the memory probe). */
export const ID_MAKERS: Record<string, () => string> = {
  ours: () => randomBytes(32).toString('hex'),
  'koa-session-store': () => require('node:crypto').randomUUID(),
  'koa-generic-session': () => `koa:sess:${randomBytes(24).toString('base64url')}`,
  'express-session': () => randomBytes(24).toString('base64url'),
};
