/**
 * SPEC, "Locking": one read/write lock per session, shared reads, exclusive
 * writes, first come first served, read-mode changes merged key by key, no
 * session brought back after a logout, lockTimeout, and no lock outliving
 * its requests. Over real HTTP on loopback, plus LockTable as a unit.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Context, Middleware } from 'koa';
import type { Response } from 'supertest';
import { MemoryStore, SessionLockTimeoutError, SessionStoreError } from '../src';
import type { Session, SessionData, SessionOptions, Store } from '../src';
import { SessionLocks } from '../src/hold';
import type { HeldLock } from '../src/hold';
import { Expiry } from '../src/expiry';
import { LockTable } from '../src/lock';
import type { LockMode, Release, WhenGranted } from '../src/lock';
import { Storage } from '../src/storage';
import { dataOfValues } from '../src/values';
import {
  EventLog,
  ForgetfulStore,
  SpyStore,
  closedAfterEachTest,
  cookieFor,
  describeSession,
  expect,
  gate,
  hexId,
  loggingLockMode,
  sessionCookie,
  settle,
  sleep,
  startApp,
  storedData,
  tagOf,
  waitUntil,
} from './support/concurrency';
import type { AppSetup, TestApp } from './support/concurrency';
import { runChild } from './support/child';
import { withFakeTimers, withMonotonicClockAhead, withSteppedClock } from './support/clock';
import { awaitedLockTable, keepRelease } from './support/lock-table';

const cleanup = closedAfterEachTest();
const memoryStore = cleanup.memoryStore;

async function start(options: SessionOptions, setup: AppSetup): Promise<TestApp> {
  return cleanup.track(await startApp(options, setup));
}

/** POSTs `path` (a route that sets something) and returns the new session's ID from its cookie. */
async function login(t: TestApp, path = '/login'): Promise<string> {
  const res = await t.client.post(path);
  expect(res.status, `POST ${path}`).to.equal(200);
  const cookie = sessionCookie(res);
  expect(cookie, `POST ${path} sets the session cookie`).to.not.equal(undefined);
  return cookie!.value;
}

/** `method path` with session `id`'s cookie and an `x-tag` header naming the request (see tagOf), sent at once. */
function tagged(t: TestApp, method: 'get' | 'post', path: string, id: string, tag: string): Promise<Response> {
  return t.client[method](path).set('Cookie', cookieFor(id)).set('x-tag', tag).then((res) => res);
}

/** Records every LockTable in use and every ID a lock is asked for, until restore(). */
function spyOnLockTables(): { tables: Set<LockTable>; ids: string[]; restore(): void } {
  const original = LockTable.prototype.acquire;
  const tables = new Set<LockTable>();
  const ids: string[] = [];
  LockTable.prototype.acquire = function acquire(this: LockTable, id: string, mode: LockMode, timeoutMs: number, whenGranted?: WhenGranted<unknown>) {
    tables.add(this);
    ids.push(id);
    return original.call(this, id, mode, timeoutMs, whenGranted ?? keepRelease);
  } as LockTable['acquire'];
  return {
    tables,
    ids,
    restore: () => {
      LockTable.prototype.acquire = original;
    },
  };
}

