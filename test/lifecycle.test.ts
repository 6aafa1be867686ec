/**
 * SPEC "Request lifecycle": reading the cookie (missing, malformed, unknown,
 * signed), when the session is committed and when Set-Cookie is sent, and
 * a handler that throws. Everything over real HTTP.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { inspect } from 'node:util';
import { runInNewContext } from 'node:vm';
import type { Context, Middleware, Next } from 'koa';
import { MemoryStore, Session, session } from '../src';
import type { SessionData, SessionOptions, Store } from '../src';
import {
  HEX64, Jar, RecordingStore, call, closeAll, cookieNamed, expect, hexId, isExpired, memoryStore, setCookies, sleep, start, warningsDuring,
} from './support/app';
import type { Running } from './support/app';
import { gate } from './support/concurrency';

afterEach(closeAll);

/** What events carry instead of an ID. */
const idHashOf = (id: string): string => createHash('sha256').update(id).digest('hex').slice(0, 16);

interface Seen {
  id: string;
  isNew: boolean;
  keys: string[];
}

/** An app that reports the session it sees; POST /set?k=v sets k. */
async function reporter(store = new RecordingStore(), keys?: string[]) {
  const run = await start({ store }, (ctx) => {
    const k = ctx.query.k;
    if (ctx.method === 'POST' && typeof k === 'string') ctx.session.set(k, String(ctx.query.v ?? true));
    ctx.body = { id: ctx.session.id, isNew: ctx.session.isNew, keys: ctx.session.keys() } satisfies Seen;
  }, { keys });
  return { run, store };
}

describe('Request lifecycle: reading the cookie', () => {
  it('a request without a cookie gets a new, empty session with a fresh ID', async () => {
    const { run } = await reporter();
    const res = await call(run, new Jar());
    expect(res.status).to.equal(200);
    expect(res.body.isNew).to.equal(true);
    expect(res.body.keys).to.deep.equal([]);
    expect(res.body.id).to.match(HEX64);
  });

  it('a stored session is loaded from its cookie (isNew false, same ID, its data)', async () => {
    const { run } = await reporter();
    const jar = new Jar();
    const first = await call(run, jar, 'post', '/?k=a');
    const next = await call(run, jar, 'get');
    expect(next.body).to.deep.equal({ id: first.body.id, isNew: false, keys: ['a'] });
  });

  const MALFORMED: Array<[string, (stored: string) => string]> = [
    ['the stored ID in uppercase hex', (id) => id.toUpperCase()],
    ['63 hex characters (the stored ID minus one)', (id) => id.slice(0, 63)],
    ['65 hex characters (the stored ID plus one)', (id) => `${id}0`],
    ['64 non-hex characters', () => 'z'.repeat(64)],
    ['the stored ID with one non-hex character', (id) => `${id.slice(0, 63)}g`],
    ['the stored ID with a dash inside', (id) => `${id.slice(0, 32)}-${id.slice(33)}`],
  ];

  for (const [label, malform] of MALFORMED) {
    it(`a malformed cookie (${label}) gives a new session with a fresh ID and never reaches the store`, async () => {
      const { run, store } = await reporter();
      const owner = new Jar();
      const stored = (await call(run, owner, 'post', '/?k=secret')).body.id as string;
      const sent = malform(stored);
      store.calls.length = 0;

      const attacker = new Jar().set('session_id', sent);
      const res = await call(run, attacker, 'post', '/?k=mine');
      expect(res.status).to.equal(200);
      expect(res.body.isNew).to.equal(true);
      expect(res.body.keys).to.deep.equal(['mine']);
      expect(res.body.id).to.match(HEX64);
      expect(res.body.id).to.not.equal(sent);
      expect(res.body.id).to.not.equal(stored);
      expect(cookieNamed(res)?.value).to.equal(res.body.id);
      expect(store.ids, 'ids the store was called with').to.not.include(sent);
      expect(store.ids).to.not.include(stored);
      // The owner's session is untouched.
      expect((await call(run, owner, 'get')).body.keys).to.deep.equal(['secret']);
    });
  }

  it('an ID the store does not have gives a new session with a fresh ID, never the one sent', async () => {
    const { run, store } = await reporter();
    const sent = hexId('5');
    const res = await call(run, new Jar().set('session_id', sent), 'post', '/?k=a');
    expect(res.body.isNew).to.equal(true);
    expect(res.body.id).to.match(HEX64);
    expect(res.body.id).to.not.equal(sent);
    expect(cookieNamed(res)?.value).to.equal(res.body.id);
    expect(store.callsOf('set').map((c) => c.id)).to.deep.equal([res.body.id]);
    expect(store.map.has(sent)).to.equal(false);
  });

  it('a client-chosen ID is never adopted, however many times it is sent', async () => {
    const { run, store } = await reporter();
    const sent = hexId('c');
    for (let i = 0; i < 3; i++) {
      const res = await call(run, new Jar().set('session_id', sent), 'post', '/?k=a');
      expect(res.body.id).to.not.equal(sent);
    }
    expect(store.callsOf('set').map((c) => c.id)).to.not.include(sent);
    expect(store.map.has(sent)).to.equal(false);
  });

  it('an empty cookie value gives a new session', async () => {
    const { run } = await reporter();
    const res = await run.http.post('/?k=a').set('Cookie', 'session_id=');
    expect(res.body.isNew).to.equal(true);
    expect(res.body.id).to.match(HEX64);
  });

  it('other cookies on the request are ignored', async () => {
    const { run, store } = await reporter();
    const other = hexId('b');
    const res = await run.http.post('/?k=a').set('Cookie', `sid=${other}; session=${other}`);
    expect(res.body.isNew).to.equal(true);
    expect(store.ids).to.not.include(other);
  });
});

describe('Request lifecycle: the handler sees the session', () => {
  it('ctx.session is a Session before the handler runs, and middleware before the session middleware sees it after next()', async () => {
    const seen: Record<string, unknown> = {};
    const run = await start({ store: memoryStore() }, (ctx) => {
      seen.inHandler = ctx.session instanceof Session;
      ctx.session.set('a', 1);
      ctx.body = 'ok';
    }, {
      before: [async (ctx: Context, next: Next) => {
        seen.before = (ctx as { session?: unknown }).session === undefined;
        await next();
        seen.after = ctx.session instanceof Session && ctx.session.get('a') === 1;
      }],
    });
    await call(run, new Jar(), 'post');
    expect(seen).to.deep.equal({ before: true, inHandler: true, after: true });
  });
});

describe('Request lifecycle: commit and Set-Cookie', () => {
  it('a new session that is never changed gets no Set-Cookie and is not saved', async () => {
    const store = new RecordingStore();
    const run = await start({ store }, (ctx) => {
      ctx.body = { a: ctx.session.get('a') ?? null, has: ctx.session.has('a'), keys: ctx.session.keys() };
    });
    for (const method of ['get', 'post', 'put', 'delete'] as const) {
      const res = await call(run, new Jar(), method);
      expect(res.status, method).to.equal(200);
      expect(setCookies(res), method).to.deep.equal([]);
    }
    expect(store.callsOf('set')).to.deep.equal([]);
    expect(store.map.size).to.equal(0);
  });

  it('a new session whose delete() and clear() find nothing gets no Set-Cookie and is not saved', async () => {
    const store = new RecordingStore();
    const run = await start({ store }, (ctx) => {
      ctx.session.delete('a');
      ctx.session.clear();
      ctx.body = 'ok';
    });
    const res = await call(run, new Jar(), 'post');
    expect(setCookies(res)).to.deep.equal([]);
    expect(store.callsOf('set')).to.deep.equal([]);
  });

  it('the first save sends Set-Cookie with the new ID and stores the data under it', async () => {
    const store = new RecordingStore();
    const run = await start({ store }, (ctx) => {
      ctx.session.set('cart', ['apple']);
      ctx.body = { id: ctx.session.id };
    });
    const res = await call(run, new Jar(), 'post');
    const cookie = cookieNamed(res);
    expect(cookie?.value).to.equal(res.body.id);
    expect(store.callsOf('set').map((c) => c.id)).to.deep.equal([res.body.id]);
    expect(JSON.stringify(store.map.get(res.body.id))).to.include('"cart":["apple"]');
  });

  it('a read right after a save sends no Set-Cookie and writes nothing', async () => {
    const { run, store } = await reporter();
    const jar = new Jar();
    await call(run, jar, 'post', '/?k=a');
    const writes = store.callsOf('set').length;
    const res = await call(run, jar, 'get');
    expect(res.body.keys).to.deep.equal(['a']);
    expect(setCookies(res)).to.deep.equal([]);
    expect(store.callsOf('set').length).to.equal(writes);
  });

  it('changing a stored session keeps its ID: any cookie sent names the same ID', async () => {
    const { run, store } = await reporter();
    const jar = new Jar();
    const id = (await call(run, jar, 'post', '/?k=a')).body.id;
    const res = await call(run, jar, 'post', '/?k=b');
    expect(res.body.id).to.equal(id);
    const cookie = cookieNamed(res);
    if (cookie !== undefined) expect(cookie.value).to.equal(id);
    expect(store.callsOf('set').map((c) => c.id).every((written) => written === id)).to.equal(true);
    expect((await call(run, jar, 'get')).body.keys.sort()).to.deep.equal(['a', 'b']);
  });
});

