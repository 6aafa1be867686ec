import { createHash } from 'node:crypto';
import type { Server } from 'node:http';
import Koa from 'koa';
import type { Context } from 'koa';
import request from 'supertest';
import { MemoryStore, session } from '../src';
import type { Change, SessionData, SessionOptions, Store } from '../src';

// chai 6 ships no type declarations and @types/chai is not a dev dependency.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { expect } = require('chai') as { expect: (actual: unknown, message?: string) => any };

type Res = request.Response;
type Handler = (ctx: Context) => unknown;

const sha256 = (id: string): string => createHash('sha256').update(id).digest('hex');
const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

const servers: Server[] = [];

/** Serves `routes` (path → handler) behind the session middleware, on a real port. */
function serve(options: SessionOptions, routes: Record<string, Handler>, setup?: (app: Koa) => void): Server {
  const app = new Koa();
  app.silent = true;
  setup?.(app);
  app.use(session(options));
  app.use(async (ctx) => {
    const handler = routes[ctx.path];
    if (handler === undefined) ctx.throw(404);
    const body = await handler(ctx);
    if (ctx.body === undefined) ctx.body = body ?? 'ok';
  });
  const server = app.listen(0);
  servers.push(server);
  return server;
}

afterEach(async () => {
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

function setCookies(res: Res): string[] {
  const header = res.headers['set-cookie'] as unknown;
  if (header === undefined) return [];
  return Array.isArray(header) ? header : [String(header)];
}

/** The value the response gave the session cookie, if it set one. */
function sessionIdOf(res: Res, name = 'session_id'): string | undefined {
  const line = setCookies(res).find((c) => c.startsWith(`${name}=`));
  return line === undefined ? undefined : decodeURIComponent(line.slice(name.length + 1).split(';')[0]);
}

/** A Cookie request header carrying back every cookie the response set. */
function cookieHeader(res: Res): string {
  const pairs = setCookies(res).map((c) => c.split(';')[0]);
  expect(pairs, 'the response set no cookie').to.not.be.empty;
  return pairs.join('; ');
}

function varyOf(res: Res): string[] {
  const vary = res.headers.vary as string | undefined;
  return vary === undefined ? [] : vary.split(',').map((v) => v.trim().toLowerCase());
}

function expectCacheHeaders(res: Res, cacheControl = 'no-cache="Set-Cookie"'): void {
  expect(varyOf(res)).to.include('cookie');
  expect(res.headers['cache-control']).to.equal(cacheControl);
}

function expectNoCacheHeaders(res: Res): void {
  expect(res.headers.vary).to.equal(undefined);
  expect(res.headers['cache-control']).to.equal(undefined);
}

const save: Handler = (ctx) => ctx.session.set('user', 'ada');
const read: Handler = (ctx) => ctx.session.get('user') ?? 'nobody';

describe('cache headers on responses that set or expire the session cookie', () => {
  it('the response that first saves a session carries Vary: Cookie and Cache-Control: no-cache="Set-Cookie"', async () => {
    const server = serve({}, { '/save': save });
    const res = await request(server).post('/save').expect(200);
    expect(sessionIdOf(res)).to.match(/^[0-9a-f]{64}$/);
    expectCacheHeaders(res);
  });

  for (const [appSet, sent, what] of [
    ['public, max-age=60', 'public, max-age=60, no-cache="Set-Cookie"', 'is appended to'],
    ['private, no-cache="Set-Cookie"', 'private, no-cache="Set-Cookie"', 'is not added twice to'],
  ]) {
    it(`the no-cache directive ${what} the Cache-Control the app set (${appSet})`, async () => {
      const server = serve({}, {
        '/save': (ctx) => {
          ctx.set('Cache-Control', appSet);
          ctx.session.set('user', 'ada');
        },
      });
      const res = await request(server).post('/save').expect(200);
      expectCacheHeaders(res, sent);
    });
  }

  it('Cookie is added to the Vary the app set', async () => {
    const server = serve({}, {
      '/save': (ctx) => {
        ctx.vary('Accept-Encoding');
        ctx.session.set('user', 'ada');
      },
    });
    const res = await request(server).post('/save').expect(200);
    expect(varyOf(res)).to.include.members(['accept-encoding', 'cookie']);
  });

  it('the response to regenerate() carries both cache headers', async () => {
    const server = serve({}, { '/save': save, '/login': (ctx) => ctx.session.regenerate() });
    const saved = await request(server).post('/save').expect(200);
    const res = await request(server).post('/login').set('Cookie', cookieHeader(saved)).expect(200);
    expect(sessionIdOf(res)).to.match(/^[0-9a-f]{64}$/).and.not.equal(sessionIdOf(saved));
    expectCacheHeaders(res);
  });

  it('the response to destroy() that expires the cookie carries both cache headers', async () => {
    const server = serve({}, { '/save': save, '/logout': (ctx) => ctx.session.destroy() });
    const saved = await request(server).post('/save').expect(200);
    const res = await request(server).post('/logout').set('Cookie', cookieHeader(saved)).expect(200);
    expect(sessionIdOf(res)).to.equal('');
    expectCacheHeaders(res);
  });

  it('the response that pushes out the expiry carries both cache headers', async () => {
    const server = serve({ maxAge: 4000 }, { '/save': save, '/read': read });
    const saved = await request(server).post('/save').expect(200);
    await delay(600); // more than a tenth of maxAge: the next request pushes the expiry out
    const res = await request(server).get('/read').set('Cookie', cookieHeader(saved)).expect(200, 'ada');
    expect(sessionIdOf(res)).to.equal(sessionIdOf(saved));
    expectCacheHeaders(res);
  });

  it('every rolling response carries both cache headers', async () => {
    const server = serve({ rolling: true }, { '/save': save, '/read': read });
    const saved = await request(server).post('/save').expect(200);
    const res = await request(server).get('/read').set('Cookie', cookieHeader(saved)).expect(200, 'ada');
    expect(sessionIdOf(res)).to.equal(sessionIdOf(saved));
    expectCacheHeaders(res);
  });

  it('the response that re-signs the cookie with the newest key carries both cache headers', async () => {
    let app!: Koa;
    const server = serve({}, { '/save': save, '/read': read }, (a) => {
      app = a;
      a.keys = ['old key'];
    });
    const saved = await request(server).post('/save').expect(200);
    app.keys = ['new key', 'old key'];
    const res = await request(server).get('/read').set('Cookie', cookieHeader(saved)).expect(200, 'ada');
    expect(sessionIdOf(res)).to.equal(sessionIdOf(saved));
    expectCacheHeaders(res);
  });

  it('an error response that still sets the session cookie carries both cache headers', async () => {
    const server = serve({}, {
      '/save-then-fail': (ctx) => {
        ctx.session.set('user', 'ada');
        ctx.throw(409, 'conflict after saving');
      },
    });
    const res = await request(server).post('/save-then-fail').expect(409);
    expect(sessionIdOf(res)).to.match(/^[0-9a-f]{64}$/);
    expectCacheHeaders(res);
  });

  it('an error response whose session cookie an outer middleware replaced gets neither header', async () => {
    const server = serve({}, { '/save': save }, (app) => {
      app.use(async (ctx, next) => {
        await next();
        ctx.set('Set-Cookie', 'consent=1; path=/'); // replaces every Set-Cookie line, the session's included
        ctx.throw(500, 'failed after the session was saved');
      });
    });
    const res = await request(server).post('/save').expect(500);
    expect(setCookies(res)).to.be.empty;
    expectNoCacheHeaders(res);
  });

  it('a read that changes no cookie gets neither header', async () => {
    const server = serve({}, { '/save': save, '/read': read });
    const saved = await request(server).post('/save').expect(200);
    const res = await request(server).get('/read').set('Cookie', cookieHeader(saved)).expect(200, 'ada');
    expect(setCookies(res)).to.be.empty;
    expectNoCacheHeaders(res);
  });

  it('a read that changes no cookie keeps the Cache-Control the app set, unchanged', async () => {
    const server = serve({}, {
      '/save': save,
      '/read': (ctx) => {
        ctx.set('Cache-Control', 'public, max-age=60');
        return ctx.session.get('user');
      },
    });
    const saved = await request(server).post('/save').expect(200);
    const res = await request(server).get('/read').set('Cookie', cookieHeader(saved)).expect(200, 'ada');
    expect(res.headers['cache-control']).to.equal('public, max-age=60');
    expect(res.headers.vary).to.equal(undefined);
  });

  it('a response that never uses the session gets neither header', async () => {
    const server = serve({}, { '/save': save, '/static': () => 'static' });
    const saved = await request(server).post('/save').expect(200);
    const withCookie = await request(server).get('/static').set('Cookie', cookieHeader(saved)).expect(200, 'static');
    expectNoCacheHeaders(withCookie);
    const withoutCookie = await request(server).get('/static').expect(200, 'static');
    expectNoCacheHeaders(withoutCookie);
  });

  it('a new session that is read but never changed gets neither header', async () => {
    const server = serve({}, { '/read': read });
    const res = await request(server).get('/read').expect(200, 'nobody');
    expect(setCookies(res)).to.be.empty;
    expectNoCacheHeaders(res);
  });
});

/** Every ID argument of every store call, by method. */
interface StoreCall {
  method: string;
  id: string;
}

/** A MemoryStore that records the ID of every call made to it. */
class RecordingMemoryStore extends MemoryStore {
  readonly calls: StoreCall[] = [];

  override get(id: string) {
    this.calls.push({ method: 'get', id });
    return super.get(id);
  }

  override set(id: string, data: SessionData, maxAgeMs: number) {
    this.calls.push({ method: 'set', id });
    return super.set(id, data, maxAgeMs);
  }

  override destroy(id: string) {
    this.calls.push({ method: 'destroy', id });
    return super.destroy(id);
  }

  override touch(id: string, maxAgeMs: number) {
    this.calls.push({ method: 'touch', id });
    return super.touch(id, maxAgeMs);
  }

  override applyChanges(id: string, changes: readonly Change[], touchedAt: number, maxAgeMs: number) {
    this.calls.push({ method: 'applyChanges', id });
    return super.applyChanges(id, changes, touchedAt, maxAgeMs);
  }
}

/** A plain store over a Map, the kind an app writes itself: no applyChanges, no touch. */
class MapStore implements Store {
  readonly map = new Map<string, string>();
  readonly calls: StoreCall[] = [];

  async get(id: string): Promise<SessionData | undefined> {
    this.calls.push({ method: 'get', id });
    const json = this.map.get(id);
    return json === undefined ? undefined : (JSON.parse(json) as SessionData);
  }

  async set(id: string, data: SessionData): Promise<void> {
    this.calls.push({ method: 'set', id });
    this.map.set(id, JSON.stringify(data));
  }

  async destroy(id: string): Promise<void> {
    this.calls.push({ method: 'destroy', id });
    this.map.delete(id);
  }

  /** Everything the store holds, keys and values, as one string. */
  dump(): string {
    return JSON.stringify([...this.map.entries()]);
  }
}

/**
 * Routes that take a session through its whole life, recording every ID a
 * handler saw, so a test knows all the raw IDs there were.
 */
function lifecycleRoutes(seen: Set<string>): Record<string, Handler> {
  const track = (run: Handler): Handler => async (ctx) => {
    seen.add(ctx.session.id);
    const out = await run(ctx);
    seen.add(ctx.session.id);
    return out;
  };
  return {
    '/save': track(save),
    '/read': track(read),
    '/update': track((ctx) => ctx.session.set('visits', ((ctx.session.get<number>('visits')) ?? 0) + 1)),
    '/login': track((ctx) => ctx.session.regenerate()),
    '/logout': track((ctx) => ctx.session.destroy()),
    '/logout-and-back': track(async (ctx) => {
      await ctx.session.destroy();
      ctx.session.set('user', 'grace');
    }),
  };
}

/**
 * Creates, reads, updates, pushes, regenerates and destroys sessions, and
 * sends a well-formed cookie nobody issued. Returns every raw ID seen.
 */
async function runLifecycle(server: Server, seen: Set<string>): Promise<void> {
  const remember = (res: Res) => {
    const id = sessionIdOf(res);
    if (id) seen.add(id);
    return res;
  };
  const a = remember(await request(server).post('/save').expect(200));
  await request(server).get('/read').set('Cookie', cookieHeader(a)).expect(200, 'ada');
  await request(server).post('/update').set('Cookie', cookieHeader(a)).expect(200);
  await delay(600); // past a tenth of maxAge (4 s): this read pushes the expiry out
  remember(await request(server).get('/read').set('Cookie', cookieHeader(a)).expect(200, 'ada'));
  const b = remember(await request(server).post('/login').set('Cookie', cookieHeader(a)).expect(200));
  await request(server).get('/read').set('Cookie', cookieHeader(a)).expect(200, 'nobody');
  const c = remember(await request(server).post('/logout-and-back').set('Cookie', cookieHeader(b)).expect(200));
  remember(await request(server).post('/logout').set('Cookie', cookieHeader(c)).expect(200));
  const unknown = 'ab'.repeat(32);
  seen.add(unknown);
  await request(server).get('/read').set('Cookie', `session_id=${unknown}`).expect(200, 'nobody');
}

describe('hashIds: the store sees only SHA-256 of each session ID', () => {
  it('every call to a MemoryStore receives the SHA-256 of an ID, never an ID', async () => {
    const store = new RecordingMemoryStore();
    const seen = new Set<string>();
    const server = serve({ store, hashIds: true, maxAge: 4000 }, lifecycleRoutes(seen));
    await runLifecycle(server, seen);

    const methods = new Set(store.calls.map((call) => call.method));
    expect([...methods]).to.include.members(['get', 'set', 'destroy', 'applyChanges']);
    const hashes = new Set([...seen].map(sha256));
    for (const call of store.calls) {
      expect(seen.has(call.id), `${call.method} received a raw ID`).to.equal(false);
      expect(hashes.has(call.id), `${call.method} received ${call.id}, not the hash of an ID`).to.equal(true);
    }
  });

  it('every call to a custom Map-backed store receives the SHA-256 of an ID, never an ID', async () => {
    const store = new MapStore();
    const seen = new Set<string>();
    const server = serve({ store, hashIds: true, maxAge: 4000 }, lifecycleRoutes(seen));
    await runLifecycle(server, seen);

    expect(store.calls.map((call) => call.method)).to.include.members(['get', 'set', 'destroy']);
    const hashes = new Set([...seen].map(sha256));
    for (const call of store.calls) {
      expect(seen.has(call.id), `${call.method} received a raw ID`).to.equal(false);
      expect(hashes.has(call.id), `${call.method} received ${call.id}, not the hash of an ID`).to.equal(true);
    }
  });

  it("a store's write lock is taken on the SHA-256 of the ID, never the ID", async () => {
    const lockedIds: string[] = [];
    const store = Object.assign(new MemoryStore(), {
      writeLock: {
        async acquire(id: string) {
          lockedIds.push(id);
          return async () => {};
        },
      },
    });
    const server = serve({ store, hashIds: true }, { '/save': save, '/update': (ctx) => ctx.session.set('n', 1) });
    const saved = await request(server).post('/save').expect(200);
    await request(server).post('/update').set('Cookie', cookieHeader(saved)).expect(200);
    const id = sessionIdOf(saved) as string;
    expect(lockedIds).to.deep.equal([sha256(id)]);
  });

  it('without hashIds the store receives the ID itself', async () => {
    const store = new RecordingMemoryStore();
    const server = serve({ store }, { '/save': save, '/read': read });
    const saved = await request(server).post('/save').expect(200);
    await request(server).get('/read').set('Cookie', cookieHeader(saved)).expect(200, 'ada');
    const id = sessionIdOf(saved) as string;
    expect(store.calls.map((call) => call.id)).to.deep.equal([id, id]);
  });

  it('ctx.session.id and the cookie carry the ID itself, not its hash', async () => {
    const server = serve({ hashIds: true }, {
      '/save': (ctx) => {
        ctx.session.set('user', 'ada');
        return ctx.session.id;
      },
      '/id': (ctx) => ctx.session.id,
    });
    const saved = await request(server).post('/save').expect(200);
    const id = sessionIdOf(saved) as string;
    expect(id).to.match(/^[0-9a-f]{64}$/);
    expect(saved.text).to.equal(id);
    const again = await request(server).get('/id').set('Cookie', cookieHeader(saved)).expect(200);
    expect(again.text).to.equal(id);
  });

  it('a session saved with hashIds is found again by its cookie', async () => {
    const server = serve({ hashIds: true }, { '/save': save, '/read': read, '/is-new': (ctx) => String(ctx.session.isNew) });
    const saved = await request(server).post('/save').expect(200);
    await request(server).get('/read').set('Cookie', cookieHeader(saved)).expect(200, 'ada');
    await request(server).get('/is-new').set('Cookie', cookieHeader(saved)).expect(200, 'false');
  });

  it('regenerate() with hashIds keeps the data under the new ID and leaves nothing under the old one', async () => {
    const store = new MemoryStore();
    const server = serve({ store, hashIds: true }, { '/save': save, '/read': read, '/login': (ctx) => ctx.session.regenerate() });
    const saved = await request(server).post('/save').expect(200);
    const login = await request(server).post('/login').set('Cookie', cookieHeader(saved)).expect(200);
    const oldId = sessionIdOf(saved) as string;
    const newId = sessionIdOf(login) as string;
    expect(newId).to.match(/^[0-9a-f]{64}$/).and.not.equal(oldId);
    await request(server).get('/read').set('Cookie', cookieHeader(login)).expect(200, 'ada');
    await request(server).get('/read').set('Cookie', cookieHeader(saved)).expect(200, 'nobody');
    expect(await store.get(sha256(oldId))).to.equal(undefined);
    expect(await store.get(sha256(newId))).to.not.equal(undefined);
  });

  it('destroy() with hashIds removes the stored session and expires the cookie', async () => {
    const store = new MemoryStore();
    const server = serve({ store, hashIds: true }, { '/save': save, '/read': read, '/logout': (ctx) => ctx.session.destroy() });
    const saved = await request(server).post('/save').expect(200);
    const id = sessionIdOf(saved) as string;
    expect(await store.get(sha256(id))).to.not.equal(undefined);
    const logout = await request(server).post('/logout').set('Cookie', cookieHeader(saved)).expect(200);
    expect(sessionIdOf(logout)).to.equal('');
    expect(await store.get(sha256(id))).to.equal(undefined);
    await request(server).get('/read').set('Cookie', cookieHeader(saved)).expect(200, 'nobody');
  });

  it('a custom store holds no raw ID anywhere in its keys or values', async () => {
    const store = new MapStore();
    const seen = new Set<string>();
    const server = serve({ store, hashIds: true, maxAge: 4000 }, lifecycleRoutes(seen));
    // Two sessions left alive, so the dump has something in it.
    const a = await request(server).post('/save').expect(200);
    const b = await request(server).post('/save').expect(200);
    await request(server).post('/update').set('Cookie', cookieHeader(a)).expect(200);
    const ids = [sessionIdOf(a) as string, sessionIdOf(b) as string, ...seen];
    expect(store.map.size).to.equal(2);
    expect([...store.map.keys()].sort()).to.deep.equal([sha256(ids[0]), sha256(ids[1])].sort());
    const dump = store.dump();
    for (const id of ids) expect(dump.includes(id), 'a raw ID is in the store').to.equal(false);
  });

  it('a MemoryStore holds the session under the SHA-256 of its ID and nothing under the ID', async () => {
    const store = new MemoryStore();
    const server = serve({ store, hashIds: true }, { '/save': save });
    const saved = await request(server).post('/save').expect(200);
    const id = sessionIdOf(saved) as string;
    const stored = await store.get(sha256(id));
    expect(stored).to.not.equal(undefined);
    expect(JSON.stringify(stored)).to.include('ada').and.not.include(id);
    expect(await store.get(id)).to.equal(undefined);
    expect(store.size).to.equal(1);
  });
});

describe("a failed request and the store's cross-process lock", () => {
  /**
   * A MemoryStore with a write lock that takes `unlockMs` to hand back, as a
   * store that stopped answering would (RedisStore's UNLOCK waits out its
   * `timeout`), and whose reads, commits or unlocks can be made to fail.
   */
  class StalledStore extends MemoryStore {
    failing: 'nothing' | 'get' | 'applyChanges' | 'unlock' = 'nothing';
    readonly writeLock = {
      acquire: async () => async () => {
        await delay(this.unlockMs);
        if (this.failing === 'unlock') throw new Error('lock service hiccup');
      },
    };

    constructor(private readonly unlockMs: number) {
      super();
    }

    override async get(id: string): Promise<SessionData | undefined> {
      if (this.failing === 'get') throw new Error('store down');
      return super.get(id);
    }

    override async applyChanges(id: string, changes: readonly Change[], touchedAt: number, maxAgeMs: number): Promise<boolean> {
      if (this.failing === 'applyChanges') throw new Error('store down');
      return super.applyChanges(id, changes, touchedAt, maxAgeMs);
    }
  }

  for (const failing of ['get', 'applyChanges'] as const) {
    it(`a request whose ${failing === 'get' ? 'load' : 'commit'} fails gets its 503 without waiting for the lock to be handed back, and the lock is free after`, async () => {
      const store = new StalledStore(1200);
      const server = serve({ store }, { '/save': save, '/update': (ctx) => ctx.session.set('n', 1), '/read': read });
      const saved = await request(server).post('/save').expect(200);

      store.failing = failing;
      const started = Date.now();
      await request(server).post('/update').set('Cookie', cookieHeader(saved)).expect(503);
      const ms = Date.now() - started;
      store.failing = 'nothing';

      expect(ms, `the 503 came after ${ms} ms; handing the lock back takes 1200`).to.be.below(600);
      await request(server).post('/update').set('Cookie', cookieHeader(saved)).expect(200);
      store.close();
    });
  }

  it('a request whose cross-process unlock fails still succeeds, and lets the next request of the session in', async () => {
    const store = new StalledStore(0);
    const server = serve({ store, lockTimeout: 500 }, { '/save': save, '/update': (ctx) => ctx.session.set('n', 1), '/read': read });
    const saved = await request(server).post('/save').expect(200);

    store.failing = 'unlock';
    await request(server).post('/update').set('Cookie', cookieHeader(saved)).expect(200);
    store.failing = 'nothing';

    await request(server).post('/update').set('Cookie', cookieHeader(saved)).expect(200);
    await request(server).get('/read').set('Cookie', cookieHeader(saved)).expect(200, 'ada');
    store.close();
  });
});