describe('Locking', function () {
  this.timeout(60_000);

  describe('write mode is exclusive', () => {
    it('200 concurrent POSTs that each read n, await, then set n + 1 end with n exactly 200 higher', async function () {
      this.timeout(180_000);
      const t = await start({ store: memoryStore(), lockTimeout: 120_000 }, {
        routes: {
          'POST /login': (ctx) => ctx.session.set('n', 7),
          'POST /inc': async (ctx) => {
            const n = ctx.session.get<number>('n') as number;
            await sleep(3);
            ctx.session.set('n', n + 1);
          },
          'GET /n': (ctx) => ({ n: ctx.session.get('n') }),
        },
      });
      const id = await login(t);

      const responses = await Promise.all(Array.from({ length: 200 }, () => t.client.post('/inc').set('Cookie', cookieFor(id))));

      expect(responses.map((r) => r.status).filter((s) => s !== 200), 'non-200 statuses').to.deep.equal([]);
      const res = await t.client.get('/n').set('Cookie', cookieFor(id));
      expect(res.body.n).to.equal(207);
    });

    it('two session() middlewares on one store (two routers or apps of one process) lock the same sessions: 40 concurrent increments through both end exactly 40 higher', async () => {
      const store = memoryStore();
      const routes = {
        'POST /login': (ctx: Context) => ctx.session.set('n', 0),
        'POST /inc': async (ctx: Context) => {
          const n = ctx.session.get<number>('n') as number;
          await sleep(2);
          ctx.session.set('n', n + 1);
        },
        'GET /n': (ctx: Context) => ({ n: ctx.session.get('n') }),
      };
      const web = await start({ store }, { routes });
      const api = await start({ store }, { routes });
      const id = await login(web);

      const responses = await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? web : api).client.post('/inc').set('Cookie', cookieFor(id))));

      expect(responses.map((r) => r.status).filter((status) => status !== 200), 'non-200 statuses').to.deep.equal([]);
      expect((await api.client.get('/n').set('Cookie', cookieFor(id))).body.n).to.equal(40);
    });

    it('a second writer on the same session starts only after the first has finished', async () => {
      const log = new EventLog();
      const first = gate();
      const t = await start({ store: memoryStore(), lockMode: loggingLockMode(log) }, {
        routes: {
          'POST /login': (ctx) => ctx.session.set('n', 0),
          'POST /w': async (ctx) => {
            const tag = tagOf(ctx);
            log.add(`enter ${tag}`);
            if (tag === 'W1') await first.promise;
            ctx.session.set(tag, true);
            log.add(`exit ${tag}`);
          },
        },
      });
      const id = await login(t);

      const w1 = tagged(t, 'post', '/w', id, 'W1');
      await log.waitFor('enter W1');
      const w2 = tagged(t, 'post', '/w', id, 'W2');
      await log.waitFor('queue W2');
      await sleep(50);
      expect(log.has('enter W2'), 'W2 entered while W1 still ran').to.equal(false);
      first.open();
      const [r1, r2] = await Promise.all([w1, w2]);

      expect([r1.status, r2.status]).to.deep.equal([200, 200]);
      expect(log.indexOf('enter W2')).to.be.greaterThan(log.indexOf('exit W1'));
    });

    it('a request queued behind a writer loads what the writer saved', async () => {
      const log = new EventLog();
      const writer = gate();
      const t = await start({ store: memoryStore(), lockMode: loggingLockMode(log) }, {
        routes: {
          'POST /login': (ctx) => ctx.session.set('x', 0),
          'POST /w': async (ctx) => {
            log.add('enter W');
            await writer.promise;
            ctx.session.set('x', 1);
          },
          'GET /r': (ctx) => describeSession(ctx),
        },
      });
      const id = await login(t);

      const w = tagged(t, 'post', '/w', id, 'W');
      await log.waitFor('enter W');
      const r = tagged(t, 'get', '/r', id, 'R');
      await log.waitFor('queue R');
      writer.open();
      const [, read] = await Promise.all([w, r]);

      expect(read.status).to.equal(200);
      expect(read.body.data).to.deep.equal({ x: 1 });
    });

    it('the lock is held until the commit is stored: a request arriving during a slow commit sees its result', async () => {
      const log = new EventLog();
      const commitHeld = gate();
      const spy = new SpyStore(memoryStore());
      let holdNextCommit = false;
      spy.hooks.before = async (method) => {
        if (method === 'applyChanges' && holdNextCommit) {
          holdNextCommit = false;
          log.add('commit W');
          await commitHeld.promise;
        }
      };
      const t = await start({ store: spy, lockMode: loggingLockMode(log) }, {
        routes: {
          'POST /login': (ctx) => ctx.session.set('x', 0),
          'POST /w': (ctx) => ctx.session.set('x', 2),
          'GET /r': (ctx) => {
            log.add('enter R');
            return describeSession(ctx);
          },
        },
      });
      const id = await login(t);

      holdNextCommit = true;
      const w = tagged(t, 'post', '/w', id, 'W');
      await log.waitFor('commit W');
      const r = tagged(t, 'get', '/r', id, 'R');
      await log.waitFor('queue R');
      await sleep(50);
      expect(log.has('enter R'), 'R ran while the commit was still being stored').to.equal(false);
      commitHeld.open();
      const [written, read] = await Promise.all([w, r]);

      expect(written.status).to.equal(200);
      expect(read.body.data).to.deep.equal({ x: 2 });
    });
  });

  describe('read mode is shared', () => {
    it('50 slow GETs on one session are all inside their handler at the same time', async () => {
      const everyone = gate();
      // If reads were serialised the barrier would never fill; this fallback lets the test end and fail.
      const fallback = setTimeout(() => everyone.open(), 8_000);
      let inFlight = 0;
      let most = 0;
      const t = await start({ store: memoryStore(), lockTimeout: 60_000 }, {
        routes: {
          'POST /login': (ctx) => ctx.session.set('user', 'ann'),
          'GET /slow': async () => {
            inFlight++;
            most = Math.max(most, inFlight);
            if (inFlight === 50) everyone.open();
            await everyone.promise;
            await sleep(200);
            inFlight--;
          },
        },
      });
      try {
        const id = await login(t);
        const responses = await Promise.all(Array.from({ length: 50 }, () => t.client.get('/slow').set('Cookie', cookieFor(id))));
        expect(responses.every((r) => r.status === 200)).to.equal(true);
      } finally {
        clearTimeout(fallback);
      }
      expect(most, 'most GETs in flight at once').to.equal(50);
    });

    it("the default lockMode asks ctx.request.method: an app's own method getter (an override header) makes a GET exclusive", async () => {
      let inFlight = 0;
      let most = 0;
      const t = await start({ store: memoryStore() }, {
        routes: {
          'POST /login': (ctx) => ctx.session.set('user', 'ann'),
          'POST /slow': async () => {
            inFlight++;
            most = Math.max(most, inFlight);
            await sleep(100);
            inFlight--;
          },
        },
      });
      Object.defineProperty(t.app.request, 'method', {
        configurable: true,
        get(this: { get(field: string): string; req: { method?: string } }) {
          return this.get('X-HTTP-Method-Override') || this.req.method;
        },
      });
      const id = await login(t);
      const overridden = () => t.client.get('/slow').set('Cookie', cookieFor(id)).set('X-HTTP-Method-Override', 'POST');
      const responses = await Promise.all([overridden(), overridden()]);
      expect(responses.map((r) => r.status)).to.deep.equal([200, 200]);
      expect(most, 'overridden GETs in their handler at once').to.equal(1);
    });

    it('a writer queued behind readers is not starved by readers that arrive after it', async () => {
      const log = new EventLog();
      const hold = gate();
      const t = await start({ store: memoryStore(), lockMode: loggingLockMode(log), lockTimeout: 60_000 }, {
        routes: {
          'POST /login': (ctx) => ctx.session.set('w', false),
          'GET /r': async (ctx) => {
            const tag = tagOf(ctx);
            log.add(`enter ${tag}`);
            if (['R1', 'R2', 'R3'].includes(tag)) await hold.promise;
            await settle(2);
            log.add(`exit ${tag}`);
            return describeSession(ctx);
          },
          'POST /w': async (ctx) => {
            log.add('enter W');
            await sleep(20);
            ctx.session.set('w', true);
            log.add('exit W');
          },
        },
      });
      const id = await login(t);
      const read = (tag: string) => tagged(t, 'get', '/r', id, tag);

      const early = ['R1', 'R2', 'R3'].map(read);
      await Promise.all(['R1', 'R2', 'R3'].map((tag) => log.waitFor(`enter ${tag}`)));
      const writer = tagged(t, 'post', '/w', id, 'W');
      await log.waitFor('queue W');
      const late = ['R4', 'R5', 'R6'].map(read);
      await Promise.all(['R4', 'R5', 'R6'].map((tag) => log.waitFor(`queue ${tag}`)));
      await sleep(50);
      hold.open();
      const responses = await Promise.all([...early, writer, ...late]);

      expect(responses.map((r) => r.status)).to.deep.equal([200, 200, 200, 200, 200, 200, 200]);
      for (const tag of ['R1', 'R2', 'R3']) {
        expect(log.indexOf('enter W'), `W entered before ${tag} left`).to.be.greaterThan(log.indexOf(`exit ${tag}`));
      }
      for (const tag of ['R4', 'R5', 'R6']) {
        expect(log.indexOf(`enter ${tag}`), `${tag} overtook W; order: ${log.entries.join(', ')}`).to.be.greaterThan(log.indexOf('exit W'));
      }
      for (const res of responses.slice(4)) expect(res.body.data).to.deep.equal({ w: true });
    });

    it('100 concurrent GETs that each set their own key keep all 100 keys', async function () {
      this.timeout(120_000);
      const everyone = gate();
      const fallback = setTimeout(() => everyone.open(), 8_000);
      let inFlight = 0;
      const t = await start({ store: memoryStore(), lockTimeout: 60_000 }, {
        routes: {
          'POST /login': (ctx) => ctx.session.set('base', true),
          'GET /mark': async (ctx) => {
            // Every reader loads the same snapshot before any of them sets its key.
            if (++inFlight === 100) everyone.open();
            await everyone.promise;
            ctx.session.set(`k${String(ctx.query.i)}`, Number(ctx.query.i));
          },
          'GET /all': (ctx) => describeSession(ctx),
        },
      });
      try {
        const id = await login(t);
        const responses = await Promise.all(Array.from({ length: 100 }, (_, i) => t.client.get(`/mark?i=${i}`).set('Cookie', cookieFor(id))));
        expect(responses.map((r) => r.status).filter((s) => s !== 200), 'non-200 statuses').to.deep.equal([]);

        const all = await t.client.get('/all').set('Cookie', cookieFor(id));
        const expected: Record<string, unknown> = { base: true };
        for (let i = 0; i < 100; i++) expected[`k${i}`] = i;
        expect(all.body.data).to.deep.equal(expected);
      } finally {
        clearTimeout(fallback);
      }
    });

    /**
     * Two read-mode requests on one session, both inside their handlers at
     * once, each making its edits; R2 finishes and commits first, then R1.
     * Resolves to the session's data afterwards.
     */
    async function overlappingReads(setUp: (session: Session) => void, edits: Record<'R1' | 'R2', (session: Session) => void>): Promise<unknown> {
      const log = new EventLog();
      const gates = { R1: gate(), R2: gate() };
      const t = await start({ store: memoryStore(), lockMode: loggingLockMode(log) }, {
        routes: {
          'POST /login': (ctx) => setUp(ctx.session),
          'GET /r': async (ctx) => {
            const tag = tagOf(ctx) as 'R1' | 'R2';
            log.add(`enter ${tag}`);
            await gates[tag].promise;
            edits[tag](ctx.session);
            log.add(`exit ${tag}`);
          },
          'GET /all': (ctx) => describeSession(ctx),
        },
      });
      const id = await login(t);

      const r1 = tagged(t, 'get', '/r', id, 'R1');
      const r2 = tagged(t, 'get', '/r', id, 'R2');
      await Promise.all([log.waitFor('enter R1'), log.waitFor('enter R2')]);
      gates.R2.open();
      await log.waitFor('exit R2');
      gates.R1.open();
      await Promise.all([r1, r2]);

      const all = await t.client.get('/all').set('Cookie', cookieFor(id));
      return all.body.data;
    }

    it("a read-mode request's set and delete land on top of what a concurrent request saved", async () => {
      const data = await overlappingReads(
        (session) => {
          session.set('a', 1);
          session.set('b', 1);
        },
        { R1: (session) => session.delete('a'), R2: (session) => session.set('c', 1) },
      );
      expect(data).to.deep.equal({ b: 1, c: 1 });
    });

    it('a read-mode clear() then set() is replayed in that order on the freshest stored data', async () => {
      const data = await overlappingReads((session) => session.set('a', 1), {
        R1: (session) => {
          session.clear();
          session.set('e', 1);
        },
        R2: (session) => session.set('d', 1),
      });
      // R2 committed first (d); R1's clear then wipes everything stored, and its set adds e.
      expect(data).to.deep.equal({ e: 1 });
    });
  });

  describe('different sessions and new sessions', () => {
    it('a slow writer on one session does not delay a request on another session', async () => {
      const log = new EventLog();
      const holdA = gate();
      const t = await start({ store: memoryStore(), lockTimeout: 1_000 }, {
        routes: {
          'POST /login': (ctx) => ctx.session.set('n', 0),
          'POST /hold': async (ctx) => {
            log.add('enter A');
            await holdA.promise;
            ctx.session.set('n', 1);
            log.add('exit A');
          },
          'POST /w': (ctx) => ctx.session.set('n', 2),
        },
      });
      const a = await login(t);
      const b = await login(t);

      const slow = t.client.post('/hold').set('Cookie', cookieFor(a)).then((r) => r);
      await log.waitFor('enter A');
      const other = await t.client.post('/w').set('Cookie', cookieFor(b));
      const aStillHeld = !log.has('exit A');
      holdA.open();
      await slow;

      expect(other.status).to.equal(200);
      expect(aStillHeld, 'session B finished while A was still held').to.equal(true);
    });

    it('new sessions need no waiting: cookie-less POSTs run side by side and take no lock', async () => {
      const everyone = gate();
      const fallback = setTimeout(() => everyone.open(), 8_000);
      let inFlight = 0;
      let most = 0;
      const spy = spyOnLockTables();
      try {
        const t = await start({ store: memoryStore(), lockTimeout: 60_000 }, {
          routes: {
            'POST /new': async (ctx) => {
              most = Math.max(most, ++inFlight);
              if (inFlight === 20) everyone.open();
              await everyone.promise;
              ctx.session.set('user', String(ctx.query.i));
              inFlight--;
            },
          },
        });
        const responses = await Promise.all(Array.from({ length: 20 }, (_, i) => t.client.post(`/new?i=${i}`)));

        expect(responses.every((r) => r.status === 200 && sessionCookie(r) !== undefined)).to.equal(true);
        expect(most, 'cookie-less POSTs in flight at once').to.equal(20);
        expect(spy.ids, 'IDs a lock was taken for').to.deep.equal([]);
      } finally {
        clearTimeout(fallback);
        spy.restore();
      }
    });
  });

  describe('a slower request never brings back a session that was logged out', () => {
    interface Race {
      t: TestApp;
      log: EventLog;
      store: Store;
      slow: ReturnType<typeof gate>;
      interrupted: Array<{ ctx: Context }>;
    }

    const raceRoutes = (log: EventLog, slow: ReturnType<typeof gate>): AppSetup['routes'] => {
      const slowWriter = async (ctx: Context) => {
        log.add('enter S');
        await slow.promise;
        ctx.session.set('seen', true);
        return { handled: 'S' };
      };
      // The other way to log in afresh: destroy, then set (a new session under a new ID).
      const slowDestroyLogin = async (ctx: Context) => {
        await ctx.session.destroy();
        ctx.session.set('user', 'bob');
        log.add('enter S');
        await slow.promise;
      };
      return {
        'POST /login': (ctx) => ctx.session.set('user', 'ann'),
        'GET /slow': slowWriter,
        'POST /slow': slowWriter,
        'GET /slow-read': async (ctx) => {
          log.add('enter S');
          await slow.promise;
          return { user: ctx.session.get('user') };
        },
        'POST /logout': async (ctx) => ctx.session.destroy(),
        'GET /logout': async (ctx) => ctx.session.destroy(),
        'POST /relogin': async (ctx) => ctx.session.regenerate(),
        'GET /relogin': async (ctx) => {
          await ctx.session.regenerate();
          log.add('regenerated');
        },
        'POST /slow-logout': async (ctx) => {
          log.add('enter S');
          await slow.promise;
          await ctx.session.destroy();
        },
        'POST /slow-relogin': async (ctx) => {
          await ctx.session.regenerate();
          ctx.session.set('user', 'bob');
          log.add('enter S');
          await slow.promise;
        },
        'POST /slow-destroy-login': slowDestroyLogin,
        'GET /slow-destroy-login': slowDestroyLogin,
        'POST /track': (ctx) => ctx.session.set('lastSeen', 123),
        'GET /track': (ctx) => ctx.session.set('lastSeen', 123),
        'GET /whoami': (ctx) => describeSession(ctx),
      };
    };

    async function race(options: SessionOptions = {}, store: Store = memoryStore()): Promise<Race> {
      const log = new EventLog();
      const slow = gate();
      const interrupted: Array<{ ctx: Context }> = [];
      const t = await start({ store, lockMode: loggingLockMode(log), ...options }, { routes: raceRoutes(log, slow) });
      t.app.on('session:interrupted', (event: { ctx: Context }) => interrupted.push(event));
      return { t, log, store, slow, interrupted };
    }

    function expectInterrupted(r: Race, sRes: { status: number; body: unknown; headers: Record<string, unknown> }, oldId: string, body: unknown): void {
      expect(sRes.status).to.equal(200);
      expect(sRes.body, "S's response is what its handler made").to.deep.equal(body);
      const cookie = sessionCookie(sRes);
      expect(cookie?.value ?? '(none)', 'S sets no cookie for the old ID').to.not.equal(oldId);
      expect(r.interrupted.length, "'session:interrupted' events").to.equal(1);
      expect(r.interrupted[0]).to.have.property('ctx');
      expect(tagOf(r.interrupted[0].ctx), 'the event carries the slow request').to.equal('S');
    }

    /** Sends S (`method path`, tagged S) and resolves, with S still pending, once its handler waits on the gate. */
    async function slowRequest(r: Race, id: string, method: 'get' | 'post', path: string): Promise<{ response: Promise<Response> }> {
      const response = tagged(r.t, method, path, id, 'S');
      await r.log.waitFor('enter S');
      return { response };
    }

    /** While S waits, `logout` runs to completion (GET /logout on the same server by default); then S goes on. Resolves to S's answer. */
    async function logoutWhileSlow(
      r: Race,
      id: string,
      slow: { method: 'get' | 'post'; path: string },
      logout: () => Promise<Response> = () => tagged(r.t, 'get', '/logout', id, 'logout'),
    ): Promise<Response> {
      const s = await slowRequest(r, id, slow.method, slow.path);
      const logoutRes = await logout();
      expect(logoutRes.status, 'the logout').to.equal(200);
      r.slow.open();
      return s.response;
    }

    /** While S (GET /slow unless given) waits, `method path` (tagged `tag`) queues for the lock; then S goes on. Resolves to both answers. */
    async function queuedBehindSlow(
      r: Race,
      id: string,
      method: 'get' | 'post',
      path: string,
      tag: string,
      slow: { method: 'get' | 'post'; path: string } = { method: 'get', path: '/slow' },
    ): Promise<[Response, Response]> {
      const s = await slowRequest(r, id, slow.method, slow.path);
      const other = tagged(r.t, method, path, id, tag);
      await r.log.waitFor(`queue ${tag}`);
      r.slow.open();
      return Promise.all([s.response, other]);
    }

    for (const [kind, makeStore] of [
      ['a MemoryStore', () => memoryStore()],
      ['a koa-session style store (get/set/destroy only)', () => new ForgetfulStore()],
    ] as Array<[string, () => Store]>) {
      it(`a GET that sets a key, with a POST /logout in line behind it, commits first, and the logout then removes the session for good, on ${kind}`, async () => {
        const r = await race({}, makeStore());
        const id = await login(r.t);

        const [sRes, logoutRes] = await queuedBehindSlow(r, id, 'post', '/logout', 'logout');

        // First come, first served: the GET's change is saved before the logout, which came after it, removes the session.
        expect(sRes.status).to.equal(200);
        expect(sessionCookie(sRes)?.value, "the GET's commit came first").to.equal(id);
        expect(logoutRes.status).to.equal(200);
        expect(sessionCookie(logoutRes)?.value, 'the logout expires the cookie').to.equal('');
        expect(await r.store.get(id), 'stored session').to.equal(undefined);
        expect(r.interrupted, "'session:interrupted' events").to.deep.equal([]);
        const after = await r.t.client.get('/whoami').set('Cookie', cookieFor(id));
        expect(after.body.isNew).to.equal(true);
        expect(after.body.data).to.deep.equal({});
      });
    }

    it('a GET that sets a key while another GET regenerates the session writes to neither ID', async () => {
      const r = await race();
      const id = await login(r.t);
      const s = await slowRequest(r, id, 'get', '/slow');
      // Read mode: the regenerate takes the exclusive lock at its commit, once S, sharing the lock, lets go of it.
      const relogin = tagged(r.t, 'get', '/relogin', id, 'relogin');
      await r.log.waitFor('regenerated');
      await new Promise((resolve) => setImmediate(resolve)); // its commit is now waiting for S
      r.slow.open();
      const [sRes, reloginRes] = await Promise.all([s.response, relogin]);

      const newId = sessionCookie(reloginRes)?.value as string;
      expect(newId).to.match(/^[0-9a-f]{64}$/).and.not.equal(id);
      expect(await r.store.get(id), 'old ID in the store').to.equal(undefined);
      expect(await storedData(r.store, newId), 'data under the new ID').to.deep.equal({ user: 'ann' });
      expectInterrupted(r, sRes, id, { handled: 'S' });
    });

    it('a GET that sets a key after another GET logged the session out does not bring it back', async () => {
      const r = await race();
      const id = await login(r.t);

      const sRes = await logoutWhileSlow(r, id, { method: 'get', path: '/slow' });

      expect(await r.store.get(id), 'stored session').to.equal(undefined);
      expectInterrupted(r, sRes, id, { handled: 'S' });
    });

    it('a write-mode request on a second server sharing the store does not bring back a session logged out meanwhile', async () => {
      const store = memoryStore();
      const r = await race({}, store);
      // Another process sees the same data but has locks of its own: a second object over the same
      // MemoryStore (its prototype), so the second server gets a lock table of its own.
      const otherProcessView = Object.create(store) as MemoryStore;
      const other = await start({ store: otherProcessView }, { routes: raceRoutes(new EventLog(), gate()) });
      const id = await login(r.t);

      const sRes = await logoutWhileSlow(r, id, { method: 'post', path: '/slow' }, () => tagged(other, 'post', '/logout', id, 'logout'));

      expect(await store.get(id), 'stored session').to.equal(undefined);
      expectInterrupted(r, sRes, id, { handled: 'S' });
    });

    it('a GET that sets a key, with a regenerate in line behind it, commits first: the new ID carries its key', async () => {
      const r = await race();
      const id = await login(r.t);

      const [sRes, reloginRes] = await queuedBehindSlow(r, id, 'post', '/relogin', 'relogin');

      expect(sessionCookie(sRes)?.value, "the GET's commit came first").to.equal(id);
      const newId = sessionCookie(reloginRes)?.value as string;
      expect(newId).to.match(/^[0-9a-f]{64}$/).and.not.equal(id);
      expect(await r.store.get(id), 'old ID in the store').to.equal(undefined);
      expect(await storedData(r.store, newId), 'data under the new ID').to.deep.equal({ user: 'ann', seen: true });
      expect(r.interrupted, "'session:interrupted' events").to.deep.equal([]);
    });

    it('a request queued behind a logout of its session starts no session of its own: no cookie, nothing stored', async () => {
      const r = await race();
      const id = await login(r.t);

      const [sRes, trackRes] = await queuedBehindSlow(r, id, 'post', '/track', 'T', { method: 'post', path: '/slow-logout' });

      expect(sRes.status).to.equal(200);
      expect(sessionCookie(sRes)?.value, 'the logout expires the cookie').to.equal('');
      expect(trackRes.status).to.equal(200);
      expect(sessionCookie(trackRes), "no Set-Cookie from the queued request: it would undo the logout's").to.equal(undefined);
      expect((r.store as MemoryStore).size, 'sessions stored').to.equal(0);
      expect(r.interrupted.map((event) => tagOf(event.ctx))).to.deep.equal(['T']);
    });

    it('a request queued behind a logout whose store read of the session takes longer than half a second still starts no session of its own', async () => {
      const memory = memoryStore();
      const spy = new SpyStore(memory);
      const r = await race({}, spy);
      const id = await login(r.t);
      const s = await slowRequest(r, id, 'post', '/slow-logout');
      const track = tagged(r.t, 'post', '/track', id, 'T');
      await r.log.waitFor('queue T');
      // T's load, once the logout lets it in, answers only after the half second a request just after a logout counts as behind it:
      // T is behind the logout because it asked while the logout held the lock, however long its load then takes.
      spy.hooks.before = async (method) => {
        if (method === 'get') await sleep(800);
      };
      r.slow.open();
      const [sRes, trackRes] = await Promise.all([s.response, track]);

      expect(sessionCookie(sRes)?.value, 'the logout expires the cookie').to.equal('');
      expect(trackRes.status).to.equal(200);
      expect(sessionCookie(trackRes), "no Set-Cookie from the queued request: it would undo the logout's").to.equal(undefined);
      expect(memory.size, 'sessions stored').to.equal(0);
      expect(r.interrupted.map((event) => tagOf(event.ctx))).to.deep.equal(['T']);
    });

    it('a logout queued behind another logout of the same session sends no cookie and reports session:interrupted, not a second session:destroyed', async () => {
      const r = await race();
      const destroyed: Context[] = [];
      r.t.app.on('session:destroyed', (event: { ctx: Context }) => destroyed.push(event.ctx));
      const id = await login(r.t);

      const [sRes, secondRes] = await queuedBehindSlow(r, id, 'post', '/logout', 'L2', { method: 'post', path: '/slow-logout' });

      expect(sessionCookie(sRes)?.value, 'the first logout expires the cookie').to.equal('');
      expect(secondRes.status).to.equal(200);
      expect(sessionCookie(secondRes), 'the second logout finds no session of its own to expire').to.equal(undefined);
      expect(destroyed.map((ctx) => tagOf(ctx))).to.deep.equal(['S']);
      expect(r.interrupted.map((event) => tagOf(event.ctx))).to.deep.equal(['L2']);
    });

    it('a request with a logged-out ID more than half a second after the logout starts a session of its own, even when the wall clock was set back meanwhile', async () => {
      const r = await race();
      const id = await login(r.t);
      expect(sessionCookie(await r.t.client.post('/logout').set('Cookie', cookieFor(id)))?.value, 'logged out').to.equal('');
      // The host's clock is stepped back an hour, half a second passes for real.
      await withSteppedClock(-3_600_000, async () => {
        await sleep(600);
        const trackRes = await r.t.client.post('/track').set('Cookie', cookieFor(id));
        expect(trackRes.status).to.equal(200);
        expect(sessionCookie(trackRes)?.value, 'a new session, as for any unknown ID').to.match(/^[0-9a-f]{64}$/).and.not.equal(id);
        expect(r.interrupted).to.deep.equal([]);
      });
    });

    it('a request with a logged-out ID more than half a second after the logout starts a session of its own, even while a long read of that session still holds its lock', async () => {
      const r = await race();
      const id = await login(r.t);
      await withMonotonicClockAhead(async (advance) => {
        // S, a long read (a long poll, a download), shares the lock with the logout and outlives it.
        const s = await slowRequest(r, id, 'get', '/slow-read');
        expect(sessionCookie(await tagged(r.t, 'get', '/logout', id, 'logout'))?.value, 'logged out').to.equal('');
        advance(600); // half a second and more passes: whoever still sends the ID was told of the logout
        const trackRes = await tagged(r.t, 'get', '/track', id, 'T');
        r.slow.open();
        expect((await s.response).status).to.equal(200);

        expect(trackRes.status).to.equal(200);
        const newId = sessionCookie(trackRes)?.value;
        expect(newId, 'a new session, as for any unknown ID').to.match(/^[0-9a-f]{64}$/).and.not.equal(id);
        expect(await storedData(r.store, newId!)).to.deep.equal({ lastSeen: 123 });
        expect(r.interrupted).to.deep.equal([]);
      });
    });

    // The GET case: both requests in read mode, T shares the lock with S, joining after S's destroy(), while S still runs
    // (an OAuth or magic-link callback is a GET).
    for (const [how, path, method] of [
      ['regenerate', '/slow-relogin', 'post'],
      ['destroy, then set', '/slow-destroy-login', 'post'],
      ['destroy, then set, in a GET that another GET shares the lock with', '/slow-destroy-login', 'get'],
    ] as const) {
      it(`a request queued behind a login (${how}) of its session sets no cookie, so the browser keeps the new one`, async () => {
        const r = await race();
        const id = await login(r.t);

        const [sRes, trackRes] = await queuedBehindSlow(r, id, method, '/track', 'T', { method, path });

        const newId = sessionCookie(sRes)?.value as string;
        expect(newId).to.match(/^[0-9a-f]{64}$/).and.not.equal(id);
        expect(trackRes.status).to.equal(200);
        expect(sessionCookie(trackRes), "no Set-Cookie from the queued request: it would replace the login's").to.equal(undefined);
        expect((r.store as MemoryStore).size, 'sessions stored').to.equal(1);
        expect(await storedData(r.store, newId)).to.deep.equal({ user: 'bob' });
        expect(r.interrupted.map((event) => tagOf(event.ctx))).to.deep.equal(['T']);
      });
    }

    it('a GET sharing the lock with a GET login finds the session gone while the store is still removing it: no cookie either', async () => {
      // A store whose destroy() takes effect at once and answers later (a remote store acknowledging late).
      const removing = gate();
      const log = new EventLog();
      class LateAckStore extends ForgetfulStore {
        override async destroy(id: string): Promise<void> {
          await super.destroy(id);
          log.add('removed');
          await removing.promise;
        }
      }
      const store = new LateAckStore();
      const interrupted: Context[] = [];
      const t = await start({ store }, {
        routes: {
          'POST /login': (ctx) => ctx.session.set('user', 'ann'),
          'GET /login-callback': async (ctx) => {
            await ctx.session.destroy();
            ctx.session.set('user', 'bob');
          },
          'GET /track': (ctx) => ctx.session.set('lastSeen', 123),
        },
      });
      t.app.on('session:interrupted', (event: { ctx: Context }) => interrupted.push(event.ctx));
      const id = await login(t);

      const callback = t.client.get('/login-callback').set('Cookie', cookieFor(id)).then((res) => res);
      await log.waitFor('removed');
      const trackRes = await t.client.get('/track').set('Cookie', cookieFor(id));
      removing.open();
      const callbackRes = await callback;

      expect(sessionCookie(trackRes), "no Set-Cookie from the sharing request: it would replace the login's").to.equal(undefined);
      expect(interrupted.map((ctx) => ctx.path)).to.deep.equal(['/track']);
      const newId = sessionCookie(callbackRes)?.value as string;
      expect(newId).to.match(/^[0-9a-f]{64}$/).and.not.equal(id);
      expect([...store.records.keys()]).to.deep.equal([newId]);
    });

    it('a read-only request queued behind a logout gets an empty session and reports nothing, not even session:missed', async () => {
      const r = await race();
      const id = await login(r.t);
      const missed: unknown[] = [];
      r.t.app.on('session:missed', (event) => missed.push(event));

      const [, whoRes] = await queuedBehindSlow(r, id, 'get', '/whoami', 'W', { method: 'post', path: '/slow-logout' });

      expect(whoRes.body.isNew).to.equal(true);
      expect(whoRes.body.data).to.deep.equal({});
      expect(sessionCookie(whoRes)).to.equal(undefined);
      expect(r.interrupted).to.deep.equal([]);
      expect(missed, 'its session was removed ahead of it, not unknown').to.deep.equal([]);
    });

    it('an expiry push by a slow read never recreates a session that was logged out meanwhile', async () => {
      const r = await race({ maxAge: 2_000 });
      const id = await login(r.t);
      await sleep(300); // more than a tenth of maxAge: S's load makes a push due

      const sRes = await logoutWhileSlow(r, id, { method: 'get', path: '/slow-read' });

      expect(await r.store.get(id), 'stored session').to.equal(undefined);
      expectInterrupted(r, sRes, id, { user: 'ann' });
    });

    it('with rolling, a read that overlaps a logout does not re-send the logged-out ID, and the app hears of it', async () => {
      const r = await race({ rolling: true });
      const id = await login(r.t);

      const sRes = await logoutWhileSlow(r, id, { method: 'get', path: '/slow-read' });

      expect(await r.store.get(id), 'stored session').to.equal(undefined);
      expectInterrupted(r, sRes, id, { user: 'ann' });
    });
  });

  describe('lockTimeout', () => {
    interface TimeoutApp {
      t: TestApp;
      log: EventLog;
      hold: ReturnType<typeof gate>;
      runs: { late: number };
      caught: unknown[];
    }

    async function timeoutApp(catchErrors: boolean, lockTimeout = 100, store: Store = memoryStore()): Promise<TimeoutApp> {
      const log = new EventLog();
      const hold = gate();
      const runs = { late: 0 };
      const caught: unknown[] = [];
      const outer: Middleware | undefined = catchErrors
        ? async (ctx, next) => {
            try {
              await next();
            } catch (error) {
              caught.push(error);
              const e = error as { status?: number; name?: string; code?: string };
              ctx.status = e.status ?? 500;
              ctx.body = { name: e.name, code: e.code };
            }
          }
        : undefined;
      const t = await start({ store, lockTimeout, lockMode: loggingLockMode(log) }, {
        outer,
        routes: {
          'POST /login': (ctx) => ctx.session.set('n', 1),
          'POST /hold': async (ctx) => {
            log.add('enter hold');
            await hold.promise;
            ctx.session.set('held', true);
          },
          'POST /late': (ctx) => {
            runs.late++;
            ctx.session.set('late', true);
          },
          'GET /late': (ctx) => {
            runs.late++;
            ctx.session.set('lateRead', true);
          },
          'GET /read': (ctx) => describeSession(ctx),
          'GET /hold': async (ctx) => {
            log.add('enter hold');
            await hold.promise;
            describeSession(ctx);
          },
        },
      });
      return { t, log, hold, runs, caught };
    }

    /**
     * Sends `method /late` while POST /hold holds the session's lock, then
     * lets the holder finish. Resolves to the late answer, and how often the
     * late handler had run before the holder let go.
     */
    async function lateWhileHeld(a: TimeoutApp, id: string, method: 'get' | 'post'): Promise<{ late: Response; runsWhileHeld: number }> {
      const holder = a.t.client.post('/hold').set('Cookie', cookieFor(id)).then((r) => r);
      await a.log.waitFor('enter hold');
      const late = await a.t.client[method]('/late').set('Cookie', cookieFor(id));
      const runsWhileHeld = a.runs.late;
      a.hold.open();
      await holder;
      return { late, runsWhileHeld };
    }

    it('a request waiting longer than lockTimeout behind a slow writer gets 503 and its handler never runs', async () => {
      const a = await timeoutApp(false);
      const id = await login(a.t);

      const { late, runsWhileHeld } = await lateWhileHeld(a, id, 'post');
      await settle();

      expect(late.status).to.equal(503);
      expect(sessionCookie(late), 'Set-Cookie on the 503').to.equal(undefined);
      expect(runsWhileHeld).to.equal(0);
      expect(a.runs.late, 'handler runs after the holder left').to.equal(0);
    });

    it('nothing a timed-out request would have saved is saved', async () => {
      const a = await timeoutApp(false);
      const id = await login(a.t);

      const { late } = await lateWhileHeld(a, id, 'post');

      expect(late.status).to.equal(503);
      const read = await a.t.client.get('/read').set('Cookie', cookieFor(id));
      expect(read.body.data).to.deep.equal({ n: 1, held: true });
    });

    it('the timeout error is a SessionLockTimeoutError with code ESESSIONLOCKTIMEOUT and status 503', async () => {
      const a = await timeoutApp(true);
      const id = await login(a.t);

      const { late } = await lateWhileHeld(a, id, 'post');

      expect(late.status).to.equal(503);
      expect(late.body).to.deep.equal({ name: 'SessionLockTimeoutError', code: 'ESESSIONLOCKTIMEOUT' });
      expect(a.caught).to.have.length(1);
      expect(a.caught[0]).to.be.an.instanceOf(SessionLockTimeoutError);
      expect(a.caught[0]).to.include({ code: 'ESESSIONLOCKTIMEOUT', status: 503 });
      expect(String((a.caught[0] as Error).message)).to.not.include(id);
    });

    it('a read waiting behind a slow writer also gives up after lockTimeout', async () => {
      const a = await timeoutApp(false);
      const id = await login(a.t);

      const { late } = await lateWhileHeld(a, id, 'get');
      await settle();

      expect(late.status).to.equal(503);
      expect(a.runs.late).to.equal(0);
    });

    it('a request that gave up does not hold up the requests after it', async () => {
      const a = await timeoutApp(false);
      const id = await login(a.t);

      const { late } = await lateWhileHeld(a, id, 'post');
      expect(late.status).to.equal(503);

      const next = await a.t.client.get('/read').set('Cookie', cookieFor(id));
      expect(next.status).to.equal(200);
      expect(next.body.data).to.deep.equal({ n: 1, held: true });
    });

    for (const [method, what, lateRuns] of [
      ['post', 'a writer', 0],
      ['get', 'a read whose commit waited for the exclusive lock', 1],
    ] as const) {
      it(`${what} that gave up is out of line: later reads share the lock with a long read still holding it`, async () => {
        const a = await timeoutApp(false, 150);
        const id = await login(a.t);
        const longRead = a.t.client.get('/hold').set('Cookie', cookieFor(id)).then((r) => r);
        await a.log.waitFor('enter hold');

        const late = await a.t.client[method]('/late').set('Cookie', cookieFor(id));
        expect(late.status, `${method.toUpperCase()} /late, behind the long read`).to.equal(503);
        // Nobody waits for the exclusive lock any more, so this read joins the long one.
        const read = await a.t.client.get('/read').set('Cookie', cookieFor(id));
        a.hold.open();

        expect(read.status, 'GET /read after the late request gave up').to.equal(200);
        expect(read.body.data).to.deep.equal({ n: 1 });
        expect((await longRead).status).to.equal(200);
        expect(a.runs.late, 'late handler runs').to.equal(lateRuns);
      });
    }

    it("a request that waits in process, then for the store's cross-process lock, reports the whole lockTimeout it waited", async () => {
      const storeWaits: number[] = [];
      let held = false;
      // The first writer gets the cross-process lock; after it, another process holds it for good.
      const store = Object.assign(memoryStore(), {
        writeLock: {
          async acquire(_id: string, timeoutMs: number) {
            storeWaits.push(timeoutMs);
            if (!held) {
              held = true;
              return async () => {};
            }
            await sleep(timeoutMs);
            throw new SessionLockTimeoutError(timeoutMs);
          },
        },
      });
      const a = await timeoutApp(true, 300, store);
      const id = await login(a.t);

      const holder = a.t.client.post('/hold').set('Cookie', cookieFor(id)).then((r) => r);
      await a.log.waitFor('enter hold');
      const late = a.t.client.post('/late').set('Cookie', cookieFor(id)).then((r) => r);
      await a.log.waitFor('queue /late'); // in line: sent is not there yet on a loaded machine
      await sleep(150); // half of lockTimeout in line behind the holder
      a.hold.open();
      expect((await holder).status).to.equal(200);
      expect((await late).status).to.equal(503);

      expect(storeWaits, 'what the store was given to wait: the second, what was left of lockTimeout').to.have.length(2);
      expect(storeWaits[1]).to.be.below(300);
      expect(a.runs.late, 'late handler runs').to.equal(0);
      expect(a.caught).to.have.length(1);
      expect(a.caught[0]).to.be.an.instanceOf(SessionLockTimeoutError);
      expect(String((a.caught[0] as Error).message)).to.include('after 300 ms');
    });

    it('a read that cannot get the exclusive lock for its commit within lockTimeout gets 503 and saves nothing', async () => {
      const log = new EventLog();
      const gates = { R: gate(), H: gate() };
      const t = await start({ store: memoryStore(), lockTimeout: 100, lockMode: loggingLockMode(log) }, {
        routes: {
          'POST /login': (ctx) => ctx.session.set('n', 1),
          'GET /r': async (ctx) => {
            log.add('enter R');
            await gates.R.promise;
            ctx.session.set('r', true);
          },
          'GET /hold': async (ctx) => {
            log.add('enter H');
            await gates.H.promise;
            return { n: ctx.session.get('n') };
          },
          'GET /read': (ctx) => describeSession(ctx),
        },
      });
      const id = await login(t);

      const reader = tagged(t, 'get', '/r', id, 'R');
      const holder = tagged(t, 'get', '/hold', id, 'H');
      await Promise.all([log.waitFor('enter R'), log.waitFor('enter H')]);
      gates.R.open(); // R's commit now waits for H, which shares the lock and holds on
      const readerRes = await reader;
      gates.H.open();
      const holderRes = await holder;

      expect(readerRes.status).to.equal(503);
      expect(holderRes.status).to.equal(200);
      const read = await t.client.get('/read').set('Cookie', cookieFor(id));
      expect(read.body.data).to.deep.equal({ n: 1 });
    });

    describe('a read-mode change is committed before the requests that queued behind its shared lock', () => {
      async function readThenQueuedWrite(readChange: (ctx: Context) => void, write: (ctx: Context) => void): Promise<{ data: unknown; statuses: number[] }> {
        const log = new EventLog();
        const reading = gate();
        const t = await start({ store: memoryStore(), lockMode: loggingLockMode(log) }, {
          routes: {
            'POST /login': (ctx) => {
              ctx.session.set('flash', 'Welcome');
              ctx.session.set('theme', 'dark');
            },
            'GET /page': async (ctx) => {
              log.add('enter R');
              await reading.promise;
              readChange(ctx);
            },
            'POST /save': (ctx) => {
              log.add('enter W');
              write(ctx);
            },
            'GET /read': (ctx) => describeSession(ctx),
          },
        });
        const id = await login(t);
        const page = tagged(t, 'get', '/page', id, 'R');
        await log.waitFor('enter R');
        const save = tagged(t, 'post', '/save', id, 'W');
        await log.waitFor('queue W'); // in line behind the read's shared lock
        reading.open();
        const statuses = (await Promise.all([page, save])).map((res) => res.status);
        expect(log.indexOf('enter W'), 'W runs after R').to.be.greaterThan(log.indexOf('enter R'));
        const read = await t.client.get('/read').set('Cookie', cookieFor(id));
        return { data: read.body.data, statuses };
      }

      it('a flash message the read consumed does not swallow the one the write behind it set', async () => {
        const outcome = await readThenQueuedWrite(
          (ctx) => ctx.session.delete('flash'),
          (ctx) => {
            ctx.session.set('flash', 'Saved');
            ctx.session.set('doc', 'v2');
          },
        );
        expect(outcome.statuses).to.deep.equal([200, 200]);
        expect(outcome.data).to.deep.equal({ theme: 'dark', flash: 'Saved', doc: 'v2' });
      });

      it("the read's set() of a key the write behind it also sets leaves the write's value", async () => {
        const outcome = await readThenQueuedWrite(
          (ctx) => ctx.session.set('theme', 'from-read'),
          (ctx) => ctx.session.set('theme', ctx.session.get('theme') === 'from-read' ? 'from-write, after the read' : 'from-write, before the read'),
        );
        expect(outcome.data).to.deep.equal({ flash: 'Welcome', theme: 'from-write, after the read' });
      });

      it("the read's clear() does not wipe what the write behind it saved", async () => {
        const outcome = await readThenQueuedWrite(
          (ctx) => ctx.session.clear(),
          (ctx) => ctx.session.set('cart', ['a', 'b']),
        );
        expect(outcome.data).to.deep.equal({ cart: ['a', 'b'] });
      });
    });

    it('a read that gave up waiting for the exclusive lock at its commit lets a read queued behind it join the reads still holding the lock', async () => {
      const log = new EventLog();
      const gates = { H: gate(), U: gate() };
      const t = await start({ store: memoryStore(), lockTimeout: 300, lockMode: loggingLockMode(log) }, {
        routes: {
          'POST /login': (ctx) => ctx.session.set('n', 1),
          'GET /hold': async () => {
            log.add('enter H');
            await gates.H.promise;
          },
          'GET /upgrade': async (ctx) => {
            log.add('enter U');
            await gates.U.promise;
            ctx.session.set('u', true);
            log.add('commit U');
          },
          'GET /read': (ctx) => describeSession(ctx),
        },
      });
      const id = await login(t);
      const holder = tagged(t, 'get', '/hold', id, 'H');
      const upgrader = tagged(t, 'get', '/upgrade', id, 'U');
      await Promise.all([log.waitFor('enter H'), log.waitFor('enter U')]);
      gates.U.open(); // U's commit waits for H
      await log.waitFor('commit U');
      await sleep(150); // R queues behind U's wait, well after it began
      const reader = tagged(t, 'get', '/read', id, 'R');
      const upgraderRes = await upgrader; // U gives up, 300 ms after it began to wait
      const readerRes = await reader; // R, still within its own 300 ms, joins H
      gates.H.open();
      const holderRes = await holder;

      expect(upgraderRes.status).to.equal(503);
      expect(readerRes.status, 'the read queued behind the upgrade').to.equal(200);
      expect(readerRes.body.data).to.deep.equal({ n: 1 });
      expect(holderRes.status).to.equal(200);
    });

    it('a read that changed nothing does not fail when its expiry push cannot get the exclusive lock in time: the push is left to a later request', async () => {
      const log = new EventLog();
      const slow = gate();
      const timeouts: unknown[] = [];
      // A get/set/destroy store: a push is get-merge-set there, so it needs the exclusive lock.
      const t = await start({ store: new ForgetfulStore(), maxAge: 2_000, lockTimeout: 100, lockMode: loggingLockMode(log) }, {
        routes: {
          'POST /login': (ctx) => ctx.session.set('user', 'ann'),
          'GET /slow': async (ctx) => {
            log.add('enter S');
            await slow.promise;
            return { user: ctx.session.get('user') };
          },
          'GET /me': (ctx) => ({ user: ctx.session.get('user') }),
        },
      });
      t.app.on('session:lock-timeout', (event) => timeouts.push(event));
      const id = await login(t);
      await sleep(250); // more than a tenth of maxAge: the next reads push the expiry out

      const s = tagged(t, 'get', '/slow', id, 'S');
      await log.waitFor('enter S');
      const me = await tagged(t, 'get', '/me', id, 'M'); // its push waits for S's shared lock, past lockTimeout
      slow.open();
      const sRes = await s;

      expect(me.status).to.equal(200);
      expect(me.body).to.deep.equal({ user: 'ann' });
      expect(sessionCookie(me), 'no push, so no new expiry to send').to.equal(undefined);
      expect(timeouts).to.deep.equal([]);
      expect(sRes.status).to.equal(200);
      expect(sessionCookie(sRes)?.value, 'the slow read pushes the expiry once it can').to.equal(id);
    });

    it("a read whose expiry push cannot get the exclusive lock because the store's lock service is down gets 503: only a timeout leaves the push to a later request", async () => {
      let lockServiceDown = false;
      // A get/set/destroy store whose write lock lives in another system.
      const store = Object.assign(new ForgetfulStore(), {
        writeLock: {
          async acquire() {
            if (lockServiceDown) throw new Error('lock service is down');
            return async () => {};
          },
        },
      });
      const t = await start({ store, maxAge: 1_000 }, {
        routes: {
          'POST /login': (ctx) => ctx.session.set('user', 'ann'),
          'GET /me': (ctx) => ({ user: ctx.session.get('user') }),
        },
      });
      const errors: unknown[] = [];
      t.app.on('error', (error: unknown) => errors.push(error));
      const id = await login(t);
      await sleep(250); // more than a tenth of maxAge: this read pushes the expiry out

      lockServiceDown = true;
      const res = await t.client.get('/me').set('Cookie', cookieFor(id));

      expect(res.status).to.equal(503);
      expect(errors).to.have.length(1);
      expect(errors[0]).to.be.an.instanceOf(SessionStoreError);
    });
  });

  describe('a lock lives only while some request holds or waits for it', () => {
    it('after a burst over 1,000 distinct sessions, with contention, errors and timeouts, no lock is left', async function () {
      this.timeout(300_000);
      const spy = spyOnLockTables();
      try {
        const store = memoryStore();
        const now = Date.now();
        const ids = Array.from({ length: 1_000 }, (_, i) => hexId(i + 1));
        for (const id of ids) await store.set(id, { data: { n: 0 }, createdAt: now, touchedAt: now }, 600_000);
        const tableSize = () => [...spy.tables].reduce((sum, table) => sum + table.size, 0);
        let largestTable = 0;
        const t = await start({ store, lockTimeout: 25 }, {
          routes: {
            'GET /burst': async (ctx) => {
              largestTable = Math.max(largestTable, tableSize());
              ctx.session.set(`r${String(ctx.query.k)}`, 1);
              await sleep(Number(ctx.query.ms));
            },
            'POST /burst': async (ctx) => {
              ctx.session.set('n', (ctx.session.get<number>('n') ?? 0) + 1);
              await sleep(Number(ctx.query.ms));
              if (ctx.query.fail !== undefined) throw new Error('failing on purpose');
            },
          },
        });

        const statuses: Record<number, number> = {};
        for (let first = 0; first < ids.length; first += 100) {
          const requests = ids.slice(first, first + 100).flatMap((id, i) => [
            t.client.post(`/burst?ms=${i % 10 === 0 ? 60 : 1}`).set('Cookie', cookieFor(id)),
            t.client.get('/burst?k=a&ms=2').set('Cookie', cookieFor(id)),
            t.client.post(`/burst?ms=1${i % 7 === 0 ? '&fail=1' : ''}`).set('Cookie', cookieFor(id)),
            t.client.get('/burst?k=b&ms=0').set('Cookie', cookieFor(hexId(1_000_000 + first + i))), // a session the store lacks
          ]);
          for (const res of await Promise.all(requests)) statuses[res.status] = (statuses[res.status] ?? 0) + 1;
        }
        console.log(`      burst statuses: ${JSON.stringify(statuses)}, largest lock table seen: ${largestTable}`);

        expect(spy.tables.size, 'lock tables in use').to.equal(1);
        expect(largestTable, 'locks held at once during the burst').to.be.greaterThan(1);
        expect(tableSize(), 'locks left after the burst').to.equal(0);
      } finally {
        spy.restore();
      }
    });

    it('after a MemoryStore failed, within the call, to read what the app itself put under the ID, the lock is free again', async () => {
      const store = memoryStore();
      const t = await start({ store, lockTimeout: 0 }, {
        routes: { 'POST /inc': (ctx) => ctx.session.set('n', (ctx.session.get<number>('n') ?? 0) + 1) },
      });
      const id = hexId(0xc0ffee);
      // Seeded by the app past the session (a migration, say): data that JSON cannot carry, which the store cannot read back.
      await store.set(id, { toJSON: () => undefined } as unknown as SessionData, 60_000);
      const failed = await t.client.post('/inc').set('Cookie', cookieFor(id));
      expect(failed.status, 'the load fails').to.equal(503);

      const now = Date.now();
      await store.set(id, { data: { n: 1 }, createdAt: now, touchedAt: now }, 60_000); // repaired
      const res = await t.client.post('/inc').set('Cookie', cookieFor(id));
      expect(res.status, 'follow-up request with lockTimeout 0').to.equal(200);
      expect(await storedData(store, id)).to.deep.equal({ n: 2 });
    });

    describe("a session's lock is free again (a follow-up with lockTimeout 0 gets it at once)", () => {
      let t: TestApp;
      let spy: SpyStore;
      let log: EventLog;
      let hang: ReturnType<typeof gate>;

      beforeEach(async () => {
        log = new EventLog();
        hang = gate();
        spy = new SpyStore(memoryStore());
        t = await start({ store: spy, lockTimeout: 0 }, {
          outer: async (ctx, next) => {
            try {
              await next();
            } finally {
              log.add(`done ${ctx.path}`);
            }
          },
          routes: {
            'POST /login': (ctx) => ctx.session.set('n', 0),
            'POST /throw': (ctx) => {
              ctx.session.set('x', 1);
              throw new Error('handler failed on purpose');
            },
            'POST /inc': (ctx) => ctx.session.set('n', (ctx.session.get<number>('n') ?? 0) + 1),
            'GET /read': (ctx) => describeSession(ctx),
            'POST /hang': async (ctx) => {
              log.add('enter hang');
              await hang.promise;
              ctx.session.set('y', 1);
            },
          },
        });
      });

      /** The store's next call of `method` fails (once). */
      function failNextCall(method: string): void {
        spy.hooks.before = (called) => {
          if (called === method) {
            spy.hooks = {};
            throw new Error('store down');
          }
        };
      }

      async function expectFree(id: string): Promise<void> {
        const res = await t.client.post('/inc').set('Cookie', cookieFor(id));
        expect(res.status, 'follow-up request with lockTimeout 0').to.equal(200);
      }

      it('after a handler threw', async () => {
        const id = await login(t);
        const res = await t.client.post('/throw').set('Cookie', cookieFor(id));
        expect(res.status).to.equal(500);
        await expectFree(id);
      });

      it('after the store failed to load the session', async () => {
        const id = await login(t);
        failNextCall('get');
        const res = await t.client.get('/read').set('Cookie', cookieFor(id));
        expect(res.status).to.equal(503);
        await expectFree(id);
      });

      it('after the store failed to commit', async () => {
        const id = await login(t);
        failNextCall('applyChanges');
        const res = await t.client.post('/inc').set('Cookie', cookieFor(id));
        expect(res.status).to.equal(503);
        await expectFree(id);
      });

      it('after its commit found the session logged out', async () => {
        const id = await login(t);
        const interrupted: unknown[] = [];
        t.app.on('session:interrupted', (e) => interrupted.push(e));
        const s = t.client.post('/hang').set('Cookie', cookieFor(id)).then((r) => r);
        await log.waitFor('enter hang');
        await spy.inner.destroy(id); // logged out elsewhere
        hang.open();
        expect((await s).status).to.equal(200);
        expect(interrupted).to.have.length(1);

        // The old cookie now names no session: its lock must still be free to find that out.
        const res = await t.client.get('/read').set('Cookie', cookieFor(id));
        expect(res.status).to.equal(200);
        expect(res.body.isNew).to.equal(true);
      });

      it('after the client hung up in the middle of the request', async () => {
        const id = await login(t);
        const { port } = t.server.address() as AddressInfo;
        const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/hang', headers: { cookie: cookieFor(id) } });
        req.on('error', () => undefined);
        req.end();
        await log.waitFor('enter hang');
        req.destroy();
        await sleep(20);
        hang.open();
        await log.waitFor('done /hang');
        await expectFree(id);
        const read = await t.client.get('/read').set('Cookie', cookieFor(id));
        expect(read.body.data).to.deep.equal({ n: 1, y: 1 });
      });
    });
  });
});