describe('Request lifecycle: a handler that throws', () => {
  it('changes made before the handler threw are committed, and the error status reaches the client', async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      if (ctx.path === '/seed') ctx.session.set('step', 1);
      if (ctx.path === '/fail') {
        ctx.session.set('step', 2);
        ctx.throw(409, 'conflict');
      }
      ctx.body = { step: ctx.session.get('step') ?? null };
    });
    const jar = new Jar();
    await call(run, jar, 'post', '/seed');
    const failed = await call(run, jar, 'post', '/fail');
    expect(failed.status).to.equal(409);
    expect(failed.text).to.equal('conflict');
    expect((await call(run, jar, 'get', '/')).body).to.deep.equal({ step: 2 });
  });

  it('a new session changed before the handler threw is saved and its cookie still reaches the client', async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      if (ctx.path === '/fail') {
        ctx.session.set('draft', 'kept');
        ctx.throw(400, 'bad input');
      }
      ctx.body = { draft: ctx.session.get('draft') ?? null };
    });
    const jar = new Jar();
    const failed = await call(run, jar, 'post', '/fail');
    expect(failed.status).to.equal(400);
    expect(cookieNamed(failed)?.value).to.match(HEX64);
    expect((await call(run, jar, 'get', '/')).body).to.deep.equal({ draft: 'kept' });
  });

  it('an error without a status gives 500 and the change is still committed', async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      if (ctx.path === '/seed') ctx.session.set('n', 1);
      if (ctx.path === '/fail') {
        ctx.session.set('n', 2);
        throw new Error('boom');
      }
      ctx.body = { n: ctx.session.get('n') ?? null };
    });
    const jar = new Jar();
    await call(run, jar, 'post', '/seed');
    expect((await call(run, jar, 'post', '/fail')).status).to.equal(500);
    expect((await call(run, jar, 'get', '/')).body).to.deep.equal({ n: 2 });
  });

  it('the error the app sees is the handler\'s own error', async () => {
    const thrown = Object.assign(new Error('teapot'), { status: 418 });
    const run = await start({ store: memoryStore() }, (ctx) => {
      ctx.session.set('a', 1);
      throw thrown;
    });
    const res = await call(run, new Jar(), 'post');
    expect(res.status).to.equal(418);
    expect(run.errors).to.have.length(1);
    expect(run.errors[0]).to.equal(thrown);
  });

  it('an error an upstream middleware catches still leaves the change committed', async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      if (ctx.path === '/fail') {
        ctx.session.set('x', 'saved');
        throw new Error('handled upstream');
      }
      ctx.body = { x: ctx.session.get('x') ?? null };
    }, {
      before: [async (ctx: Context, next: Next) => {
        try {
          await next();
        } catch {
          ctx.status = 202;
          ctx.body = 'handled';
        }
      }],
    });
    const jar = new Jar();
    const res = await call(run, jar, 'post', '/fail');
    expect(res.status).to.equal(202);
    expect((await call(run, jar, 'get', '/')).body).to.deep.equal({ x: 'saved' });
  });
});

describe('Request lifecycle: a destroy() after the session middleware is done', () => {
  it('a request that comes after a late destroy() (in a middleware around the session), while another request holds the session, starts a new session of its own', async () => {
    const store = memoryStore();
    const slowHolds = gate();
    const slowIn = gate();
    const setAsked = gate();
    const logoutAfterwards = async (ctx: Context, next: Next) => {
      await next();
      if (ctx.path === '/late-logout') await ctx.session.destroy(); // after the session middleware returned
    };
    const run = await start({
      store,
      lockMode: (ctx) => {
        if (ctx.path === '/set') setAsked.open();
        return ctx.method === 'GET' ? 'read' : 'write';
      },
    }, async (ctx) => {
      if (ctx.path === '/login' || ctx.path === '/set') ctx.session.set('user', ctx.path === '/login' ? 'ada' : 'bob');
      if (ctx.path === '/slow') {
        slowIn.open();
        await slowHolds.promise;
      }
      ctx.body = 'ok';
    }, { before: [logoutAfterwards] });
    const jar = new Jar();
    await call(run, jar, 'post', '/login');
    const id = jar.get('session_id') as string;

    const slow = call(run, new Jar().set('session_id', id), 'get', '/slow'); // holds the session's lock (shared)
    await slowIn.promise;
    expect((await call(run, new Jar().set('session_id', id), 'get', '/late-logout')).status).to.equal(200);
    expect(await store.get(id), 'the session after the late destroy()').to.equal(undefined);
    const later = call(run, new Jar().set('session_id', id), 'post', '/set'); // asked for the lock after the removal
    await setAsked.promise;
    slowHolds.open();
    expect((await slow).status).to.equal(200);
    const res = await later;

    expect(res.status).to.equal(200);
    const fresh = cookieNamed(res)?.value;
    expect(fresh, 'the new session in Set-Cookie').to.match(HEX64).and.not.equal(id);
    expect(await store.get(fresh as string)).to.deep.include({ data: { user: 'bob' } });
  });
});

