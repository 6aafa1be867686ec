/**
 * SPEC, "Expiry": maxAge is an idle lifetime pushed out at most every tenth
 * of maxAge, absoluteTimeout a hard one from creation, expired sessions are
 * never returned, and rolling re-sends the cookie. Real (short) lifetimes,
 * real waiting, over HTTP on loopback.
 */
import { MemoryStore, SessionStoreError } from '../src';
import type { Context } from 'koa';
import type { SessionEvent, SessionOptions, Store } from '../src';
import {
  ForgetfulStore,
  SpyStore,
  closedAfterEachTest,
  cookieFor,
  describeSession,
  expect,
  gate,
  hexId,
  sessionCookie,
  settle,
  sleep,
  startApp,
  waitUntil,
} from './support/concurrency';
import type { TestApp } from './support/concurrency';
import { withHeldClock } from './support/clock';

const cleanup = closedAfterEachTest();
const memoryStore = cleanup.memoryStore;

/** A store that expires records itself, and one that never does: only the middleware's push times keep the second honest. */
const STORES: Array<[string, () => Store]> = [
  ['a MemoryStore', () => memoryStore()],
  ['a koa-session style store (get/set/destroy only)', () => new ForgetfulStore()],
];

/** An app with: POST /login (user=ann), POST /bump (counter+1), POST /noop, POST /logout, GET /whoami. */
async function start(options: SessionOptions): Promise<TestApp> {
  const t = await startApp(options, {
    routes: {
      'POST /login': (ctx) => ctx.session.set('user', 'ann'),
      'POST /bump': (ctx) => ctx.session.set('bumps', (ctx.session.get<number>('bumps') ?? 0) + 1),
      'POST /noop': (ctx) => describeSession(ctx),
      'POST /logout': (ctx) => ctx.session.destroy(),
      'GET /whoami': (ctx) => describeSession(ctx),
    },
  });
  cleanup.track(t);
  return t;
}

async function login(t: TestApp): Promise<{ id: string; expires: Date; savedBy: number }> {
  const res = await t.client.post('/login');
  const savedBy = Date.now();
  expect(res.status).to.equal(200);
  const cookie = sessionCookie(res);
  expect(cookie, 'login sets the session cookie').to.not.equal(undefined);
  return { id: cookie!.value, expires: cookie!.expires as Date, savedBy };
}

/** `res` carries no Set-Cookie, and `spy`'s store took no write since it had `writesBefore`. */
function expectQuiet(res: { headers: Record<string, unknown> }, spy: SpyStore, writesBefore: number): void {
  expect(res.headers['set-cookie'], 'Set-Cookie').to.equal(undefined);
  expect(spy.writes, 'store writes').to.equal(writesBefore);
}

/** Sleeps until the wall clock reaches `at` (ms since epoch). */
async function sleepUntil(at: number): Promise<void> {
  const left = at - Date.now();
  if (left > 0) await sleep(left);
}