describe('LockTable, the per-session read/write lock table', function () {
  this.timeout(60_000);

  type Outcome = 'pending' | 'granted' | 'rejected';

  /** What has become of an acquire so far, asked at any time. */
  function track(p: Promise<unknown>): () => Outcome {
    let state: Outcome = 'pending';
    p.then(
      () => {
        state = 'granted';
      },
      () => {
        state = 'rejected';
      },
    );
    return () => state;
  }

  /** What became of an acquire once everything already queued has run. */
  async function outcome(p: Promise<unknown>): Promise<Outcome> {
    const state = track(p);
    await settle(3);
    return state();
  }

  it('two readers of one session hold the lock at the same time', async () => {
    const table = awaitedLockTable();
    const r1 = table.acquire('s', 'read', Infinity);
    const r2 = table.acquire('s', 'read', Infinity);
    expect(await outcome(r1)).to.equal('granted');
    expect(await outcome(r2)).to.equal('granted');
    (await r1)();
    (await r2)();
    expect(table.size).to.equal(0);
  });

  it('grants a free lock within the call when nobody is queued ahead; anything else waits in line', async () => {
    const table = new LockTable();
    const r1 = table.acquire('s', 'read', Infinity);
    const r2 = table.acquire('s', 'read', Infinity);
    expect(r1, 'a free lock').to.be.a('function');
    expect(r2, 'a reader joining readers').to.be.a('function');
    const w = table.acquire('s', 'write', Infinity);
    const r3 = table.acquire('s', 'read', Infinity);
    expect(w, 'a writer behind readers').to.be.instanceOf(Promise);
    expect(r3, 'a reader behind a waiting writer').to.be.instanceOf(Promise);
    expect(typeof table.acquire('t', 'write', Infinity), 'another session is not held up').to.equal('function');

    (r1 as Release)();
    (r2 as Release)();
    const release = await w;
    expect(table.acquire('s', 'read', Infinity), 'a reader while the writer holds').to.be.instanceOf(Promise);
    release();
    (await r3)();
  });

  it('what a writer hands over as it releases is taken once, by the request it lets in; a writer that leaves nothing clears it', async () => {
    const table = new LockTable();
    const committed = { values: new Map<string, unknown>([['n', 1]]), createdAt: 1, touchedAt: 2 };
    const w1 = table.acquire('s', 'write', Infinity) as Release;
    const [w2, w3, w4] = [1, 2, 3].map(() => table.acquire('s', 'write', Infinity));
    w1(committed);
    const release2 = await w2;
    expect(table.takeHandOver('s'), 'the next in line').to.equal(committed);
    expect(table.takeHandOver('s'), 'nobody after it').to.equal(undefined);
    release2(committed);
    release2(); // a second call does nothing
    const release3 = await w3; // lets it lie, and leaves nothing
    release3();
    const release4 = await w4;
    expect(table.takeHandOver('s'), 'cleared by the writer that left nothing').to.equal(undefined);
    release4();
    expect(table.size).to.equal(0);
  });

  for (const [how, step] of [['back', -3_600_000], ['forward', 3_600_000]] as const) {
    it(`what is left of lockTimeout for the store's cross-process lock is counted on the monotonic clock: a wall clock set ${how} an hour while waiting in process changes nothing`, async () => {
      const given: number[] = [];
      const remote = {
        async acquire(_id: string, timeoutMs: number) {
          given.push(timeoutMs);
          return async () => {};
        },
      };
      const locks = new SessionLocks(300, remote, new LockTable());
      const first = await locks.acquire('s', 'write');
      const second = locks.acquire('s', 'write'); // waits in process behind the first
      await withSteppedClock(step, async () => {
        await sleep(20);
        await first.release();
        await (await second).release();
      });
      expect(given, 'what the store was given to wait').to.have.length(2);
      expect(given[1], 'what was left of lockTimeout after about 20 ms in process').to.be.above(200).and.at.most(300);
    });
  }

  it('what a writer hands over goes to the request it lets in, even when a request queued behind that one has given up', async () => {
    const table = new LockTable();
    const patient = new SessionLocks(Infinity, undefined, table);
    const hasty = new SessionLocks(10, undefined, table);
    const committed = { values: new Map<string, unknown>([['n', 1]]), createdAt: 1, touchedAt: 2 };
    const writer = patient.acquire('s', 'write') as HeldLock;
    const next = patient.acquire('s', 'write');
    const behind = Promise.resolve(hasty.acquire('s', 'write')).then(
      () => 'granted',
      (error: unknown) => (error instanceof SessionLockTimeoutError ? 'timed out' : error),
    );
    expect(await behind, 'the request behind the next in line').to.equal('timed out');

    writer.handOver(committed);
    await writer.release();
    const held = await next;
    // The one behind reaches the head of the line only as this one is let in: it must not clear what was left for it.
    expect(held.inherited, 'what the next in line starts from').to.equal(committed);
    await held.release();
    expect(table.size).to.equal(0);
  });

  it('what a writer hands over while the request next in line has given up is dropped with it: the one behind loads the session, and sees what another process wrote since', async () => {
    const store = memoryStore();
    const storage = new Storage(store, new Expiry(60_000, undefined), false);
    const table = new LockTable();
    const patient = new SessionLocks(Infinity, undefined, table);
    // Only the order of the two timeouts matters: Node runs expired timers in the order they expire, so the one behind gives up first.
    const atHead = new SessionLocks(200, undefined, table);
    const hasty = new SessionLocks(10, undefined, table);
    const createdAt = Date.now();
    const committed = { values: new Map<string, unknown>([['n', 1]]), createdAt, touchedAt: createdAt };
    storage.save('s', committed, 60_000); // what the writer's commit left in the store, and hands over

    const writer = patient.acquire('s', 'write') as HeldLock;
    const first = atHead.acquire('s', 'write');
    expect(first, 'the head of the line, waiting for the writer').to.be.instanceOf(Promise);
    // It gives up, and leaves the line to the request behind it, which has given up too but still has to
    // come to the head (a turn of the event loop later). Before it does, the writer lets go and hands
    // over its commit, and another process sharing the store writes to the session. (The middleware
    // itself never lets go in that turn: its hand-over comes back from a round trip to Redis. This pins
    // the lock table's own rule, what LockTable.dropWaiter is for.)
    const headGaveUp = (first as Promise<HeldLock>).then(
      () => 'granted',
      (error: unknown) => {
        if (!(error instanceof SessionLockTimeoutError)) return error;
        writer.handOver(committed);
        void writer.release();
        void store.set('s', { data: { n: 1, other: 2 }, createdAt, touchedAt: Date.now() }, 60_000);
        return 'timed out';
      },
    );
    const behind = Promise.resolve(hasty.acquire('s', 'write')).then(
      () => 'granted',
      (error: unknown) => (error instanceof SessionLockTimeoutError ? 'timed out' : error),
    );
    const later = patient.acquire('s', 'write');
    expect(await behind, 'the request behind the head').to.equal('timed out');
    expect(await headGaveUp, 'the head of the line').to.equal('timed out');

    const held = await later;
    // The hand-over was for the request next in line when the writer let go, which had given up: this one comes later.
    expect(held.inherited, 'what the later request starts from').to.equal(undefined);
    const loaded = await storage.load('s', Date.now(), held.inherited);
    expect(dataOfValues(loaded!.values), 'the session the later request loads').to.deep.equal({ n: 1, other: 2 });
    await held.release();
    expect(table.size).to.equal(0);
  });

  it('any number of readers hold the lock at the same time (2,000 here)', async () => {
    const table = awaitedLockTable();
    let granted = 0;
    const readers = Array.from({ length: 2_000 }, () => table.acquire('s', 'read', Infinity));
    for (const reader of readers) void reader.then(() => granted++);
    await settle(5);
    const heldAtOnce = granted;
    for (const reader of readers) void reader.then((release) => release());
    await Promise.all(readers);
    await settle();

    expect(heldAtOnce, 'readers holding the lock at once').to.equal(2_000);
    expect(table.size).to.equal(0);
  });

  it('a writer waits until every reader ahead of it has released', async () => {
    const table = awaitedLockTable();
    const r1 = await table.acquire('s', 'read', Infinity);
    const r2 = await table.acquire('s', 'read', Infinity);
    const w = table.acquire('s', 'write', Infinity);
    expect(await outcome(w)).to.equal('pending');
    r1();
    expect(await outcome(w)).to.equal('pending');
    r2();
    expect(await outcome(w)).to.equal('granted');
    (await w)();
    expect(table.size).to.equal(0);
  });

  it('a reader waits for a writer ahead of it', async () => {
    const table = awaitedLockTable();
    const w = await table.acquire('s', 'write', Infinity);
    const r = table.acquire('s', 'read', Infinity);
    expect(await outcome(r)).to.equal('pending');
    w();
    expect(await outcome(r)).to.equal('granted');
    (await r)();
  });

  it('a writer holds the lock alone: a second writer waits for it', async () => {
    const table = awaitedLockTable();
    const w1 = await table.acquire('s', 'write', Infinity);
    const w2 = table.acquire('s', 'write', Infinity);
    expect(await outcome(w2)).to.equal('pending');
    w1();
    expect(await outcome(w2)).to.equal('granted');
    (await w2)();
    expect(table.size).to.equal(0);
  });

  it('waiters are served first come, first served, so later readers never overtake a waiting writer', async () => {
    const table = awaitedLockTable();
    const order: string[] = [];
    const holder = await table.acquire('s', 'read', Infinity);
    const queue: Record<string, Promise<Release>> = {};
    for (const [tag, mode] of [['W1', 'write'], ['R1', 'read'], ['R2', 'read'], ['W2', 'write'], ['R3', 'read']] as const) {
      queue[tag] = table.acquire('s', mode, Infinity);
      void queue[tag].then(() => order.push(tag));
    }
    await settle();
    expect(order, 'granted while the first reader holds').to.deep.equal([]);

    holder();
    await settle();
    expect(order).to.deep.equal(['W1']);
    (await queue.W1)();
    await settle();
    expect(order).to.deep.equal(['W1', 'R1', 'R2']);
    (await queue.R1)();
    await settle();
    expect(order).to.deep.equal(['W1', 'R1', 'R2']);
    (await queue.R2)();
    await settle();
    expect(order).to.deep.equal(['W1', 'R1', 'R2', 'W2']);
    (await queue.W2)();
    await settle();
    expect(order).to.deep.equal(['W1', 'R1', 'R2', 'W2', 'R3']);
    (await queue.R3)();
    expect(table.size).to.equal(0);
  });

  it('a waiter that runs out of time is rejected with SessionLockTimeoutError (code ESESSIONLOCKTIMEOUT, status 503)', async () => {
    const table = awaitedLockTable();
    const w = await table.acquire('s', 'write', Infinity);
    let error: unknown;
    await table.acquire('s', 'write', 20).then(
      () => undefined,
      (e: unknown) => {
        error = e;
      },
    );
    expect(error).to.be.an.instanceOf(SessionLockTimeoutError);
    expect(error).to.include({ code: 'ESESSIONLOCKTIMEOUT', status: 503 });
    w();
    await settle();
    expect(table.size).to.equal(0);
  });

  it('a waiter that timed out never gets the lock, and the one behind it gets it in turn', async () => {
    const table = awaitedLockTable();
    const w0 = await table.acquire('s', 'write', Infinity);
    const gaveUp = table.acquire('s', 'write', 20);
    const behind = table.acquire('s', 'write', Infinity);
    expect(await gaveUp.then(() => 'granted', () => 'rejected')).to.equal('rejected');
    expect(await outcome(behind)).to.equal('pending');

    w0();
    expect(await outcome(behind)).to.equal('granted');
    expect(table.size).to.equal(1);
    (await behind)();
    await settle();
    expect(table.size).to.equal(0);
  });

  it('a timeout takes nothing away from the holder: the lock stays exclusive until it releases', async () => {
    const table = awaitedLockTable();
    const w0 = await table.acquire('s', 'write', Infinity);
    const reader = table.acquire('s', 'read', 20);
    expect(await reader.then(() => 'granted', () => 'rejected')).to.equal('rejected');
    expect(table.size, 'the holder still counts').to.equal(1);

    const later = table.acquire('s', 'read', Infinity);
    expect(await outcome(later), 'a later reader while the writer holds').to.equal('pending');
    w0();
    expect(await outcome(later)).to.equal('granted');
    (await later)();
    await settle();
    expect(table.size).to.equal(0);
  });

  it('a free lock is granted even with a timeout of 0, a held one is not', async () => {
    const table = awaitedLockTable();
    const first = await table.acquire('s', 'write', 0);
    expect(await table.acquire('s', 'write', 0).then(() => 'granted', () => 'rejected')).to.equal('rejected');
    first();
    await settle();
    const again = await table.acquire('s', 'write', 0);
    again();
    expect(table.size).to.equal(0);
  });

  it('waiters with one lockTimeout time out in the order they came, each once lockTimeout has passed, past one granted in between', async () => {
    const table = awaitedLockTable();
    const holders = new Map<string, Release>();
    for (const id of ['a', 'b', 'c']) holders.set(id, await table.acquire(id, 'write', Infinity));
    const timedOut: string[] = [];
    const waited = new Map<string, number>();
    const waiting = new Map<string, Promise<Release | undefined>>();
    for (const id of ['a', 'b', 'c']) {
      const asked = performance.now();
      waiting.set(id, table.acquire(id, 'write', 150).then(
        (release) => release,
        (error: unknown) => {
          expect(error).to.be.an.instanceOf(SessionLockTimeoutError);
          waited.set(id, performance.now() - asked);
          timedOut.push(id);
          return undefined;
        },
      ));
      await sleep(30);
    }
    holders.get('b')!();
    const granted = await waiting.get('b');
    expect(granted, "b's waiter, let in by its holder").to.be.a('function');
    await Promise.all(waiting.values());

    expect(timedOut).to.deep.equal(['a', 'c']);
    // Node's timers count whole milliseconds: one may fire up to a millisecond before performance.now() says its time is up.
    expect(waited.get('a')).to.be.at.least(149);
    expect(waited.get('c')).to.be.at.least(149);
    // The granted one keeps its lock, however long past its own lockTimeout.
    await sleep(160);
    expect(await outcome(table.acquire('b', 'read', Infinity).then((release) => release())), 'a reader while b is held').to.equal('pending');
    granted!();
    holders.get('a')!();
    holders.get('c')!();
    await settle();
    expect(table.size).to.equal(0);
  });

  it('a process whose lock waits have all ended exits by itself: no lockTimeout timer keeps it alive', async function () {
    this.timeout(120_000);
    // The first waiter times out (its timer fires); the second is granted long before its 100 s.
    const code = await runChild(
      "const { LockTable } = require('./src/lock'); const table = new LockTable(); " +
        "const holder = table.acquire('s', 'write', Infinity); " +
        "table.acquire('s', 'write', 20).catch(() => holder()); " +
        "Promise.resolve(table.acquire('s', 'write', 100000)).then((release) => release());",
      60_000,
    );
    expect(code).to.equal(0);
  });

  it('a waiter times out by its own timer: under fake timers, when the fake clock reaches its lockTimeout', async () => {
    // A test suite on fake timers that leave perf_hooks' performance.now() alone (Jest's, sinon's before fake-timers 15) ticks past lockTimeout.
    const table = awaitedLockTable();
    const holder = await table.acquire('s', 'write', Infinity);
    await withFakeTimers(async (tick) => {
      const first = table.acquire('s', 'write', 5000);
      tick(30);
      const second = table.acquire('s', 'write', 5000);
      tick(4969);
      expect(await outcome(first), 'the first, 1 ms before its lockTimeout').to.equal('pending');
      tick(1);
      expect(await outcome(first), 'the first, at its lockTimeout').to.equal('rejected');
      expect(await outcome(second), 'the second, 30 ms before its lockTimeout').to.equal('pending');
      tick(30);
      expect(await outcome(second), 'the second, at its lockTimeout').to.equal('rejected');
    });
    holder();
    await settle();
    expect(table.size).to.equal(0);
  });

  it("a waiter whose timer was lost (fake timers uninstalled while it waited) holds up no other waiter's lockTimeout", async () => {
    const table = awaitedLockTable();
    const holderA = await table.acquire('a', 'write', Infinity);
    const holderB = await table.acquire('b', 'write', Infinity);
    let lost: Promise<Release> | undefined;
    await withFakeTimers(async () => {
      lost = table.acquire('a', 'write', 50);
    });
    const state = track(table.acquire('b', 'write', 50));
    await waitUntil(() => state() !== 'pending', "b's waiter ends");
    expect(state()).to.equal('rejected');
    holderA();
    holderB();
    (await lost!)();
    await settle();
    expect(table.size).to.equal(0);
  });

  it('releasing twice does nothing: only one waiting writer is let in', async () => {
    const table = awaitedLockTable();
    const w0 = await table.acquire('s', 'write', Infinity);
    const w1 = table.acquire('s', 'write', Infinity);
    const w2 = table.acquire('s', 'write', Infinity);
    w0();
    w0();
    await settle();
    expect(await outcome(w1)).to.equal('granted');
    expect(await outcome(w2)).to.equal('pending');
    (await w1)();
    (await w1)();
    expect(await outcome(w2)).to.equal('granted');
    (await w2)();
    expect(table.size).to.equal(0);
  });

  it('a writer let in by the last reader out is let in once: a reader that queues as that writer releases gets the lock', async () => {
    const table = new LockTable();
    const r1 = table.acquire('s', 'read', Infinity) as Release;
    const w = table.acquire('s', 'write', Infinity) as Promise<Release>;
    await settle(); // w waits at the head of the line for r1 to leave
    r1();
    const releaseW = await w;
    // In one step: a reader queues behind the writer, and the writer gives the lock back.
    const r2 = table.acquire('s', 'read', Infinity);
    expect(r2, 'a reader while the writer holds').to.be.instanceOf(Promise);
    releaseW();
    expect(await outcome(r2 as Promise<Release>), 'the reader, once the writer has gone').to.equal('granted');
    (await r2)();
    expect(table.size).to.equal(0);
  });

  it('a waiter that gave up in the middle of the line, reached only once every holder has left, leaves the table empty', async () => {
    const table = new LockTable();
    const w0 = table.acquire('s', 'write', Infinity) as Release;
    // W1 gives the lock back the moment it gets it (see WhenGranted): by the time the line reaches G, nobody holds it.
    const w1 = table.acquire('s', 'write', Infinity, (release) => release());
    const gaveUp = table.acquire('s', 'write', 20) as Promise<Release>;
    expect(await gaveUp.then(() => 'granted', () => 'rejected')).to.equal('rejected');
    w0();
    await w1;
    await settle();
    expect(table.size, 'no lock left behind').to.equal(0);
  });

  it('a removal is remembered for half a second only: memory does not grow with the number of sessions ever logged out', async () => {
    const table = new LockTable();
    const removals = (table as unknown as { removals: Map<string, number> }).removals;
    const logOut = (id: string): void => {
      const release = table.acquire(id, 'write', Infinity) as Release;
      table.removalStarted(id);
      table.removalDone(id);
      release();
    };
    await withMonotonicClockAhead(async (advance) => {
      for (let i = 0; i < 1_000; i++) logOut(`s${i}`);
      expect(table.removedAfterAsking('s0', table.nextTicket()), 'a request with a just logged-out ID').to.equal(true);
      advance(600);
      expect(table.removedAfterAsking('s0', table.nextTicket()), 'the same, more than half a second later').to.equal(false);
      logOut('last');
      expect(removals.size, 'removals remembered').to.equal(1);
      expect(table.size).to.equal(0);
    });
  });

  it('locks of different sessions are independent', async () => {
    const table = awaitedLockTable();
    const a = await table.acquire('a', 'write', Infinity);
    const b = table.acquire('b', 'write', 0);
    expect(await outcome(b)).to.equal('granted');
    expect(table.size).to.equal(2);
    a();
    (await b)();
    expect(table.size).to.equal(0);
  });

  it('size counts the sessions whose lock is held or waited for', async () => {
    const table = awaitedLockTable();
    expect(table.size).to.equal(0);
    const a = await table.acquire('a', 'read', Infinity);
    const b = await table.acquire('b', 'write', Infinity);
    const bWaiter = table.acquire('b', 'read', Infinity);
    expect(table.size).to.equal(2);
    a();
    expect(table.size).to.equal(1);
    b();
    (await bWaiter)();
    expect(table.size).to.equal(0);
  });

  it('after a random burst of reads, writes and timeouts the table is empty and no writer ever shared its lock', async function () {
    this.timeout(120_000);
    const table = awaitedLockTable();
    let seed = 12345;
    const random = () => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed / 2147483648;
    };
    const holders = new Map<string, { readers: number; writer: boolean }>();
    const violations: string[] = [];
    let granted = 0;
    let timedOut = 0;
    const timeouts = [0, 1, 5, 20, Infinity];
    const tasks: Array<Promise<void>> = [];

    for (let i = 0; i < 3_000; i++) {
      const id = `s${Math.floor(random() * 20)}`;
      const mode: LockMode = random() < 0.3 ? 'write' : 'read';
      const timeout = timeouts[Math.floor(random() * timeouts.length)];
      const holdMs = Math.floor(random() * 3);
      tasks.push(
        table.acquire(id, mode, timeout).then(
          async (release) => {
            granted++;
            const h = holders.get(id) ?? { readers: 0, writer: false };
            holders.set(id, h);
            if (h.writer || (mode === 'write' && h.readers > 0)) violations.push(`${mode} on ${id} granted while held`);
            if (mode === 'write') h.writer = true;
            else h.readers++;
            await sleep(holdMs);
            if (mode === 'write') h.writer = false;
            else h.readers--;
            release();
          },
          (error: unknown) => {
            if (!(error instanceof SessionLockTimeoutError)) violations.push(`unexpected ${String(error)}`);
            timedOut++;
          },
        ),
      );
      if (i % 50 === 0) await sleep(1);
    }
    await Promise.all(tasks);
    await settle();
    console.log(`      lock burst: ${granted} granted, ${timedOut} timed out`);

    expect(violations).to.deep.equal([]);
    expect(granted).to.be.greaterThan(0);
    expect(timedOut).to.be.greaterThan(0);
    expect(granted + timedOut).to.equal(3_000);
    expect(table.size).to.equal(0);
  });
});