describe('Request lifecycle: the session cookie on error responses', () => {
  it("an error object the app throws on many requests never carries one user's cookie to another", async () => {
    const shared = Object.assign(new Error('not allowed'), { status: 403, expose: true });
    const run = await start({ store: memoryStore() }, (ctx) => {
      if (ctx.path === '/start') ctx.session.set('returnTo', '/account');
      throw shared;
    });
    const first = await call(run, new Jar(), 'post', '/start');
    expect(first.status).to.equal(403);
    expect(cookieNamed(first)?.value, "the first request's new session").to.match(HEX64);

    const second = await call(run, new Jar(), 'get', '/other');
    expect(second.status).to.equal(403);
    expect(setCookies(second), 'Set-Cookie for a request that started no session').to.deep.equal([]);
    expect(Object.keys(shared), "the error's own properties after both").to.deep.equal(['status', 'expose']);
  });

  /** What a handler throws, and the status Koa answers it with. */
  const THROWN: Array<[string, () => never, number]> = [
    ['a string', () => {
      throw 'backend down';
    }, 500],
    ['an error with headers of its own', () => {
      throw Object.assign(new Error('who are you'), { status: 401, headers: { 'WWW-Authenticate': 'Basic' } });
    }, 401],
    ['an Error from another realm (a vm context) with a status', () => {
      throw Object.assign(runInNewContext('new Error("teapot")') as Error, { status: 418 });
    }, 418],
  ];
  for (const [label, fail, status] of THROWN) {
    it(`${label} thrown after regenerate(): the response keeps its status, the new ID's cookie still reaches the client, and the session with it`, async () => {
      const run = await start({ store: memoryStore() }, async (ctx) => {
        if (ctx.path === '/relogin') {
          await ctx.session.regenerate();
          ctx.session.set('user', 'bob');
          fail();
        }
        if (ctx.method === 'POST') ctx.session.set('user', 'ann');
        ctx.body = { id: ctx.session.id, user: ctx.session.get('user') ?? null };
      });
      const jar = new Jar();
      const before = (await call(run, jar, 'post', '/login')).body.id as string;
      const failed = await call(run, jar, 'post', '/relogin');
      expect(failed.status, 'the status of what was thrown').to.equal(status);
      const renewed = cookieNamed(failed)?.value;
      expect(renewed, 'the new ID in Set-Cookie').to.match(HEX64).and.not.equal(before);

      const after = await call(run, jar, 'get', '/');
      expect(after.body).to.deep.equal({ id: renewed, user: 'bob' });
    });
  }

  it("the error's own headers are sent beside the cookie and left as they were", async () => {
    const thrown = Object.assign(new Error('who are you'), {
      status: 401,
      expose: true,
      headers: { 'WWW-Authenticate': 'Basic', 'cache-control': 'no-store' },
    });
    const run = await start({ store: memoryStore() }, (ctx) => {
      ctx.session.set('tries', 1);
      throw thrown;
    });
    const res = await call(run, new Jar(), 'post');
    expect(res.status).to.equal(401);
    expect(res.headers['www-authenticate']).to.equal('Basic');
    expect(res.headers['cache-control']).to.equal('no-store, no-cache="Set-Cookie"');
    expect(cookieNamed(res)?.value).to.match(HEX64);
    expect(thrown.headers).to.deep.equal({ 'WWW-Authenticate': 'Basic', 'cache-control': 'no-store' });
  });

  const OWN_CACHE_HEADERS: Array<[string, Record<string, string>, string, string]> = [
    ['already the ones the cookie needs', { Vary: 'Cookie', 'Cache-Control': 'no-cache="Set-Cookie"' }, 'Cookie', 'no-cache="Set-Cookie"'],
    ['Vary: * and a Vary of its own', { vary: '*' }, '*', 'no-cache="Set-Cookie"'],
    ['others', { Vary: 'Accept', 'Cache-Control': 'private' }, 'Accept, Cookie', 'private, no-cache="Set-Cookie"'],
  ];
  for (const [what, headers, vary, cacheControl] of OWN_CACHE_HEADERS) {
    it(`an error whose own cache headers are ${what} sends each item once`, async () => {
      const run = await start({ store: memoryStore() }, (ctx) => {
        ctx.session.set('tries', 1);
        throw Object.assign(new Error('bad input'), { status: 400, expose: true, headers });
      });
      const res = await call(run, new Jar(), 'post');
      expect(res.status).to.equal(400);
      expect([res.headers.vary, res.headers['cache-control']]).to.deep.equal([vary, cacheControl]);
      expect(cookieNamed(res)?.value).to.match(HEX64);
    });
  }

  it("a cookie the error sets in its own headers is sent beside the session cookie", async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      ctx.session.set('tries', 1);
      throw Object.assign(new Error('slow down'), { status: 429, expose: true, headers: { 'Set-Cookie': 'retry_after=30; path=/' } });
    });
    const res = await call(run, new Jar(), 'post');
    expect(res.status).to.equal(429);
    expect(setCookies(res).map((c) => c.name)).to.deep.equal(['retry_after', 'session_id']);
    expect(cookieNamed(res, 'retry_after')?.value).to.equal('30');
    expect(cookieNamed(res)?.value).to.match(HEX64);
  });

  it('a sealed error thrown after a change still gets its own status and message, and the app hears it', async () => {
    const sealed = Object.seal(Object.assign(new Error('not allowed'), { status: 403, expose: true }));
    const run = await start({ store: memoryStore() }, (ctx) => {
      ctx.session.set('tries', 1);
      throw sealed;
    });
    const res = await call(run, new Jar(), 'post');
    expect(res.status).to.equal(403);
    expect(res.text).to.equal('not allowed');
    expect(run.errors).to.deep.equal([sealed]);
  });

  it("an error response carries the session cookie and its cache headers, none of the app's other headers, and error logs never show the ID", async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      ctx.set('Cache-Control', 'public, max-age=31536000');
      ctx.vary('Accept-Encoding');
      ctx.cookies.set('flash', 'Saved!');
      ctx.session.set('draft', 'kept');
      throw new Error('boom');
    });
    const logged: string[] = [];
    run.app.on('error', (error: unknown) => {
      const headers = JSON.stringify((error as { headers?: unknown }).headers) ?? 'none'; // as a logger of HTTP errors' headers would
      logged.push(JSON.stringify(error), inspect(error), inspect(error, { showHidden: true }), headers);
    });
    const res = await call(run, new Jar(), 'post');
    expect(res.status).to.equal(500);
    const id = cookieNamed(res)?.value as string;
    expect(id).to.match(HEX64);
    expect(setCookies(res).map((c) => c.name)).to.deep.equal(['session_id']);
    expect(res.headers['cache-control']).to.equal('no-cache="Set-Cookie"');
    expect(res.headers.vary).to.equal('Cookie');
    expect(logged).to.have.length(4);
    for (const line of logged) expect(line).to.not.include(id);
  });

  for (const [what, ownHandler] of [
    ['sends its headers itself (writeHead)', function (this: Context, error: unknown) {
      if (error === null || error === undefined) return; // as Koa's: it is also called when the response finishes
      this.res.writeHead(500, { 'Content-Type': 'application/json' });
      this.res.end('{"error":"x"}');
    }],
    ['leaves the headers as they were', function (this: Context, error: unknown) {
      if (error === null || error === undefined) return;
      this.res.statusCode = 500;
      this.res.end('oops');
    }],
  ] as const) {
    it(`an error handler of the app's own that ${what} ends the response, with the session cookie once at most`, async () => {
      const run = await start({ store: memoryStore() }, (ctx) => {
        ctx.session.set('tries', 1);
        throw new Error('boom');
      });
      run.app.context.onerror = ownHandler as Context['onerror'];
      const res = await call(run, new Jar(), 'post');
      expect(res.status).to.equal(500);
      expect(setCookies(res).filter((c) => c.name === 'session_id').length).to.be.at.most(1);
    });
  }

  it("headers an error class gives all its errors (a getter on the prototype) are sent beside the cookie", async () => {
    class Unauthorized extends Error {
      status = 401;
      expose = true;
      get headers(): Record<string, string> {
        return { 'WWW-Authenticate': 'Bearer realm="api"' };
      }
    }
    const run = await start({ store: memoryStore() }, (ctx) => {
      ctx.session.set('tries', 1);
      throw new Unauthorized('sign in');
    });
    const res = await call(run, new Jar(), 'post');
    expect(res.status).to.equal(401);
    expect(res.headers['www-authenticate']).to.equal('Bearer realm="api"');
    expect(cookieNamed(res)?.value).to.match(HEX64);
  });

  it("with two session() middlewares of two cookies, an error response carries both cookies; 'error' listeners that re-emit the error, or replace its headers, change nothing of them, see none of them, and are the app's own only", async () => {
    const setAdmin = async (ctx: Context, next: Next) => {
      ctx.session.set('admin', true); // the session of the admin_sid cookie, before the inner session() serves its own
      await next();
    };
    const run = await start({ store: memoryStore() }, (ctx) => {
      ctx.session.set('user', 'ada');
      throw new Error('boom');
    }, { before: [session({ store: memoryStore(), cookieName: 'admin_sid' }), setAdmin] });
    const seen: string[] = [];
    const listeners: number[] = [];
    run.app.on('error', (error: Error & { headers?: unknown }, ctx: Context) => {
      if (error.message !== 'boom') return;
      listeners.push(run.app.listenerCount('error'));
      run.app.emit('error', new Error('wrapped'), ctx); // as an app forwarding errors to a tracker
      error.headers = { 'X-Request-Failed': '1' };
    });
    run.app.on('error', (error: { headers?: unknown }) => seen.push(inspect(error, { showHidden: true, getters: true }), JSON.stringify(error.headers) ?? ''));

    const res = await call(run, new Jar(), 'post');

    expect(res.status).to.equal(500);
    expect(setCookies(res).map((c) => c.name).sort()).to.deep.equal(['admin_sid', 'session_id']);
    expect(res.headers['x-request-failed']).to.equal('1');
    expect(listeners, "the app's listeners only").to.deep.equal([run.app.listenerCount('error')]);
    for (const cookie of setCookies(res)) for (const line of seen) expect(line).to.not.include(cookie.value);
  });

  it('an error a middleware before the session throws in place of the handler\'s still carries the cookie', async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      if (ctx.method === 'POST') {
        ctx.session.set('draft', 'kept');
        throw new Error('database down');
      }
      ctx.body = { draft: ctx.session.get('draft') ?? null };
    }, {
      before: [async (_ctx: Context, next: Next) => {
        try {
          await next();
        } catch {
          throw Object.assign(new Error('try again later'), { status: 503, expose: true });
        }
      }],
    });
    const jar = new Jar();
    const res = await call(run, jar, 'post', '/');
    expect(res.status).to.equal(503);
    expect(cookieNamed(res)?.value).to.match(HEX64);
    expect((await call(run, jar, 'get', '/')).body).to.deep.equal({ draft: 'kept' });
  });
});