describe('Expiry', function () {
  this.timeout(60_000);

  describe('maxAge is an idle lifetime', () => {
    it('a session left unused for longer than maxAge is gone', async () => {
      const t = await start({ store: memoryStore(), maxAge: 400 });
      const { id } = await login(t);

      await sleep(600);
      const res = await t.client.get('/whoami').set('Cookie', cookieFor(id));

      expect(res.status).to.equal(200);
      expect(res.body.isNew).to.equal(true);
      expect(res.body.id).to.not.equal(id);
      expect(res.body.data).to.deep.equal({});
    });

    for (const [kind, makeStore] of STORES) {
      it(`a session that keeps being read stays alive long past maxAge, on ${kind}`, async () => {
        // Each read comes 300 ms after the last push: 1.2 s before the session would end, room for a loaded machine.
        const t = await start({ store: makeStore(), maxAge: 1_500 });
        const { id } = await login(t);

        for (let i = 0; i < 12; i++) {
          await sleep(300);
          const res = await t.client.get('/whoami').set('Cookie', cookieFor(id));
          expect(res.body, `read ${i + 1}, ${(i + 1) * 300} ms in`).to.deep.include({ id, isNew: false, data: { user: 'ann' } });
        }
      });
    }

    for (const [kind, makeStore] of STORES) {
      it(`a session stored as plain data by someone else (koa-session's shape) is kept alive by reads: the first one pushes, and writes it as the library's record, on ${kind}`, async () => {
        const store = makeStore();
        const t = await start({ store, maxAge: 10_000 });
        const id = hexId(0xfeed);
        await withHeldClock(async (clock) => {
          const seededAt = clock.at;
          await store.set(id, { user: 'ann' }, 10_000);

          clock.at = seededAt + 5_000; // no push time is known: this read pushes
          const first = await t.client.get('/whoami').set('Cookie', cookieFor(id));
          expect(first.body).to.deep.include({ id, isNew: false, data: { user: 'ann' } });
          const pushed = sessionCookie(first);
          expect(pushed?.value, 'Set-Cookie of the push').to.equal(id);
          expect(pushed!.expires!.getTime(), 'pushed Expires (to the second)').to.be.closeTo(clock.at + 10_000, 1_000);
          expect(await store.get(id), "the library's record").to.deep.equal({ data: { user: 'ann' }, createdAt: clock.at, touchedAt: clock.at });

          clock.at = seededAt + 5_500;
          const soon = await t.client.get('/whoami').set('Cookie', cookieFor(id));
          expect(soon.headers['set-cookie'], 'no push again within a tenth of maxAge').to.equal(undefined);

          clock.at = seededAt + 12_000; // past the end the seeding gave it
          const later = await t.client.get('/whoami').set('Cookie', cookieFor(id));
          expect(later.body).to.deep.include({ id, isNew: false, data: { user: 'ann' } });
        });
      });
    }

    for (const [method, path] of [['GET', '/whoami'], ['POST', '/noop']] as const) {
      it(`a ${method} that only loads the session, once a tenth of maxAge has passed, pushes its store expiry out`, async () => {
        const store = memoryStore();
        // The last checks run between the two ends, half the sleep (600 ms) before the pushed one: room for a loaded machine.
        const t = await start({ store, maxAge: 3_000 });
        const { id, savedBy } = await login(t);

        await sleep(1_200);
        const pushedFrom = Date.now();
        const push = await (method === 'GET' ? t.client.get(path) : t.client.post(path)).set('Cookie', cookieFor(id));
        expect(push.status).to.equal(200);

        // Past the end the login gave it, before the end the push gave it.
        await sleepUntil(Math.max(savedBy + 3_000 + 50, (savedBy + 3_000 + pushedFrom + 3_000) / 2));
        expect(Date.now(), 'still before the pushed end').to.be.below(pushedFrom + 3_000);
        expect(await store.get(id), 'store still holds the session').to.not.equal(undefined);
        const res = await t.client.get('/whoami').set('Cookie', cookieFor(id));
        expect(res.body).to.deep.include({ id, isNew: false });
      });
    }

    it('a read right after a save sends no Set-Cookie and writes nothing', async () => {
      const spy = new SpyStore(memoryStore());
      const t = await start({ store: spy });
      const { id } = await login(t);
      const writes = spy.writes;

      const res = await t.client.get('/whoami').set('Cookie', cookieFor(id));

      expect(res.body).to.deep.include({ id, isNew: false });
      expectQuiet(res, spy, writes);
    });

    it('a read right after an update sends no Set-Cookie and writes nothing', async () => {
      const spy = new SpyStore(memoryStore());
      const t = await start({ store: spy, maxAge: 60_000 });
      const { id } = await login(t);
      await sleep(50);
      const bump = await t.client.post('/bump').set('Cookie', cookieFor(id));
      expect(sessionCookie(bump)?.value, 'the update re-sends the cookie').to.equal(id);
      const writes = spy.writes;

      const res = await t.client.get('/whoami').set('Cookie', cookieFor(id));

      expect(res.body.data).to.deep.equal({ user: 'ann', bumps: 1 });
      expectQuiet(res, spy, writes);
    });

    it('a write-mode request that changes nothing, right after a save, sends no Set-Cookie and writes nothing', async () => {
      const spy = new SpyStore(memoryStore());
      const t = await start({ store: spy });
      const { id } = await login(t);
      const writes = spy.writes;

      const res = await t.client.post('/noop').set('Cookie', cookieFor(id));

      expect(res.body).to.deep.include({ id, isNew: false });
      expectQuiet(res, spy, writes);
    });

    it('reads that come within a tenth of maxAge of the last push send no Set-Cookie and write nothing', async () => {
      const spy = new SpyStore(memoryStore());
      const t = await start({ store: spy, maxAge: 25_000 });
      const { id, savedBy } = await login(t);
      const writes = spy.writes;

      for (let i = 0; i < 5; i++) {
        // Read i + 1 comes 300 ms × (i + 1) after the save, however late the one before came back: delays do not add up.
        // The last comes 1.5 s after it: 6 % of maxAge, a tenth being 2.5 s, a twentieth 1.25 s; hundreds of ms either side.
        await sleepUntil(savedBy + 300 * (i + 1));
        const res = await t.client.get('/whoami').set('Cookie', cookieFor(id));
        expect(res.body.isNew).to.equal(false);
        expect(res.headers['set-cookie'], `Set-Cookie on read ${i + 1}`).to.equal(undefined);
      }
      expect(spy.writes, 'store writes').to.equal(writes);
    });

    it('a read more than a tenth of maxAge after the last push sends Set-Cookie with a later Expires and one store write', async () => {
      const spy = new SpyStore(memoryStore());
      const t = await start({ store: spy, maxAge: 8_000 });
      const { id, expires } = await login(t);
      const writes = spy.writes;

      await sleep(1_200); // 15 % of maxAge (a tenth is 800 ms); 1.2 s also moves Expires (whole seconds) on
      const res = await t.client.get('/whoami').set('Cookie', cookieFor(id));

      const cookie = sessionCookie(res);
      expect(cookie?.value, 'Set-Cookie of the push').to.equal(id);
      expect(cookie!.expires!.getTime(), 'pushed Expires').to.be.greaterThan(expires.getTime());
      expect(spy.writes, 'store writes of the push').to.equal(writes + 1);
    });

    it('a read exactly a tenth of maxAge after the last push does not push yet; one millisecond later it does', async () => {
      const spy = new SpyStore(memoryStore());
      const t = await start({ store: spy, maxAge: 10_000 });
      await withHeldClock(async (clock) => {
        const { id } = await login(t);
        const writes = spy.writes;

        clock.at += 1_000;
        expectQuiet(await t.client.get('/whoami').set('Cookie', cookieFor(id)), spy, writes);

        clock.at += 1;
        const push = await t.client.get('/whoami').set('Cookie', cookieFor(id));
        expect(sessionCookie(push)?.value, 'Set-Cookie of the push').to.equal(id);
        expect(spy.writes, 'store writes of the push').to.equal(writes + 1);
      });
    });

    it('a read due to push whose store refuses the write fails with SessionStoreError (503) and no cookie; the session is untouched for the next read', async () => {
      const spy = new SpyStore(memoryStore());
      const t = await start({ store: spy, maxAge: 10_000 });
      const failures: unknown[] = [];
      t.app.on('error', (error: unknown) => failures.push(error));
      await withHeldClock(async (clock) => {
        const { id } = await login(t);
        clock.at += 1_001; // past a tenth of maxAge: this read pushes
        const refused = new Error('READONLY You can\'t write against a read only replica.');
        spy.hooks.before = (method) => {
          if (method !== 'get') throw refused;
        };
        const res = await t.client.get('/whoami').set('Cookie', cookieFor(id));
        expect(res.status).to.equal(503);
        expect(res.headers['set-cookie'], 'Set-Cookie').to.equal(undefined);
        expect(failures).to.have.length(1);
        expect(failures[0]).to.be.instanceOf(SessionStoreError).with.property('cause', refused);

        spy.hooks.before = undefined;
        const next = await t.client.get('/whoami').set('Cookie', cookieFor(id));
        expect(next.status).to.equal(200);
        expect(next.body).to.deep.include({ id, isNew: false, data: { user: 'ann' } });
        expect(sessionCookie(next)?.value, 'the push, now made').to.equal(id);
      });
    });

    it('the push counts as the last push: a read right after it sends nothing again', async () => {
      const spy = new SpyStore(memoryStore());
      // A tenth of maxAge (400 ms) is how soon after the push "right after" must be: room for a loaded machine.
      const t = await start({ store: spy, maxAge: 4_000 });
      const { id } = await login(t);
      await sleep(500); // more than a tenth of maxAge: the next read pushes
      const push = await t.client.get('/whoami').set('Cookie', cookieFor(id));
      expect(sessionCookie(push)?.value, 'Set-Cookie of the push').to.equal(id);
      const writes = spy.writes;

      const res = await t.client.get('/whoami').set('Cookie', cookieFor(id));

      expectQuiet(res, spy, writes);
    });

    it("the cookie's Expires is maxAge after the last push", async () => {
      const t = await start({ store: memoryStore(), maxAge: 3_600_000 });
      const before = Date.now();
      const { expires } = await login(t);
      const after = Date.now();

      expect(expires.getTime()).to.be.within(before + 3_600_000 - 1_000, after + 3_600_000);
    });
  });

  describe('absoluteTimeout is a hard lifetime from creation', () => {
    for (const [kind, makeStore] of STORES) {
      it(`absoluteTimeout ends a busy session that long after its creation, on ${kind}`, async () => {
        // The last reads come about 1.3 s after creation, 1.7 s before the end: room for a loaded machine.
        const t = await start({ store: makeStore(), maxAge: 60_000, absoluteTimeout: 3_000 });
        const createdFrom = Date.now();
        const { id, savedBy } = await login(t);

        let bumps = 0;
        while (Date.now() < createdFrom + 1_200) {
          await sleep(100);
          const write = await t.client.post('/bump').set('Cookie', cookieFor(id));
          bumps++;
          expect(write.status).to.equal(200);
          const read = await t.client.get('/whoami').set('Cookie', cookieFor(id));
          expect(read.body, `alive ${Date.now() - createdFrom} ms after creation`).to.deep.include({ id, isNew: false });
          expect(read.body.data).to.deep.equal({ user: 'ann', bumps });
        }
        await sleepUntil(savedBy + 3_000 + 100);
        const res = await t.client.get('/whoami').set('Cookie', cookieFor(id));

        expect(res.body.isNew, 'a new session after absoluteTimeout').to.equal(true);
        expect(res.body.data).to.deep.equal({});
      });
    }

    it("the cookie's Expires is the absolute end, not maxAge after the last push", async () => {
      const t = await start({ store: memoryStore(), maxAge: 3_600_000, absoluteTimeout: 60_000 });
      const before = Date.now();
      const { id, expires } = await login(t);
      await sleep(1_100); // long enough for any later end to show in Expires (whole seconds)
      const bump = await t.client.post('/bump').set('Cookie', cookieFor(id));

      expect(expires.getTime()).to.be.within(before + 60_000 - 1_000, before + 60_000 + 1_000);
      expect(sessionCookie(bump)?.value, 'an update re-sends the cookie').to.equal(id);
      expect(sessionCookie(bump)!.expires!.getTime(), 'Expires after an update: still the absolute end').to.equal(expires.getTime());
    });

    it('an update does not keep the stored session past the absolute end', async () => {
      const store = memoryStore();
      const t = await start({ store, maxAge: 600_000, absoluteTimeout: 1_500 });
      const { id, savedBy } = await login(t);

      await sleep(700);
      expect((await t.client.post('/bump').set('Cookie', cookieFor(id))).status).to.equal(200);
      await sleepUntil(savedBy + 1_500 + 300);

      expect(await store.get(id), 'what the store still holds past the absolute end').to.equal(undefined);
    });

    it('a write whose handler runs past the absolute end, on a store with its own applyChanges, answers 200 with no cookie, not a 503', async () => {
      // The store is asked to apply a change to a session that has just ended: it must never be handed a lifetime of 0 or less.
      const store = new SpyStore(memoryStore());
      const inHandler = gate();
      const release = gate();
      const t = cleanup.track(
        await startApp({ store, maxAge: 60_000, absoluteTimeout: 10_000 }, {
          routes: {
            'POST /login': (ctx) => ctx.session.set('user', 'ann'),
            'POST /slow': async (ctx) => {
              inHandler.open();
              await release.promise;
              ctx.session.set('note', 'late');
            },
          },
        }),
      );
      let interrupted = false;
      t.app.on('session:interrupted', () => {
        interrupted = true;
      });
      await withHeldClock(async (clock) => {
        const { id } = await login(t);
        const slow = t.client.post('/slow').set('Cookie', cookieFor(id)).then((res) => res);
        await inHandler.promise;
        clock.at += 10_001; // the absolute end passes while the handler runs
        release.open();
        const res = await slow;

        expect(res.status, 'the store did not fail').to.equal(200);
        expect(sessionCookie(res), 'a cookie for the ended session').to.equal(undefined);
        expect(interrupted, 'session:interrupted').to.equal(true);
        expect(await store.get(id), 'the ended session').to.equal(undefined);
      });
    });

    it('an expired session past its absoluteTimeout is not returned by a store that never expires anything', async () => {
      const t = await start({ store: new ForgetfulStore(), maxAge: 60_000, absoluteTimeout: 400 });
      const { id } = await login(t);

      await sleep(550);
      const res = await t.client.get('/whoami').set('Cookie', cookieFor(id));

      expect(res.body.isNew).to.equal(true);
      expect(res.body.data).to.deep.equal({});
    });
  });

  describe('an expired session is never returned, even before any sweep', () => {
    for (const [kind, makeStore] of STORES) {
      it(`a session is gone at the very millisecond its maxAge runs out, and not a millisecond before, on ${kind}`, async () => {
        const t = await start({ store: makeStore(), maxAge: 10_000 });
        await withHeldClock(async (clock) => {
          const { id } = await login(t);

          clock.at += 9_999;
          const before = await t.client.get('/whoami').set('Cookie', cookieFor(id));
          expect(before.body, 'a millisecond before the end').to.deep.include({ id, isNew: false, data: { user: 'ann' } });

          // That read pushed the expiry out (more than a tenth of maxAge had passed): the session now ends maxAge after it.
          clock.at += 10_000;
          const res = await t.client.get('/whoami').set('Cookie', cookieFor(id));
          expect(res.body.isNew, 'at the end').to.equal(true);
          expect(res.body.id).to.not.equal(id);
          expect(res.body.data).to.deep.equal({});
        });
      });
    }

    /**
     * A commit that waits for the exclusive lock (behind a request holding
     * it shared) while the session reaches its end must find it gone, and
     * write nothing, even on a store that never expires anything itself.
     * `pastEnd` (added to the 500 ms before /change) lands past the end but,
     * for the idle rows, short of maxAge after the planned time: a commit
     * dated by its plan would keep the session alive, and /whoami would see it.
     */
    const WAITED_PAST_THE_END: Array<{ what: string; options: SessionOptions; pastEnd: number; change(ctx: Context): Promise<void> | void; stores?: typeof STORES }> = [
      {
        what: "a regenerate() does not carry the session on under a new ID (past absoluteTimeout)",
        options: { maxAge: 60_000, absoluteTimeout: 1_000 },
        pastEnd: 700,
        change: (ctx) => ctx.session.regenerate(),
      },
      {
        what: 'a change does not bring the session back (past its idle end)',
        options: { maxAge: 10_000 },
        pastEnd: 9_600,
        change: (ctx) => ctx.session.set('note', 'late'),
      },
      {
        what: 'a change after the response (no cookie can follow) does not bring the session back',
        options: { maxAge: 10_000 },
        pastEnd: 9_600,
        change: (ctx) => {
          ctx.respond = false;
          ctx.res.writeHead(204).end();
          ctx.session.set('note', 'late');
        },
      },
      {
        what: 'a push of the idle expiry (nothing changed) does not bring the session back (past its idle end)',
        // A push is due once a tenth of maxAge has passed since the last one: the 500 ms before /change.
        options: { maxAge: 4_000 },
        pastEnd: 3_600,
        change: () => undefined,
        // A MemoryStore takes a push under the shared lock (it applies it atomically), so there it never waits.
        stores: STORES.filter(([kind]) => kind !== 'a MemoryStore'),
      },
    ];
    for (const { what, options, pastEnd, change, stores = STORES } of WAITED_PAST_THE_END) {
      for (const [kind, makeStore] of stores) {
        it(`waiting for the exclusive lock while the session ends, ${what}, on ${kind}`, async () => {
          const held = gate();
          let changed = false;
          const t = cleanup.track(
            await startApp({ store: makeStore(), ...options }, {
              routes: {
                'POST /login': (ctx) => ctx.session.set('user', 'ann'),
                'GET /hold': () => held.promise,
                // A GET holds the lock shared: a change waits for the exclusive lock at commit.
                'GET /change': async (ctx) => {
                  await change(ctx);
                  changed = true;
                  return ctx.respond === false ? undefined : describeSession(ctx);
                },
                'GET /whoami': (ctx) => describeSession(ctx),
              },
            }),
          );
          let interrupted = false;
          t.app.on('session:interrupted', ({ ctx }: SessionEvent) => {
            if (ctx.path === '/change') interrupted = true;
          });
          await withHeldClock(async (clock) => {
            const { id } = await login(t);
            const holding = t.client.get('/hold').set('Cookie', cookieFor(id)).then((res) => res);
            clock.at += 500; // loaded, changed and planned while the session is live
            const changing = t.client.get('/change').set('Cookie', cookieFor(id)).then((res) => res);
            await waitUntil(() => changed, 'the handler changed the session');
            await settle(); // its commit now waits for the exclusive lock, behind /hold's shared one

            clock.at += pastEnd; // past the session's end while it waits
            held.open();
            const [, res] = await Promise.all([holding, changing]);
            await waitUntil(() => interrupted, "/change's commit found the session gone");

            expect(sessionCookie(res), 'a session cookie').to.equal(undefined);
            for (const named of new Set([id, (res.body as { id?: string }).id ?? id])) {
              const after = await t.client.get('/whoami').set('Cookie', cookieFor(named));
              expect(after.body.isNew, 'a session under an ID /change had').to.equal(true);
              expect(after.body.data).to.deep.equal({});
            }
          });
        });
      }
    }

    it('an idle-expired session on a store that never expires anything comes back as a new empty session', async () => {
      const store = new ForgetfulStore();
      const t = await start({ store, maxAge: 300 });
      const { id } = await login(t);

      await sleep(450);
      expect(store.records.has(id), 'the store still keeps the record').to.equal(true);
      const res = await t.client.get('/whoami').set('Cookie', cookieFor(id));

      expect(res.body.isNew).to.equal(true);
      expect(res.body.id).to.not.equal(id);
      expect(res.body.data).to.deep.equal({});
    });

    it('an expired session on a MemoryStore that has not swept yet is not returned', async () => {
      const store = new MemoryStore({ cleanupInterval: 3_600_000 });
      cleanup.adopt(store);
      const t = await start({ store, maxAge: 300 });
      const { id } = await login(t);

      await sleep(450);
      expect(await store.get(id), 'store.get of the expired ID').to.equal(undefined);
      const res = await t.client.get('/whoami').set('Cookie', cookieFor(id));
      expect(res.body.isNew).to.equal(true);
    });
  });

  describe('cookieExpires: false (a cookie that ends with the browser session)', () => {
    it('the cookie carries no Expires, and the server still ends the session after maxAge idle', async () => {
      const store = memoryStore();
      const t = await start({ store, maxAge: 10_000, cookieExpires: false });
      await withHeldClock(async (clock) => {
        const res = await t.client.post('/login');
        const cookie = sessionCookie(res);
        expect(cookie?.value, 'the login sets the cookie').to.match(/^[0-9a-f]{64}$/);
        expect(cookie!.raw, 'no Expires').to.not.match(/expires=/i);
        const id = cookie!.value;

        clock.at += 10_001; // a browser kept the cookie open past maxAge of idleness
        const late = await t.client.get('/whoami').set('Cookie', cookieFor(id));
        expect(late.body.isNew, 'the session is gone').to.equal(true);
        expect(late.body.data).to.deep.equal({});
        expect(await store.get(id), 'nor does the store hold it').to.equal(undefined);
      });
    });

    it('use keeps it alive as usual: a read that pushes the expiry re-sends the cookie, still without Expires', async () => {
      const store = memoryStore();
      const t = await start({ store, maxAge: 10_000, cookieExpires: false });
      await withHeldClock(async (clock) => {
        const id = sessionCookie(await t.client.post('/login'))!.value;

        clock.at += 6_000; // more than a tenth of maxAge: this read pushes the expiry to 16 s
        const push = await t.client.get('/whoami').set('Cookie', cookieFor(id));
        expect(sessionCookie(push)?.value, 'the re-sent cookie').to.equal(id);
        expect(sessionCookie(push)!.raw, 'no Expires').to.not.match(/expires=/i);

        clock.at += 6_000; // 12 s: past the end the login gave it, before the pushed one
        const res = await t.client.get('/whoami').set('Cookie', cookieFor(id));
        expect(res.body).to.deep.include({ id, isNew: false, data: { user: 'ann' } });
      });
    });

    it('absoluteTimeout still ends the session, and a logout still expires the cookie with a date in the past', async () => {
      const t = await start({ store: memoryStore(), maxAge: 60_000, absoluteTimeout: 20_000, cookieExpires: false });
      await withHeldClock(async (clock) => {
        const id = sessionCookie(await t.client.post('/login'))!.value;
        clock.at += 15_000;
        expect((await t.client.get('/whoami').set('Cookie', cookieFor(id))).body.isNew, 'alive before the absolute end').to.equal(false);
        clock.at += 5_001;
        expect((await t.client.get('/whoami').set('Cookie', cookieFor(id))).body.isNew, 'gone after it').to.equal(true);

        const other = sessionCookie(await t.client.post('/login'))!.value;
        const logout = await t.client.post('/logout').set('Cookie', cookieFor(other));
        const expired = sessionCookie(logout);
        expect(expired?.value, 'the logout sends the cookie empty').to.equal('');
        expect(expired!.expires!.getTime(), 'expired: the browser drops it').to.equal(0);
      });
    });
  });

  describe('rolling', () => {
    it('with rolling, every response of a live session re-sends the cookie, even a read right after a save', async () => {
      const t = await start({ store: memoryStore(), rolling: true });
      const { id } = await login(t);

      for (let i = 0; i < 3; i++) {
        const res = await t.client.get('/whoami').set('Cookie', cookieFor(id));
        expect(sessionCookie(res)?.value, `Set-Cookie on read ${i + 1}`).to.equal(id);
        expect(sessionCookie(res)!.expires!.getTime()).to.be.greaterThan(Date.now());
      }
      const noop = await t.client.post('/noop').set('Cookie', cookieFor(id));
      expect(sessionCookie(noop)?.value, 'Set-Cookie on a write-mode request that changed nothing').to.equal(id);
    });

    it('with rolling, a re-sent cookie expires when the stored session does (maxAge after the last push), not maxAge after this read', async () => {
      const t = await start({ store: memoryStore(), rolling: true, maxAge: 60_000 });
      const { id, expires } = await login(t);

      await sleep(1_100); // well within a tenth of maxAge, so no push; long enough for a later end to show in Expires
      const res = await t.client.get('/whoami').set('Cookie', cookieFor(id));

      expect(sessionCookie(res)?.value, 'the re-sent cookie').to.equal(id);
      expect(sessionCookie(res)!.expires!.getTime(), 'its Expires: the one the login sent').to.equal(expires.getTime());
    });

    it('with rolling, a session that is only read stays alive past maxAge after its last write: the reads push its store expiry out', async () => {
      const store = memoryStore();
      const t = await start({ store, maxAge: 10_000, rolling: true });
      await withHeldClock(async (clock) => {
        const { id } = await login(t);

        clock.at += 6_000; // more than a tenth of maxAge: this read pushes the expiry to 16 s
        const push = await t.client.get('/whoami').set('Cookie', cookieFor(id));
        expect(sessionCookie(push)?.value, 'the re-sent cookie').to.equal(id);

        clock.at += 6_000; // 12 s: past the end the login gave it, before the pushed one
        const res = await t.client.get('/whoami').set('Cookie', cookieFor(id));
        expect(res.body).to.deep.include({ id, isNew: false, data: { user: 'ann' } });
        expect(await store.get(id), 'the store still holds it').to.not.equal(undefined);
      });
    });

    it('with rolling, a new session that was never changed still gets no cookie', async () => {
      const t = await start({ store: memoryStore(), rolling: true });

      const res = await t.client.get('/whoami');

      expect(res.body.isNew).to.equal(true);
      expect(res.headers['set-cookie']).to.equal(undefined);
    });

    // Past its idle end a push is due at commit; past its absolute end, with a long maxAge, no push is due: only the re-sent cookie.
    const ENDS = [
      { end: 'its idle end', options: { maxAge: 4_000 }, sinceLogin: 100, during: 4_500 },
      { end: 'its idle end, loaded once a push was due', options: { maxAge: 4_000 }, sinceLogin: 500, during: 4_500 },
      { end: 'its absolute end, no push due', options: { maxAge: 600_000, absoluteTimeout: 4_000 }, sinceLogin: 100, during: 4_000 },
    ];
    for (const { end, options, sinceLogin, during } of ENDS) {
      it(`with rolling, a read during which the session reaches ${end} re-sends no cookie and reports session:interrupted`, async () => {
        const inHandler = gate();
        const release = gate();
        const store = memoryStore();
        const t = cleanup.track(
          await startApp({ store, ...options, rolling: true }, {
            routes: {
              'POST /login': (ctx) => ctx.session.set('user', 'ann'),
              'GET /slow': async (ctx) => {
                inHandler.open();
                await release.promise;
                return describeSession(ctx);
              },
            },
          }),
        );
        const interrupted: string[] = [];
        t.app.on('session:interrupted', ({ ctx }: SessionEvent) => interrupted.push(ctx.path));
        await withHeldClock(async (clock) => {
          const { id } = await login(t);
          clock.at += sinceLogin;
          const slow = t.client.get('/slow').set('Cookie', cookieFor(id)).then((res) => res);
          await inHandler.promise;
          clock.at += during; // past the session's end while the handler runs
          release.open();
          const res = await slow;

          expect(res.status).to.equal(200);
          expect(res.body).to.deep.include({ id, data: { user: 'ann' } });
          expect(res.headers['set-cookie'], 'Set-Cookie for the ended session').to.equal(undefined);
          expect(interrupted).to.deep.equal(['/slow']);
          expect(await store.get(id), 'the ended session').to.equal(undefined);
        });
      });
    }

    it('with rolling, an expired session gets a fresh one and no cookie for the old ID', async () => {
      const t = await start({ store: memoryStore(), rolling: true, maxAge: 300 });
      const { id } = await login(t);

      await sleep(450);
      const res = await t.client.get('/whoami').set('Cookie', cookieFor(id));

      expect(res.body.isNew).to.equal(true);
      expect(sessionCookie(res)?.value ?? '(none)').to.not.equal(id);
    });
  });
});