/** Server-sent events: the headers go out at once, the body (`text`) streams after. */
function streamEvents(ctx: Context, text: string): void {
  ctx.status = 200;
  ctx.type = 'text/event-stream';
  ctx.flushHeaders();
  const body = new PassThrough();
  ctx.body = body;
  body.end(text);
}

describe('Request lifecycle: a response whose headers went out before the commit', () => {
  /** An app with a stored session (POST /login) and routes that send their headers before the commit. */
  async function streaming(options: SessionOptions = {}) {
    const store = memoryStore();
    const run = await start({ store, ...options }, async (ctx) => {
      if (ctx.path === '/login') ctx.session.set('user', 'ann');
      if (ctx.path === '/events') {
        streamEvents(ctx, `data: hello ${String(ctx.session.get('user'))}\n\n`);
        if (ctx.method === 'POST') ctx.session.set('seen', true);
        return;
      }
      if (ctx.path.startsWith('/raw')) {
        // The app answers on ctx.res itself.
        ctx.respond = false;
        ctx.res.writeHead(302, { Location: '/' }).end();
        if (ctx.path === '/raw/set') ctx.session.set('note', 'kept');
        if (ctx.path === '/raw/regenerate') {
          await ctx.session.regenerate();
          ctx.session.set('user', 'bob');
        }
        return;
      }
      ctx.body = { user: ctx.session.get('user') ?? null, seen: ctx.session.get('seen') ?? null, note: ctx.session.get('note') ?? null };
    });
    return { run, store };
  }

  /**
   * POST /login, keeping its cookie in `jar` even when its `expires` has
   * already passed: with a one-second maxAge, that date (in whole seconds,
   * cut down) can fall before the response is read.
   */
  async function login(run: Running, jar: Jar): Promise<string> {
    const id = cookieNamed(await call(run, jar, 'post', '/login'))?.value;
    expect(id, 'the login cookie').to.match(HEX64);
    jar.set('session_id', id as string);
    return id as string;
  }

  it('a streamed response whose session is due for an expiry push still streams to the end', async () => {
    const { run } = await streaming({ maxAge: 1000 });
    const jar = new Jar();
    await login(run, jar);
    await new Promise((resolve) => setTimeout(resolve, 150)); // past a tenth of maxAge: the push is due

    const res = await run.http.get('/events').set('Cookie', jar.header()).timeout(5000);
    expect(res.status).to.equal(200);
    expect(res.text).to.equal('data: hello ann\n\n');
    expect(run.errors, 'errors the app saw').to.deep.equal([]);
  });

  it("a streamed response's changes to a stored session are stored, and the response streams to the end", async () => {
    const { run } = await streaming();
    const jar = new Jar();
    await call(run, jar, 'post', '/login');
    const res = await run.http.post('/events').set('Cookie', jar.header()).timeout(5000);
    expect(res.text).to.equal('data: hello ann\n\n');
    expect((await call(run, jar, 'get', '/')).body).to.deep.equal({ user: 'ann', seen: true, note: null });
    expect(run.errors).to.deep.equal([]);
  });

  it("a streamed response whose commit fails in the store still streams to the end, and the app hears of the failure", async () => {
    class FailingCommits extends MemoryStore {
      override async applyChanges(): Promise<boolean> {
        throw new Error('store down');
      }
    }
    const store = new FailingCommits();
    const run = await start({ store }, (ctx) => {
      if (ctx.path === '/login') ctx.session.set('user', 'ann');
      if (ctx.path !== '/events') return;
      streamEvents(ctx, 'data: hello\n\n');
      ctx.session.set('seen', true);
    });
    const jar = new Jar();
    await call(run, jar, 'post', '/login');
    const res = await run.http.post('/events').set('Cookie', jar.header()).timeout(5000);
    store.close();
    expect([res.status, res.text]).to.deep.equal([200, 'data: hello\n\n']);
    expect(run.errors.map((error) => (error as { code?: string }).code)).to.deep.equal(['ESESSIONSTORE']);
  });

  it("a session:lock-timeout listener that throws, on a streamed response's commit, still lets the response end; the app hears of the listener's error", async () => {
    const store = memoryStore();
    const eventsHolds = gate();
    const slowHolds = gate();
    const run = await start({ store, lockTimeout: 150 }, async (ctx) => {
      if (ctx.path === '/login') ctx.session.set('user', 'ann');
      if (ctx.path === '/events') {
        eventsHolds.open();
        await slowHolds.promise; // the read below shares the lock with this one
        ctx.session.set('seen', true); // a read-mode change: the commit waits for the other read to leave, and times out
        streamEvents(ctx, 'data: hello\n\n');
      }
      if (ctx.path === '/slow') {
        slowHolds.open();
        await new Promise((resolve) => setTimeout(resolve, 400));
        ctx.body = 'slow';
      }
    });
    run.app.on('session:lock-timeout', () => {
      throw new Error('listener failed');
    });
    const jar = new Jar();
    await call(run, jar, 'post', '/login');
    const streaming = run.http.get('/events').set('Cookie', jar.header()).timeout(5000).then((res) => res); // sent now
    await eventsHolds.promise; // /events holds the shared lock: sent first is not there first on a loaded machine
    const [res, slow] = await Promise.all([streaming, call(run, jar, 'get', '/slow')]);
    expect([res.status, res.text]).to.deep.equal([200, 'data: hello\n\n']);
    expect(slow.status).to.equal(200);
    expect(run.errors.map((error) => (error as Error).message)).to.deep.equal(['listener failed']);
  });

  it('with ctx.respond = false, changes to a stored session are stored, and nothing fails', async () => {
    const { run } = await streaming();
    const jar = new Jar();
    await call(run, jar, 'post', '/login');
    expect((await call(run, jar, 'get', '/raw/set')).status).to.equal(302);
    expect((await call(run, jar, 'get', '/')).body).to.deep.equal({ user: 'ann', seen: null, note: 'kept' });
    expect(run.errors).to.deep.equal([]);
  });

  it('with ctx.respond = false, a change leaves the expiry as it was, so the next request pushes store and cookie together', async () => {
    const { run, store } = await streaming({ maxAge: 1000 });
    const jar = new Jar();
    const id = await login(run, jar);
    const pushedAt = ((await store.get(id)) as { touchedAt: number }).touchedAt;
    await new Promise((resolve) => setTimeout(resolve, 150)); // past a tenth of maxAge: a push is due

    expect((await call(run, jar, 'get', '/raw/set')).status).to.equal(302);
    const stored = (await store.get(id)) as { data: Record<string, unknown>; touchedAt: number };
    expect(stored.data).to.deep.equal({ user: 'ann', note: 'kept' });
    expect(stored.touchedAt, 'push time after a change no cookie could follow').to.equal(pushedAt);
    const next = await call(run, jar, 'get', '/');
    expect(cookieNamed(next)?.value, 'the next response pushes the expiry, cookie and all').to.equal(id);
  });

  it('with ctx.respond = false, a read that is due to push the expiry leaves it as it was, so the next request pushes store and cookie together', async () => {
    const { run, store } = await streaming({ maxAge: 10_000 });
    const jar = new Jar();
    const id = await login(run, jar);
    const pushedAt = ((await store.get(id)) as { touchedAt: number }).touchedAt;
    await sleep(1_100); // past a tenth of maxAge: a push is due, but no cookie could follow it

    const raw = await call(run, jar, 'get', '/raw');
    expect([raw.status, setCookies(raw)]).to.deep.equal([302, []]);
    await sleep(50); // the commit ends after the response
    expect(((await store.get(id)) as { touchedAt: number }).touchedAt, 'push time after the read').to.equal(pushedAt);
    const next = await call(run, jar, 'get', '/');
    expect(cookieNamed(next)?.value, 'the next response pushes the expiry, cookie and all').to.equal(id);
    expect(((await store.get(id)) as { touchedAt: number }).touchedAt, 'push time after the next request').to.be.above(pushedAt);
  });

  it('with ctx.respond = false, a change does not keep the stored session past the end its last push gave it', async () => {
    const { run, store } = await streaming({ maxAge: 1000 });
    const jar = new Jar();
    const id = await login(run, jar);
    const savedBy = Date.now();
    await sleep(400); // a push would be due, but no cookie could follow it

    expect((await call(run, jar, 'get', '/raw/set')).status).to.equal(302);
    await sleep(savedBy + 1_200 - Date.now()); // past the end the login gave it, before the end a push at the change would give

    expect(await store.get(id), 'what the store still holds').to.equal(undefined);
  });

  it('with rolling and ctx.respond = false, a read re-sends no cookie and the process is not warned about one', async () => {
    const { run } = await streaming({ rolling: true });
    const jar = new Jar();
    await call(run, jar, 'post', '/login');
    const warnings = await warningsDuring('KOA_LOCKED_SESSION_HEADERS_SENT_IN_COMMIT', async () => {
      const res = await call(run, jar, 'get', '/raw');
      expect([res.status, setCookies(res)]).to.deep.equal([302, []]);
      await sleep(50); // the commit ends after the response
    });
    expect(warnings).to.deep.equal([]);
    expect(run.errors).to.deep.equal([]);
  });

  it('headers sent during the commit, by a task the handler did not await, fail nothing, and the process is warned', async () => {
    class SlowStore extends MemoryStore {
      override async set(id: string, data: SessionData, maxAgeMs: number): Promise<void> {
        await new Promise((resolve) => setTimeout(resolve, 100));
        return super.set(id, data, maxAgeMs);
      }
    }
    const store = new SlowStore();
    const run = await start({ store }, (ctx) => {
      ctx.session.set('visited', true);
      ctx.respond = false;
      setTimeout(() => ctx.res.writeHead(200).end('proxied'), 20); // answered while the session is saved
    });
    const warnings = await warningsDuring('KOA_LOCKED_SESSION_HEADERS_SENT_IN_COMMIT', async () => {
      const res = await call(run, new Jar(), 'post');
      expect([res.status, res.text]).to.deep.equal([200, 'proxied']);
      await new Promise((resolve) => setTimeout(resolve, 150)); // the commit ends after the response
    });
    store.close();
    expect(warnings).to.have.length(1);
    expect(run.errors).to.deep.equal([]);
  });

  it('with ctx.respond = false, a new session that could get no cookie is not stored, and the process is warned', async () => {
    const { run, store } = await streaming();
    const warnings = await warningsDuring('KOA_LOCKED_SESSION_HEADERS_SENT', async () => {
      const res = await call(run, new Jar(), 'get', '/raw/set');
      expect(res.status).to.equal(302);
      expect(setCookies(res)).to.deep.equal([]);
    });
    expect(store.size, 'sessions stored').to.equal(0);
    expect(warnings).to.have.length(1);
    expect(run.errors).to.deep.equal([]);
  });

  it('with ctx.respond = false, a regenerate() that could send no cookie leaves the session as it was', async () => {
    const { run, store } = await streaming();
    const jar = new Jar();
    await call(run, jar, 'post', '/login');
    const warnings = await warningsDuring('KOA_LOCKED_SESSION_HEADERS_SENT', async () => {
      expect((await call(run, jar, 'get', '/raw/regenerate')).status).to.equal(302);
    });
    expect(warnings).to.have.length(1);
    // The old ID still holds the old data: never bob's login under an ID the client chose before it.
    expect((await call(run, jar, 'get', '/')).body).to.deep.equal({ user: 'ann', seen: null, note: null });
    expect(store.size, 'sessions stored').to.equal(1);
    expect(run.errors).to.deep.equal([]);
  });
});

describe('Request lifecycle: signed cookies', () => {
  it('with app.keys the session cookie is signed: a .sig cookie goes with it, with the same attributes', async () => {
    const { run } = await reporter(new RecordingStore(), ['k1']);
    const res = await call(run, new Jar(), 'post', '/?k=a');
    const value = cookieNamed(res);
    const sig = cookieNamed(res, 'session_id.sig');
    expect(value?.value).to.equal(res.body.id);
    expect(sig?.value).to.be.a('string').and.not.equal('');
    expect(sig?.attrs.path).to.equal(value?.attrs.path);
    expect(sig?.attrs.httponly).to.equal(value?.attrs.httponly);
    expect(sig?.attrs.samesite).to.equal(value?.attrs.samesite);
  });

  it('a signed cookie with its signature brings the session back', async () => {
    const { run } = await reporter(new RecordingStore(), ['k1']);
    const jar = new Jar();
    const first = await call(run, jar, 'post', '/?k=a');
    const next = await call(run, jar, 'get');
    expect(next.body).to.deep.equal({ id: first.body.id, isNew: false, keys: ['a'] });
  });

  it('a tampered signature gives a new session, and the ID is never looked up', async () => {
    const { run, store } = await reporter(new RecordingStore(), ['k1']);
    const jar = new Jar();
    const id = (await call(run, jar, 'post', '/?k=a')).body.id;
    const sig = jar.get('session_id.sig') as string;
    const tampered = `${sig.slice(0, -1)}${sig.endsWith('A') ? 'B' : 'A'}`;
    store.calls.length = 0;
    const res = await call(run, new Jar().set('session_id', id).set('session_id.sig', tampered), 'get');
    expect(res.body.isNew).to.equal(true);
    expect(res.body.id).to.not.equal(id);
    expect(store.ids).to.not.include(id);
  });

  it('a missing signature gives a new session, and the ID is never looked up', async () => {
    const { run, store } = await reporter(new RecordingStore(), ['k1']);
    const jar = new Jar();
    const id = (await call(run, jar, 'post', '/?k=a')).body.id;
    store.calls.length = 0;
    const res = await call(run, new Jar().set('session_id', id), 'get');
    expect(res.body.isNew).to.equal(true);
    expect(res.body.id).to.not.equal(id);
    expect(store.ids).to.not.include(id);
  });

  it('one session\'s signature does not vouch for another session\'s ID', async () => {
    const { run } = await reporter(new RecordingStore(), ['k1']);
    const alice = new Jar();
    const bob = new Jar();
    await call(run, alice, 'post', '/?k=alice');
    const bobId = (await call(run, bob, 'post', '/?k=bob')).body.id;
    const mixed = new Jar().set('session_id', bobId).set('session_id.sig', alice.get('session_id.sig') as string);
    const res = await call(run, mixed, 'get');
    expect(res.body.isNew).to.equal(true);
    expect(res.body.id).to.not.equal(bobId);
  });

  it('a cookie signed with a key not in app.keys gives a new session', async () => {
    const store = new RecordingStore();
    const other = await reporter(store, ['someone-else']);
    const mine = await reporter(store, ['k1']);
    const jar = new Jar();
    const id = (await call(other.run, jar, 'post', '/?k=a')).body.id;
    const res = await call(mine.run, jar, 'get');
    expect(res.body.isNew).to.equal(true);
    expect(res.body.id).to.not.equal(id);
  });

  it('without app.keys the cookie is not signed', async () => {
    const { run } = await reporter();
    const res = await call(run, new Jar(), 'post', '/?k=a');
    expect(cookieNamed(res)?.value).to.match(HEX64);
    expect(cookieNamed(res, 'session_id.sig')).to.equal(undefined);
  });

  it('signed: false with app.keys sends an unsigned cookie that brings the session back on its own', async () => {
    const run = await start({ store: memoryStore(), signed: false }, (ctx) => {
      if (ctx.method === 'POST') ctx.session.set('a', 1);
      ctx.body = { a: ctx.session.get('a') ?? null };
    }, { keys: ['k1'] });
    const jar = new Jar();
    const res = await call(run, jar, 'post');
    expect(cookieNamed(res, 'session_id.sig')).to.equal(undefined);
    expect((await call(run, jar, 'get')).body).to.deep.equal({ a: 1 });
  });

  it('signed: true without app.keys fails the request with an error naming app.keys, before the handler runs', async () => {
    const store = new RecordingStore();
    let ran = false;
    const run = await start({ store, signed: true }, (ctx) => {
      ran = true;
      ctx.session.set('a', 1);
      ctx.body = 'ok';
    });
    const res = await call(run, new Jar(), 'post');
    expect(res.status).to.be.at.least(500);
    expect(ran, 'handler ran').to.equal(false);
    expect(setCookies(res)).to.deep.equal([]);
    expect(store.calls).to.deep.equal([]);
    expect(run.errors).to.have.length(1);
    expect((run.errors[0] as Error).message).to.include('app.keys');
  });

  it('signed: true without app.keys fails even a request that would not touch the session', async () => {
    let ran = false;
    const run = await start({ store: memoryStore(), signed: true }, (ctx) => {
      ran = true;
      ctx.body = 'ok';
    });
    const res = await call(run, new Jar(), 'get');
    expect(res.status).to.be.at.least(500);
    expect(ran).to.equal(false);
  });

  const BAD_KEYS: Array<[string, unknown, string, false | undefined]> = [
    ['[undefined] (an unset environment variable)', [undefined], 'app.keys[0] is undefined', undefined],
    ["['good', '']", ['good', ''], 'app.keys[1] is an empty string', undefined],
    ["['good', 42] (a number)", ['good', 42], 'app.keys[1] is a number', undefined],
    ["['good', { secret }] (an object)", ['good', { secret: 'x' }], 'app.keys[1] is an object', undefined],
    ['[] (an empty array)', [], 'app.keys is an empty array', undefined],
    ['[] with signed: false (Koa cannot read any cookie with it)', [], 'app.keys is an empty array', false],
    ["'secret' (a bare string)", 'secret', 'app.keys must be an array', undefined],
    ['{ sign } (an object with no index(), so not a whole Keygrip)', { sign: () => 'signature' }, 'app.keys must be an array', undefined],
  ];
  for (const [label, keys, message, signed] of BAD_KEYS) {
    it(`app.keys = ${label} fails the request with a SessionConfigError naming it, before the handler runs, storing nothing`, async () => {
      const store = new RecordingStore();
      let ran = false;
      const run = await start({ store, signed }, (ctx) => {
        ran = true;
        ctx.session.set('a', 1);
        ctx.body = 'ok';
      });
      (run.app as { keys: unknown }).keys = keys;
      const res = await call(run, new Jar(), 'post');
      expect(res.status).to.equal(500);
      expect(ran, 'handler ran').to.equal(false);
      expect(setCookies(res)).to.deep.equal([]);
      expect(store.calls).to.deep.equal([]);
      expect(run.errors).to.have.length(1);
      const error = run.errors[0] as { name: string; code: string; message: string };
      expect([error.name, error.code]).to.deep.equal(['SessionConfigError', 'ESESSIONCONFIG']);
      expect(error.message).to.include(message);
    });
  }

  it('with signed: false, app.keys is not used, so an unusable one ([undefined]) does not fail the request', async () => {
    const run = await start({ store: memoryStore(), signed: false }, (ctx) => {
      if (ctx.method === 'POST') ctx.session.set('a', 1);
      ctx.body = { a: ctx.session.get('a') ?? null };
    });
    (run.app as { keys: unknown }).keys = [undefined];
    const jar = new Jar();
    expect((await call(run, jar, 'post')).status).to.equal(200);
    expect((await call(run, jar, 'get')).body).to.deep.equal({ a: 1 });
  });

  it('app.keys may hold Buffers: they sign and verify like strings', async () => {
    const { run } = await reporter(new RecordingStore());
    // Bytes that are not UTF-8 (as randomBytes gives): a key turned into a string on the way would sign differently.
    const key = Buffer.from([0xff, 0x00, 0x80, 0xfe, 0xc3, 0x28, 0x9f, 0x41]);
    (run.app as { keys: unknown }).keys = [key];
    const jar = new Jar();
    const res = await call(run, jar, 'post', '/?k=a');
    // Keygrip's signature under the buffer's bytes, as ctx.cookies would make it.
    const keygrip = createHmac('sha1', key).update(`session_id=${res.body.id}`).digest('base64url');
    expect(cookieNamed(res, 'session_id.sig')?.value).to.equal(keygrip);
    expect((await call(run, jar, 'get')).body).to.deep.equal({ id: res.body.id, isNew: false, keys: ['a'] });
    // Rotated to second place, the buffer still verifies its cookie (keygripSignature, not the first key's HmacSha1).
    (run.app as { keys: unknown }).keys = [Buffer.from([0x01, 0xff]), key];
    expect((await call(run, jar, 'get')).body).to.deep.equal({ id: res.body.id, isNew: false, keys: ['a'] });
  });

  it('a Buffer key rewritten in place signs and verifies as the new key, as Keygrip reads it afresh', async () => {
    const { run } = await reporter(new RecordingStore());
    const key = Buffer.from([0xff, 0x00, 0x80, 0xfe, 0xc3, 0x28, 0x9f, 0x41]);
    (run.app as { keys: unknown }).keys = [key];
    const jar = new Jar();
    const old = (await call(run, jar, 'post', '/?k=a')).body.id;
    expect((await call(run, jar, 'get')).body).to.deep.equal({ id: old, isNew: false, keys: ['a'] }); // its signature now remembered
    key.set([0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80]);
    // The cookie signed under the old bytes no longer verifies: a new, empty session.
    expect((await call(run, jar, 'get')).body.isNew).to.equal(true);
    const res = await call(run, jar, 'post', '/?k=b');
    const keygrip = createHmac('sha1', key).update(`session_id=${res.body.id}`).digest('base64url');
    expect(cookieNamed(res, 'session_id.sig')?.value).to.equal(keygrip);
    expect((await call(run, jar, 'get')).body).to.deep.equal({ id: res.body.id, isNew: false, keys: ['b'] });
  });

  it('key rotation: a cookie signed with the old key still verifies once a new key is put first', async () => {
    const { run } = await reporter(new RecordingStore(), ['old']);
    const jar = new Jar();
    const id = (await call(run, jar, 'post', '/?k=a')).body.id;
    run.app.keys = ['new', 'old'];
    const res = await call(run, jar, 'get');
    expect(res.body).to.deep.equal({ id, isNew: false, keys: ['a'] });
  });

  it('key rotation: new cookies are signed with the first key, so they verify once the old key is dropped', async () => {
    const { run } = await reporter(new RecordingStore(), ['new', 'old']);
    const jar = new Jar();
    const id = (await call(run, jar, 'post', '/?k=a')).body.id;
    run.app.keys = ['new'];
    expect((await call(run, jar, 'get')).body).to.deep.equal({ id, isNew: false, keys: ['a'] });
    run.app.keys = ['old'];
    expect((await call(run, jar, 'get')).body.isNew).to.equal(true);
  });
});

describe('Request lifecycle: session() twice on one request path', () => {
  /**
   * session({ store }) behind `before`, and a handler that increments n with
   * an await in between: a first POST, then 10 concurrent ones and a GET
   * that changes the session all succeed, none lost. The client's jar after.
   */
  async function incrementThrough(store: MemoryStore, before: Middleware[]): Promise<Jar> {
    const run = await start({ store, lockTimeout: 1000 }, async (ctx) => {
      const n = (ctx.session.get<number>('n') ?? 0) + 1;
      await new Promise((resolve) => setTimeout(resolve, 2));
      ctx.session.set('n', n);
      ctx.body = { n };
    }, { before });
    const jar = new Jar();
    expect((await call(run, jar, 'post')).body).to.deep.equal({ n: 1 });
    const cookie = jar.get('session_id') as string;
    const responses = await Promise.all(Array.from({ length: 10 }, () => call(run, new Jar().set('session_id', cookie), 'post')));
    expect(responses.map((res) => res.status)).to.deep.equal(Array(10).fill(200));
    expect((await call(run, jar, 'get')).body, 'a GET that changes the session (its commit takes the write lock)').to.deep.equal({ n: 12 });
    expect(run.errors).to.deep.equal([]);
    return jar;
  }

  it('a session() nested in another on the same store and cookie (app-wide, and again in a router or mounted app) leaves the work to the outer one: writes neither hang nor lose updates', async () => {
    const store = memoryStore();
    await incrementThrough(store, [session({ store, lockTimeout: 1000 })]);
  });

  it('with a session() of another cookie and store in between, the nested one still leaves the work to the outer one and serves its session', async () => {
    const store = memoryStore();
    const admin = session({ store: memoryStore(), cookieName: 'admin_sid', lockTimeout: 1000 });
    const jar = await incrementThrough(store, [session({ store, lockTimeout: 1000 }), admin]);
    expect(jar.get('admin_sid'), 'the session in between stored nothing').to.equal(undefined);
  });

  it('with a session() of another cookie in between, an error thrown under the nested one fails the request with that error, and what the handler set is still stored', async () => {
    const store = memoryStore();
    const admin = session({ store: memoryStore(), cookieName: 'admin_sid' });
    const run = await start({ store }, (ctx) => {
      ctx.session.set('user', 'ada');
      ctx.throw(409, 'conflict on purpose');
    }, { before: [session({ store }), admin] });
    const jar = new Jar();

    const res = await call(run, jar, 'post', '/order');

    expect(res.status, "the handler's error").to.equal(409);
    expect(res.text).to.equal('conflict on purpose');
    expect(run.errors.map((error) => (error as Error).message)).to.deep.equal(['conflict on purpose']);
    const id = jar.get('session_id');
    expect(id, 'the cookie of the session the handler changed').to.match(HEX64);
    expect(await store.get(id as string)).to.deep.include({ data: { user: 'ada' } });
  });

  it("the events of a session() inside another are heard with that session in ctx.session, and the outer one's back after", async () => {
    const heard: string[] = [];
    const seenAfter: string[] = [];
    const run = await start({ store: memoryStore(), cookieName: 'admin_sid' }, async (ctx) => {
      ctx.session.set('admin', 'ada');
      if (ctx.path === '/login') await ctx.session.regenerate();
      ctx.body = 'ok';
    }, {
      before: [session({ store: memoryStore() }), async (ctx: Context, next: Next) => {
        await next();
        seenAfter.push(ctx.session.id);
      }],
    });
    for (const event of ['session:created', 'session:regenerated'] as const) {
      run.app.on(event, ({ ctx, idHash }: { ctx: Context; idHash: string }) => heard.push(`${event} ${idHash === idHashOf(ctx.session.id)}`));
    }
    const jar = new Jar();
    await call(run, jar, 'post', '/start');
    await call(run, jar, 'post', '/login');
    expect(heard).to.deep.equal(['session:created true', 'session:created true', 'session:regenerated true']);
    expect(seenAfter.every((id) => id !== jar.get('admin_sid')), 'after the inner session() returned: the outer session').to.equal(true);
  });

  /** session({ store }), a middleware that sets ctx.session = null on /logout, then a nested session({ store }) and `handler`. */
  async function loggedOutAboveNested(store: Store, handler: Middleware) {
    return start({ store }, handler, {
      before: [session({ store }), async (ctx: Context, next: Next) => {
        if (ctx.path === '/logout') (ctx as { session: unknown }).session = null;
        await next();
      }],
    });
  }

  it('ctx.session = null in a middleware before a nested session() of the same store logs out first: the handler sees the logged-out session, and what it sets starts a new one', async () => {
    const store = memoryStore();
    const seen: unknown[] = [];
    const run = await loggedOutAboveNested(store, (ctx) => {
      if (ctx.path === '/login') ctx.session.set('user', 'ada');
      else {
        seen.push(ctx.session.get('user') ?? null);
        ctx.session.set('flash', 'logged out');
      }
      ctx.body = 'ok';
    });
    const jar = new Jar();
    await call(run, jar, 'post', '/login');
    const loggedIn = jar.get('session_id') as string;
    await call(run, jar, 'post', '/logout');
    expect(seen, 'what the handler saw after the logout').to.deep.equal([null]);
    const fresh = jar.get('session_id');
    expect(fresh, 'a new session for what the handler set').to.match(HEX64).and.not.equal(loggedIn);
    expect(await store.get(loggedIn), 'the logged-out session').to.equal(undefined);
    expect(await store.get(fresh as string)).to.deep.include({ data: { flash: 'logged out' } });
  });

  it('ctx.session = null before a nested session() fails the request with 503 when the store cannot remove the session: the handler does not run, and the session stays', async () => {
    const store = new RecordingStore();
    let handlerRuns = 0;
    const run = await loggedOutAboveNested(store, (ctx) => {
      if (ctx.path === '/login') ctx.session.set('user', 'ada');
      else handlerRuns++;
      ctx.body = 'ok';
    });
    const jar = new Jar();
    await call(run, jar, 'post', '/login');
    const id = jar.get('session_id') as string;

    store.fail.add('destroy');
    const res = await call(run, jar, 'post', '/logout');

    expect(res.status, 'a logout the store could not carry out').to.equal(503);
    expect(handlerRuns, 'handler runs after the failed logout').to.equal(0);
    expect(cookieNamed(res), 'Set-Cookie').to.equal(undefined);
    expect(store.map.get(id)).to.deep.include({ data: { user: 'ada' } });
  });

  it('ctx.session = null in a handler, inside a session() of another cookie that is inside a session() of its store, logs out: the cookie is expired and the session gone', async () => {
    const store = memoryStore();
    const admin = session({ store: memoryStore(), cookieName: 'admin_sid' });
    const run = await start({ store }, (ctx) => {
      if (ctx.path === '/login') ctx.session.set('user', 'ada');
      if (ctx.path === '/logout') (ctx as { session: unknown }).session = null;
      ctx.body = 'ok';
    }, { before: [session({ store }), admin] });
    const jar = new Jar();
    await call(run, jar, 'post', '/login');
    const id = jar.get('session_id') as string;

    const res = await call(run, jar, 'post', '/logout');

    expect(res.status).to.equal(200);
    const cookie = cookieNamed(res);
    expect(cookie !== undefined && isExpired(cookie), 'the session cookie is expired').to.equal(true);
    expect(await store.get(id), 'the logged-out session').to.equal(undefined);
    expect(cookieNamed(res, 'admin_sid'), 'the session in between set no cookie').to.equal(undefined);
  });

  it('after a session() of another cookie returns, ctx.session is the outer one again: a change made there is stored, and nothing warns', async () => {
    const store = memoryStore();
    const recordPage = async (ctx: Context, next: Next) => {
      await next();
      ctx.session.set('lastPage', ctx.path); // after the admin session() is done with the request
    };
    let warnings: string[] = [];
    const run = await start({ store: memoryStore(), cookieName: 'admin_sid' }, (ctx) => {
      ctx.body = { last: ctx.session.get('lastPage') ?? null };
    }, { before: [session({ store }), recordPage] });
    const jar = new Jar();
    for (const code of ['KOA_LOCKED_SESSION_LATE_CHANGE', 'KOA_LOCKED_SESSION_REPLACED']) {
      warnings = warnings.concat(await warningsDuring(code, async () => {
        await call(run, jar, 'get', '/home');
        await call(run, jar, 'get', '/panel');
      }));
    }
    expect(warnings).to.deep.equal([]);
    const sessionId = jar.get('session_id') as string;
    expect(await store.get(sessionId)).to.deep.include({ data: { lastPage: '/panel' } });
  });

  it('a session() run again on a request it has already served (a wrapper that retries the stack once) serves the session afresh: what the retry sets is stored', async () => {
    const store = memoryStore();
    const sessions = session({ store });
    let attempts = 0;
    const handler = async (ctx: Context): Promise<void> => {
      if (ctx.path === '/login') ctx.session.set('user', 'ada');
      else {
        attempts++;
        ctx.session.set('attempt', attempts);
        if (attempts === 1) throw new Error('deadlock detected, try again');
      }
      ctx.body = { attempt: ctx.session.get('attempt') ?? null };
    };
    const stack = (ctx: Context) => sessions(ctx, () => handler(ctx));
    const retryOnce = async (ctx: Context): Promise<void> => {
      try {
        await stack(ctx);
      } catch {
        await stack(ctx);
      }
    };
    const run = await start(undefined, () => undefined, { middleware: retryOnce });
    const jar = new Jar();
    await call(run, jar, 'post', '/login');
    const id = jar.get('session_id') as string;
    let retried: Awaited<ReturnType<typeof call>> | undefined;
    const late = await warningsDuring('KOA_LOCKED_SESSION_LATE_CHANGE', async () => {
      retried = await call(run, jar, 'post', '/order');
    });
    expect(retried?.status).to.equal(200);
    expect(late, 'warnings of a change made after the commit').to.deep.equal([]);
    expect(await store.get(id)).to.deep.include({ data: { user: 'ada', attempt: 2 } });
  });

  it('after a nested session() returns inside a session() of another cookie, ctx.session is that other session again: a change made there is stored in it', async () => {
    const store = memoryStore();
    const adminStore = memoryStore();
    const recordAdminPage = async (ctx: Context, next: Next) => {
      await next();
      ctx.session.set('lastAdminPage', ctx.path); // after the nested session() is done with the request
    };
    const run = await start({ store }, (ctx) => {
      ctx.session.set('user', 'ada');
      ctx.body = 'ok';
    }, { before: [session({ store }), session({ store: adminStore, cookieName: 'admin_sid' }), recordAdminPage] });
    const jar = new Jar();
    const res = await call(run, jar, 'post', '/panel');
    expect(res.status).to.equal(200);
    const adminId = jar.get('admin_sid');
    expect(adminId, 'the admin session started by the change').to.match(HEX64);
    expect(await adminStore.get(adminId as string)).to.deep.include({ data: { lastAdminPage: '/panel' } });
    expect(await store.get(jar.get('session_id') as string)).to.deep.include({ data: { user: 'ada' } });
  });

  it('a session() inside another of the same cookie but another store warns once: each would replace the other\'s session and cookie', async () => {
    const outerStore = memoryStore();
    // Two objects on one backend, as two RedisStores on one Redis and prefix are: they share the sessions.
    const backend = new Map<string, SessionData>();
    const onBackend = (): Store => ({
      get: async (id) => backend.get(id),
      set: async (id, data) => void backend.set(id, data),
      destroy: async (id) => void backend.delete(id),
    });
    const nestings: Array<[string, Middleware[], Store, boolean]> = [
      ['another MemoryStore', [session({ store: outerStore })], memoryStore(), true],
      ['the same store, other hashIds', [session({ store: outerStore, hashIds: true })], outerStore, true],
      ['the same store (left to the outer one)', [session({ store: outerStore })], outerStore, false],
      ['another cookie', [session({ store: outerStore, cookieName: 'other_sid' })], memoryStore(), false],
      ['another object on the same backend', [session({ store: onBackend() })], onBackend(), false],
    ];
    for (const [label, before, store, warns] of nestings) {
      const run = await start({ store }, (ctx) => {
        ctx.session.set('k', 1);
        ctx.body = 'ok';
      }, { before });
      const warnings = await warningsDuring('KOA_LOCKED_SESSION_COOKIE_SHARED', async () => {
        await call(run, new Jar(), 'post');
        await call(run, new Jar(), 'post');
      });
      expect(warnings.length, label).to.equal(warns ? 1 : 0);
      if (warns) expect(warnings[0]).to.match(/same cookie \(session_id\) but another store object or hashIds setting.*same store object, or give one another cookieName/);
    }
  });

  it('a session() of another cookie on a store object one already uses warns once: either cookie would load the other\'s sessions', async () => {
    const shared = memoryStore();
    const makings: Array<[string, () => void, boolean]> = [
      ['a store of its own', () => session({ store: memoryStore(), cookieName: 'admin_sid' }), false],
      ['the same cookie again', () => session({ store: shared }), false],
      ['another cookie, hashIds on (its keys are the hashes)', () => session({ store: shared, cookieName: 'admin_sid', hashIds: true }), false],
      ['another cookie', () => session({ store: shared, cookieName: 'admin_sid' }), true],
    ];
    session({ store: shared });
    for (const [label, make, warns] of makings) {
      const warnings = await warningsDuring('KOA_LOCKED_SESSION_STORE_SHARED', async () => make());
      expect(warnings.length, label).to.equal(warns ? 1 : 0);
      if (warns) expect(warnings[0]).to.match(/cookie admin_sid has the same store object as a session\(\) of the cookie session_id.*a store of its own/);
    }
    // What the warning is about: the session of one cookie, presented under the other's name, is loaded.
    const signIn = async (ctx: Context, next: Next) => {
      if (ctx.path === '/sign-in') ctx.session.set('userId', 7); // the user session (session_id), the admin one's still to come
      await next();
    };
    const run = await start({ store: shared, cookieName: 'admin_sid' }, (ctx) => {
      ctx.body = { isNew: ctx.session.isNew, data: ctx.session.toJSON() };
    }, { before: [session({ store: shared }), signIn] });
    const userJar = new Jar();
    await call(run, userJar, 'post', '/sign-in');
    const res = await call(run, new Jar().set('admin_sid', userJar.get('session_id') as string), 'get', '/admin');
    expect(res.body).to.deep.equal({ isNew: false, data: { userId: 7 } });
  });

  it('a session() nested in another of the same store and cookie but other options warns once, naming them: the outer one serves the request with its own', async () => {
    const store = memoryStore();
    // Options made by a factory, as an app may call one per router: functions alike in their code, not the same objects.
    const optionsFrom = (): SessionOptions => ({ store, genid: () => randomBytes(32).toString('base64url'), lockMode: () => 'write' });
    const outerOptions = optionsFrom();
    const nestings: Array<[string, SessionOptions, string | undefined]> = [
      ['the same options, from a factory', optionsFrom(), undefined],
      ['signed: true beside signed unset (both sign with app.keys)', { ...optionsFrom(), signed: true }, undefined],
      ['a shorter maxAge, rolling', { ...optionsFrom(), maxAge: 60_000, rolling: true }, 'maxAge, rolling are not used'],
      ['its own lockMode and genid', { store, lockMode: () => 'read' }, 'lockMode, genid are not used'],
      ['another cookie path', { ...optionsFrom(), cookiePath: '/admin' }, 'cookiePath is not used'],
      ['signed: false', { ...optionsFrom(), signed: false }, 'signed is not used'],
      ['another cookie (a session of its own)', { store, cookieName: 'admin_sid', maxAge: 60_000 }, undefined],
    ];
    for (const [label, innerOptions, unused] of nestings) {
      const run = await start(innerOptions, (ctx) => {
        ctx.session.set('k', 1);
        ctx.body = 'ok';
      }, { before: [session(outerOptions)] });
      const jar = new Jar();
      const cookies: ReturnType<typeof cookieNamed>[] = [];
      const warnings = await warningsDuring('KOA_LOCKED_SESSION_NESTED_OPTIONS', async () => {
        cookies.push(cookieNamed(await call(run, jar, 'post', '/admin')));
        await call(run, jar, 'post', '/admin');
      });
      if (unused === undefined) {
        expect(warnings, label).to.deep.equal([]);
        continue;
      }
      expect(warnings, label).to.have.length(1);
      expect(warnings[0], label).to.include(`of the same store and cookie, which serves the request with its own options, so this one's ${unused}`);
      // What the warning says: the outer one's cookie (path '/', a day's Expires) and lifetime.
      const cookie = cookies[0];
      expect(cookie?.attrs.path, label).to.equal('/');
      expect(Date.parse(String(cookie?.attrs.expires)) - Date.now(), label).to.be.above(86_400_000 - 60_000);
    }
  });
});
