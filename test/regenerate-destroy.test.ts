/**
 * SPEC, "Session": the regenerate() and destroy() bullets. Over HTTP on
 * loopback; where the SPEC says "before the response is sent" or "resolves
 * once the store has removed it", the store's destroy is made slow, so a
 * library that did not wait for it would be caught.
 */
import { MemoryStore, SessionStoreError } from '../src';
import type { SessionOptions } from '../src';
import {
  SpyStore,
  cookieFor,
  gate,
  describeSession,
  expect,
  sessionCookie,
  setCookies,
  settle,
  sleep,
  startApp,
  storedData,
  waitUntil,
} from './support/concurrency';
import type { Gate, TestApp } from './support/concurrency';
import { warningsDuring } from './support/app';
import { withHeldClock } from './support/clock';

const HEX64 = /^[0-9a-f]{64}$/;

/** GET /linger opens lingerHeld once it holds the lock, and holds it until lingerRelease opens. */
let lingerHeld: Gate | undefined;
let lingerRelease: Gate | undefined;

/** Opened by the regenerate routes once regenerate() has resolved in the handler. */
let regeneratedInHandler: Gate | undefined;

/** Set by POST /logout-late-seen once its late destroy() has resolved: what ctx.session held then. */
let seenAfterLateLogout: { keys: string[]; data: Record<string, unknown> } | undefined;

/** Opened by GET /set-then-late-set once its late set() has run. */
let lateSetDone: Gate | undefined;

/** Set by POST /logout-caught. */
let afterCaughtFailure: { id: string; data: Record<string, unknown>; idAfterSet: string } | undefined;

const running: TestApp[] = [];
const stores: MemoryStore[] = [];

afterEach(async () => {
  await Promise.all(running.splice(0).map((t) => t.close()));
  for (const store of stores.splice(0)) store.close();
});

interface Setup {
  t: TestApp;
  /** The store the app uses; its destroy() takes `slowDestroyMs` when set. */
  spy: SpyStore;
  memory: MemoryStore;
}

async function start(options: SessionOptions = {}, slowDestroyMs = 0): Promise<Setup> {
  const memory = new MemoryStore();
  stores.push(memory);
  const spy = new SpyStore(memory);
  if (slowDestroyMs > 0) {
    spy.hooks.before = async (method) => {
      if (method === 'destroy') await sleep(slowDestroyMs);
    };
  }
  const regenerate = async (ctx: Parameters<typeof describeSession>[0]) => {
    const before = ctx.session.id;
    const dataBefore = ctx.session.toJSON();
    const pending = ctx.session.regenerate();
    const atOnce = ctx.session.id;
    await pending;
    regeneratedInHandler?.open();
    if (typeof ctx.query.set === 'string') ctx.session.set(ctx.query.set, true);
    return { before, atOnce, after: ctx.session.id, dataBefore, dataAfter: ctx.session.toJSON() };
  };
  const destroy = async (ctx: Parameters<typeof describeSession>[0]) => {
    const oldId = ctx.session.id;
    await ctx.session.destroy();
    const stillStored = (await memory.get(oldId)) !== undefined;
    const view = {
      oldId,
      stillStored,
      keys: ctx.session.keys(),
      user: ctx.session.get('user') ?? null,
      hasUser: ctx.session.has('user'),
      data: ctx.session.toJSON(),
    };
    if (typeof ctx.query.set === 'string') ctx.session.set(ctx.query.set, [1]);
    return { ...view, newId: ctx.session.id };
  };
  const t = await startApp({ store: spy, ...options }, {
    routes: {
      'POST /login': (ctx) => {
        ctx.session.set('user', 'ann');
        ctx.session.set('roles', ['reader']);
      },
      'POST /regenerate': regenerate,
      'GET /regenerate': regenerate,
      'POST /regenerate-new': async (ctx) => {
        const before = ctx.session.id;
        await ctx.session.regenerate();
        ctx.session.set('user', 'bob');
        return { before, after: ctx.session.id };
      },
      'POST /logout': destroy,
      'GET /logout': destroy,
      'POST /logout-then-sets': async (ctx) => {
        await ctx.session.destroy();
        ctx.session.set('cart', [1]);
        const afterFirstSet = ctx.session.id;
        ctx.session.set('theme', 'dark');
        return { afterFirstSet, afterSecondSet: ctx.session.id };
      },
      'POST /logout-regenerate-set': async (ctx) => {
        await ctx.session.destroy();
        await ctx.session.regenerate();
        const regenerated = ctx.session.id;
        ctx.session.set('cart', [1]);
        return { regenerated, afterSet: ctx.session.id };
      },
      // A logout that forgot `await`: the handler returns while the store is still removing the session.
      // ?linger=ms: the handler goes on that long after it (the removal may fail before it returns).
      'POST /logout-unawaited': async (ctx) => {
        const id = ctx.session.id;
        void ctx.session.destroy();
        const emptiedAtOnce = ctx.session.keys().length === 0;
        if (typeof ctx.query.linger === 'string') await sleep(Number(ctx.query.linger));
        return { emptiedAtOnce, storedAtReturn: (await memory.get(id)) !== undefined };
      },
      // Two logouts one after the other, each awaited, with a set() (the new session) between them.
      'POST /logout-set-logout-awaited': async (ctx) => {
        await ctx.session.destroy();
        ctx.session.set('flash', 'bye');
        await ctx.session.destroy();
        return { keys: ctx.session.keys() };
      },
      'POST /logout-unawaited-then-awaited': async (ctx) => {
        void ctx.session.destroy();
        await ctx.session.destroy();
      },
      // A logout that forgot `await`, a set() (the new session), then a second logout while the first is still removing.
      'POST /logout-set-logout': async (ctx) => {
        void ctx.session.destroy();
        ctx.session.set('flash', 'bye');
        await ctx.session.destroy();
        return { keys: ctx.session.keys() };
      },
      // The same, the second logout koa-session's way.
      'POST /logout-set-null': (ctx) => {
        void ctx.session.destroy();
        ctx.session.set('flash', 'bye');
        (ctx as { session: unknown }).session = null;
      },
      'POST /regenerate-then-logout-caught': async (ctx) => {
        await ctx.session.regenerate();
        try {
          await ctx.session.destroy();
        } catch {
          return { id: ctx.session.id };
        }
      },
      'POST /logout-retried': async (ctx) => {
        for (let tries = 1; ; tries++) {
          try {
            await ctx.session.destroy();
            return { tries };
          } catch {
            if (tries === 3) throw new Error('gave up');
          }
        }
      },
      // A task the handler did not await logs out after the response's commit (too late: a warning).
      'POST /logout-late': (ctx) => {
        const session = ctx.session;
        setTimeout(() => void session.destroy(), 10);
      },
      // The same, and what ctx.session holds once that late destroy() has removed the session.
      // A regenerate() from a task the handler did not await, 10 ms in: while a slow store saves the session.
      'POST /create-then-late-regenerate': (ctx) => {
        ctx.session.set('cart', ['book']);
        const session = ctx.session;
        setTimeout(() => void session.regenerate(), 10);
      },
      'POST /login-then-late-regenerate': async (ctx) => {
        await ctx.session.regenerate();
        ctx.session.set('user', 'alice');
        const session = ctx.session;
        setTimeout(() => void session.regenerate(), 10);
      },
      'POST /logout-late-seen': (ctx) => {
        const session = ctx.session;
        setTimeout(() => {
          void session.destroy().then(() => {
            seenAfterLateLogout = { keys: session.keys(), data: session.toJSON() };
          });
        }, 10);
      },
      // A logout that forgot `await`, then a set() (after the destroy() call, as the SPEC's "a set() after destroy()").
      'POST /logout-unawaited-then-set': (ctx) => {
        void ctx.session.destroy();
        try {
          ctx.session.set('flash', 'bye');
          return { outcome: 'set' };
        } catch {
          return { outcome: 'refused' };
        }
      },
      // A retry chained on a destroy() the handler did not await.
      'POST /logout-retried-unawaited': (ctx) => {
        void ctx.session.destroy().catch(() => ctx.session.destroy());
      },
      // koa-session's logout, then a handler error of its own.
      'POST /logout-null-then-fail': (ctx) => {
        (ctx as { session: unknown }).session = null;
        throw Object.assign(new Error('handler failed'), { status: 400, expose: true });
      },
      // Server-sent events: the headers go out before the logout, whose failure the handler catches.
      'POST /logout-streamed': async (ctx) => {
        ctx.status = 200;
        ctx.type = 'text/event-stream';
        ctx.flushHeaders();
        ctx.body = 'data: bye\n\n';
        try {
          await ctx.session.destroy();
        } catch {
          // the app goes on streaming
        }
      },
      // Server-sent events, then koa-session's logout (ctx.session = null), which the handler cannot await.
      'POST /logout-null-streamed': (ctx) => {
        ctx.status = 200;
        ctx.type = 'text/event-stream';
        ctx.flushHeaders();
        ctx.body = 'data: bye\n\n';
        (ctx as { session: unknown }).session = null;
      },
      // A set() while the removal is under way, then what the handler sees once the failure is caught,
      // then a set() after it; both go with the failure (see RemovalFailure).
      'POST /logout-caught': async (ctx) => {
        const removal = ctx.session.destroy();
        ctx.session.set('flash', 'bye');
        try {
          await removal;
          return { failed: false };
        } catch {
          const seen = { id: ctx.session.id, data: ctx.session.toJSON() };
          ctx.session.set('after', 1);
          afterCaughtFailure = { ...seen, idAfterSet: ctx.session.id };
          return { failed: true };
        }
      },
      // A "switch user" that swallows the store's failure to log out, then logs another user in.
      'POST /switch-user-caught': async (ctx) => {
        for (const attempt of ctx.query.twice === undefined ? [1] : [1, 2]) {
          try {
            await ctx.session.destroy();
          } catch {
            ctx.session.set('user', `bob${attempt}`);
            ctx.session.delete('roles');
          }
        }
      },
      'POST /set-then-logout-caught': async (ctx) => {
        ctx.session.set('cart', [1]);
        try {
          await ctx.session.destroy();
        } catch {
          // the request fails all the same
        }
      },
      'POST /set-then-logout': async (ctx) => {
        ctx.session.set('cart', [1]);
        await ctx.session.destroy();
      },
      // A read-mode request holding the shared lock a while.
      // Holds the shared lock until the test releases it (see lingerHeld, lingerRelease).
      'GET /linger': async () => {
        lingerHeld?.open();
        await lingerRelease?.promise;
      },
      // A change, then a logout from a task the handler did not await, which runs while the commit waits for the exclusive lock.
      'GET /set-then-late-logout': (ctx) => {
        const session = ctx.session;
        session.set('seen', 1);
        setTimeout(() => void session.destroy().catch(() => undefined), 20);
      },
      // A change, then another from a task the handler did not await, which runs while the commit waits for the exclusive lock.
      'GET /set-then-late-set': (ctx) => {
        const session = ctx.session;
        session.set('seen', 1);
        setTimeout(() => {
          session.set('late', 1);
          session.delete('seen');
          session.clear();
          lateSetDone?.open();
        }, 20);
      },
      'GET /whoami': (ctx) => describeSession(ctx),
    },
  });
  running.push(t);
  return { t, spy, memory };
}

async function login(t: TestApp): Promise<string> {
  const res = await t.client.post('/login');
  expect(res.status).to.equal(200);
  return sessionCookie(res)!.value;
}

describe('Session.regenerate()', function () {
  this.timeout(60_000);

  it('regenerate() gives ctx.session a fresh ID at once', async () => {
    const { t } = await start();
    const id = await login(t);

    const res = await t.client.post('/regenerate').set('Cookie', cookieFor(id));

    expect(res.status).to.equal(200);
    expect(res.body.before).to.equal(id);
    expect(res.body.atOnce, 'ctx.session.id right after calling regenerate()').to.match(HEX64).and.not.equal(id);
    expect(res.body.after).to.equal(res.body.atOnce);
  });

  it('regenerate() keeps the data, in this request and the next', async () => {
    const { t } = await start();
    const id = await login(t);

    const res = await t.client.post('/regenerate').set('Cookie', cookieFor(id));
    const next = await t.client.get('/whoami').set('Cookie', cookieFor(res.body.after));

    expect(res.body.dataAfter).to.deep.equal({ user: 'ann', roles: ['reader'] });
    expect(next.body).to.deep.equal({ id: res.body.after, isNew: false, data: { user: 'ann', roles: ['reader'] } });
  });

  it('the response sets the cookie to the new ID', async () => {
    const { t } = await start();
    const id = await login(t);

    const res = await t.client.post('/regenerate').set('Cookie', cookieFor(id));

    const cookies = setCookies(res).filter((c) => c.name === 'session_id');
    expect(cookies.map((c) => c.value)).to.deep.equal([res.body.after]);
    expect(cookies[0].expires!.getTime()).to.be.greaterThan(Date.now());
  });

  it('the old ID is gone from the store by the time the response arrives, even with a slow store', async () => {
    const { t, memory } = await start({}, 150);
    const id = await login(t);

    const res = await t.client.post('/regenerate').set('Cookie', cookieFor(id));

    expect(await memory.get(id), 'old ID in the store when the response arrived').to.equal(undefined);
    expect(await storedData(memory, res.body.after)).to.deep.equal({ user: 'ann', roles: ['reader'] });
  });

  it('the old cookie now gives a new, empty session', async () => {
    const { t } = await start();
    const id = await login(t);
    const res = await t.client.post('/regenerate').set('Cookie', cookieFor(id));

    const old = await t.client.get('/whoami').set('Cookie', cookieFor(id));

    expect(old.body.isNew).to.equal(true);
    expect(old.body.data).to.deep.equal({});
    expect(old.body.id).to.not.equal(id).and.not.equal(res.body.after);
  });

  it('changes made in the same request are saved under the new ID', async () => {
    const { t, memory } = await start();
    const id = await login(t);

    const res = await t.client.post('/regenerate?set=admin').set('Cookie', cookieFor(id));

    expect(await storedData(memory, res.body.after)).to.deep.equal({ user: 'ann', roles: ['reader'], admin: true });
    expect(await memory.get(id)).to.equal(undefined);
  });

  it('regenerate() in a read-mode (GET) request works the same way', async () => {
    const { t, memory } = await start();
    const id = await login(t);

    const res = await t.client.get('/regenerate').set('Cookie', cookieFor(id));

    expect(sessionCookie(res)?.value).to.equal(res.body.after);
    expect(await memory.get(id)).to.equal(undefined);
    expect(await storedData(memory, res.body.after)).to.deep.equal({ user: 'ann', roles: ['reader'] });
  });

  it('regenerate() on a session that was never stored stores it under the fresh ID', async () => {
    const { t, memory } = await start();

    const res = await t.client.post('/regenerate-new');

    expect(res.body.after).to.match(HEX64).and.not.equal(res.body.before);
    expect(sessionCookie(res)?.value).to.equal(res.body.after);
    expect(await storedData(memory, res.body.after)).to.deep.equal({ user: 'bob' });
    expect(await memory.get(res.body.before)).to.equal(undefined);
  });

  it('the new ID starts a new absoluteTimeout lifetime', async () => {
    // The check inside the new lifetime comes about 800 ms before its end: room for a loaded machine.
    const { t } = await start({ maxAge: 60_000, absoluteTimeout: 1_500 });
    const id = await login(t);
    const createdBy = Date.now();

    await sleep(900);
    const regeneratedFrom = Date.now();
    const res = await t.client.post('/regenerate').set('Cookie', cookieFor(id));
    const regeneratedBy = Date.now();
    const newId = res.body.after as string;

    // Past the first lifetime (created by createdBy), inside the new one.
    await sleep(Math.max(0, createdBy + 1_500 + 100 - Date.now()));
    expect(Date.now(), 'still inside the new lifetime').to.be.below(regeneratedFrom + 1_500);
    const alive = await t.client.get('/whoami').set('Cookie', cookieFor(newId));
    expect(alive.body, 'past the old lifetime').to.deep.include({ id: newId, isNew: false });

    await sleep(Math.max(0, regeneratedBy + 1_500 + 100 - Date.now()));
    const gone = await t.client.get('/whoami').set('Cookie', cookieFor(newId));
    expect(gone.body.isNew, 'past the new lifetime').to.equal(true);
  });

  it("the new ID's cookie expires at the end of its new absoluteTimeout lifetime, not the old one's", async () => {
    // The wall clock is held, so Expires (whole seconds) can be told exactly.
    const { t } = await start({ maxAge: 3_600_000, absoluteTimeout: 60_000 });
    await withHeldClock(async (clock) => {
      clock.at = Math.floor(clock.at / 1000) * 1000;
      const createdAt = clock.at;
      const id = await login(t);

      clock.at += 30_000;
      const regeneratedAt = clock.at;
      const res = await t.client.post('/regenerate').set('Cookie', cookieFor(id));
      const cookie = sessionCookie(res);

      expect(cookie?.value, 'the cookie names the new ID').to.equal(res.body.after);
      expect(cookie!.expires!.getTime(), 'Expires: absoluteTimeout after the regeneration')
        .to.equal(regeneratedAt + 60_000)
        .and.not.equal(createdAt + 60_000);
    });
  });

  it("a read-mode regenerate() whose commit waited for the exclusive lock sends a cookie that expires with the new session, counted from its save after the wait", async () => {
    const { t } = await start({ maxAge: 3_600_000 });
    await withHeldClock(async (clock) => {
      clock.at = Math.floor(clock.at / 1000) * 1000; // Expires has whole seconds
      const id = await login(t);
      lingerHeld = gate();
      const release = gate();
      lingerRelease = release;
      regeneratedInHandler = gate();
      try {
        // A reader holds the shared lock, so the regenerate's commit waits for the exclusive one.
        const lingering = t.client.get('/linger').set('Cookie', cookieFor(id)).then((r) => r);
        await lingerHeld.promise;
        const regenerating = t.client.get('/regenerate').set('Cookie', cookieFor(id)).then((r) => r);
        await regeneratedInHandler.promise;
        await settle(); // its commit now waits behind /linger's shared hold

        clock.at += 5_000; // the wait lasts five seconds
        const savedAt = clock.at;
        release.open();
        const [res] = await Promise.all([regenerating, lingering]);

        const cookie = sessionCookie(res);
        expect(cookie?.value, 'the cookie names the new ID').to.equal(res.body.after);
        expect(cookie!.expires!.getTime(), 'Expires: maxAge after the new session was saved').to.equal(savedAt + 3_600_000);
        const alive = await t.client.get('/whoami').set('Cookie', cookieFor(res.body.after as string));
        expect(alive.body, 'the new session').to.deep.include({ id: res.body.after, isNew: false });
      } finally {
        regeneratedInHandler = undefined;
      }
    });
  });
});

describe('a change from a task the handler did not await, made while the commit waits for the exclusive lock', function () {
  this.timeout(60_000);

  it('is lost, as its warning says: a set(), delete() or clear() then changes nothing in the store', async () => {
    const { t } = await start();
    const id = await login(t);
    lingerHeld = gate();
    const release = gate();
    lingerRelease = release;
    lateSetDone = gate();

    const warnings = await warningsDuring('KOA_LOCKED_SESSION_LATE_CHANGE', async () => {
      // A reader holds the shared lock, so the next request's commit waits for the exclusive one.
      const lingering = t.client.get('/linger').set('Cookie', cookieFor(id)).then((r) => r);
      await lingerHeld!.promise;
      const pending = t.client.get('/set-then-late-set').set('Cookie', cookieFor(id)).then((r) => r);
      await lateSetDone!.promise; // the late changes, while the commit waits
      release.open();
      expect((await pending).status).to.equal(200);
      await lingering;
    });

    expect(warnings).to.have.length(1);
    const next = await t.client.get('/whoami').set('Cookie', cookieFor(id));
    expect(next.body.data, 'the session: its set() made before the commit began').to.deep.equal({ user: 'ann', roles: ['reader'], seen: 1 });
  });
});

describe('Session.destroy()', function () {
  this.timeout(60_000);

  it('destroy() resolves only once the store has removed the session, even with a slow store', async () => {
    const { t } = await start({}, 150);
    const id = await login(t);

    const res = await t.client.post('/logout').set('Cookie', cookieFor(id));

    expect(res.status).to.equal(200);
    expect(res.body.oldId).to.equal(id);
    expect(res.body.stillStored, 'the session was still stored when destroy() resolved').to.equal(false);
  });

  it('after destroy() the session data is empty', async () => {
    const { t } = await start();
    const id = await login(t);

    const res = await t.client.post('/logout').set('Cookie', cookieFor(id));

    expect(res.body).to.deep.include({ keys: [], user: null, hasUser: false, data: {} });
  });

  it('the response expires the cookie', async () => {
    const { t } = await start();
    const id = await login(t);

    const res = await t.client.post('/logout').set('Cookie', cookieFor(id));

    const cookies = setCookies(res).filter((c) => c.name === 'session_id');
    expect(cookies, 'session cookies set').to.have.length(1);
    expect(cookies[0].value, 'the expired cookie carries no ID').to.not.equal(id);
    expect(cookies[0].expires, 'Expires').to.not.equal(undefined);
    expect(cookies[0].expires!.getTime(), 'Expires').to.be.at.most(Date.now() - 24 * 60 * 60 * 1000);
  });

  it('a destroy() the handler did not await is waited for: the session is removed, the response expires the cookie, and a new session starts next', async () => {
    const { t, spy, memory } = await start({}, 150);
    const id = await login(t);

    const res = await t.client.post('/logout-unawaited').set('Cookie', cookieFor(id));

    expect(res.status).to.equal(200);
    expect(res.body, 'emptied at once; the removal still under way when the handler returned').to.deep.equal({ emptiedAtOnce: true, storedAtReturn: true });
    expect(spy.calls.destroy).to.equal(1);
    expect(await memory.get(id), 'old ID in the store').to.equal(undefined);
    const cookies = setCookies(res).filter((c) => c.name === 'session_id');
    expect(cookies, 'session cookies set').to.have.length(1);
    expect(cookies[0].expires!.getTime(), 'Expires').to.be.at.most(Date.now() - 24 * 60 * 60 * 1000);
    // The browser's next request, with no cookie now, starts a session of its own.
    const next = await t.client.post('/login');
    expect(sessionCookie(next)!.value).to.match(HEX64).and.not.equal(id);
  });

  it('a set() after a destroy() the handler did not await is not lost: it starts a new session, as after an awaited one', async () => {
    const { t, memory } = await start({}, 150);
    const id = await login(t);

    const res = await t.client.post('/logout-unawaited-then-set').set('Cookie', cookieFor(id));

    expect(res.status).to.equal(200);
    expect(await memory.get(id), 'old ID in the store').to.equal(undefined);
    expect(res.body.outcome).to.equal('set');
    // SPEC: "A set() after destroy() in the same request starts a new session with a new ID".
    const cookie = sessionCookie(res);
    expect(cookie?.value, 'the cookie names a new session').to.match(HEX64).and.not.equal(id);
    expect(await storedData(memory, cookie!.value)).to.deep.equal({ flash: 'bye' });
  });

  it('a second destroy() while the first is under way waits for the same removal', async () => {
    const { t, spy, memory } = await start({}, 150);
    const id = await login(t);

    const res = await t.client.post('/logout-unawaited-then-awaited').set('Cookie', cookieFor(id));

    expect(res.status).to.equal(200);
    expect(spy.calls.destroy, 'removals asked of the store').to.equal(1);
    expect(await memory.get(id)).to.equal(undefined);
    expect(sessionCookie(res)!.expires!.getTime()).to.be.at.most(Date.now() - 24 * 60 * 60 * 1000);
  });

  for (const route of ['/logout-set-logout', '/logout-set-null']) {
    it(`a destroy() after a set() made while a first destroy() is still removing empties the session again (${route})`, async () => {
      const { t, spy, memory } = await start({}, 150);
      const id = await login(t);

      const res = await t.client.post(route).set('Cookie', cookieFor(id));

      expect(res.status).to.equal(200);
      if (route === '/logout-set-logout') expect(res.body.keys, 'keys after the second destroy()').to.deep.equal([]);
      expect(spy.calls.destroy, 'removals asked of the store').to.equal(1);
      expect(await memory.get(id)).to.equal(undefined);
      expect(memory.size, 'sessions stored: the set() between the two logouts went with the second').to.equal(0);
      const cookies = setCookies(res).filter((c) => c.name === 'session_id');
      expect(cookies.map((c) => c.value), 'session cookies set').to.deep.equal(['']);
      expect(cookies[0].expires!.getTime(), 'Expires').to.be.at.most(Date.now());
    });
  }

  it('a second awaited destroy() after a set() asks the store for no second removal: a store refusing it by then does not fail the logout', async () => {
    const { t, spy } = await start();
    const id = await login(t);
    spy.hooks.before = (method) => {
      if (method === 'destroy' && spy.calls.destroy > 1) throw new Error('store down');
    };

    const res = await t.client.post('/logout-set-logout-awaited').set('Cookie', cookieFor(id));

    expect(res.status, 'the logout answers').to.equal(200);
    expect(res.body.keys).to.deep.equal([]);
    expect(spy.calls.destroy, 'removals the store was asked for').to.equal(1);
    const cookie = sessionCookie(res);
    expect(cookie !== undefined && cookie.expires!.getTime() <= Date.now(), 'the cookie is expired').to.equal(true);
    expect(await spy.get(id), 'the old session').to.equal(undefined);
  });

  describe('when the store fails to remove the session', () => {
    let unhandled: unknown[];
    const onRejection = (reason: unknown) => unhandled.push(reason);
    beforeEach(() => {
      unhandled = [];
      process.on('unhandledRejection', onRejection);
    });
    afterEach(() => {
      process.off('unhandledRejection', onRejection);
    });

    /** The errors `t`'s app hears from now on. */
    function errorsHeardBy(t: TestApp): unknown[] {
      const errors: unknown[] = [];
      t.app.on('error', (error: unknown) => errors.push(error));
      return errors;
    }

    /** A logged-in session whose store fails its first `times` removals, each after 20 ms. */
    async function failingDestroy(times = Infinity) {
      const setup = await start();
      const id = await login(setup.t);
      let failures = 0;
      setup.spy.hooks.before = async (method) => {
        if (method !== 'destroy') return;
        await sleep(20); // after the handler has returned
        if (failures++ < times) throw new Error('store down');
      };
      return { ...setup, id };
    }

    /** The data of session `id`, once the store of `setup` removes sessions again: the session must still be there. */
    async function dataAfterwards(setup: { t: TestApp; spy: { hooks: { before?: unknown } } }, id: string): Promise<unknown> {
      setup.spy.hooks.before = undefined;
      const next = await setup.t.client.get('/whoami').set('Cookie', cookieFor(id));
      expect(next.body).to.deep.include({ id, isNew: false });
      return next.body.data;
    }

    it('a destroy() the handler did not await fails the request with 503, not the process, and the session stays', async () => {
      const { t, spy, id } = await failingDestroy();

      const res = await t.client.post('/logout-unawaited?linger=60').set('Cookie', cookieFor(id));

      expect(res.status).to.equal(503);
      expect(sessionCookie(res), 'no cookie change').to.equal(undefined);
      await new Promise((resolve) => setImmediate(resolve)); // unhandled rejections are told once the microtasks ran
      expect(unhandled, 'unhandled rejections').to.deep.equal([]);
      expect(await dataAfterwards({ t, spy }, id)).to.deep.equal({ user: 'ann', roles: ['reader'] });
    });

    it('a destroy() the handler awaited fails the request with its one error: the app hears it once', async () => {
      const { t, id } = await failingDestroy();
      const errors = errorsHeardBy(t);

      const res = await t.client.post('/logout').set('Cookie', cookieFor(id));

      expect(res.status).to.equal(503);
      expect(errors).to.have.length(1);
      expect(errors[0]).to.be.instanceOf(SessionStoreError);
    });

    it('a destroy() from a task the handler did not await, once the commit began, does not crash the process when the store fails', async () => {
      const { t, spy, id } = await failingDestroy();
      let failed!: () => void;
      const storeFailed = new Promise<void>((resolve) => (failed = resolve));
      spy.hooks.before = async (method) => {
        if (method !== 'destroy') return;
        failed();
        throw new Error('store down');
      };

      let status = 0;
      const warnings = await warningsDuring('KOA_LOCKED_SESSION_LATE_CHANGE', async () => {
        status = (await t.client.post('/logout-late').set('Cookie', cookieFor(id))).status;
        await storeFailed;
        await new Promise((resolve) => setImmediate(resolve)); // unhandled rejections are told once the microtasks ran
      });

      expect(status).to.equal(200);
      expect(warnings).to.have.length(1);
      expect(warnings[0]).to.include('ctx.session.destroy()');
      expect(unhandled, 'unhandled rejections').to.deep.equal([]);
      spy.hooks.before = undefined;
      expect((await t.client.get('/whoami').set('Cookie', cookieFor(id))).body.data).to.deep.equal({ user: 'ann', roles: ['reader'] });
    });

    it('a set() after a destroy() the handler did not await, whose removal fails, goes with the failure: the session stays as it was', async () => {
      const { t, memory, spy, id } = await failingDestroy();
      const sizeBefore = memory.size;

      const res = await t.client.post('/logout-unawaited-then-set').set('Cookie', cookieFor(id));

      expect(res.status).to.equal(503);
      expect(sessionCookie(res), 'no cookie change').to.equal(undefined);
      expect(memory.size, 'no new session stored').to.equal(sizeBefore);
      expect(await dataAfterwards({ t, spy }, id)).to.deep.equal({ user: 'ann', roles: ['reader'] });
    });

    it('a failure the handler caught still fails the request (a store failure is a 503); the handler sees the session as it was, and it stays', async () => {
      const setup = await failingDestroy();
      const { t, id } = setup;

      afterCaughtFailure = undefined;

      const res = await t.client.post('/logout-caught').set('Cookie', cookieFor(id));

      expect(res.status).to.equal(503);
      // Nothing is saved, so no cookie goes out: the browser keeps the one it has.
      expect(sessionCookie(res), 'no cookie change').to.equal(undefined);
      // The set() made while the removal was under way went with the failure.
      expect(afterCaughtFailure, 'what the handler sees after the failure').to.deep.equal({ id, data: { user: 'ann', roles: ['reader'] }, idAfterSet: id });
      // Its set() after the failure went with the failure too.
      expect(await dataAfterwards(setup, id)).to.deep.equal({ user: 'ann', roles: ['reader'] });
    });

    it('after a failed destroy() the handler caught, what it changes goes with the failure: a login that goes on is not saved under the old ID', async () => {
      const setup = await failingDestroy();
      const { t, memory, id } = setup;
      const sizeBefore = memory.size;

      const res = await t.client.post('/switch-user-caught').set('Cookie', cookieFor(id));

      expect(res.status).to.equal(503);
      expect(sessionCookie(res), 'no cookie change').to.equal(undefined);
      expect(await storedData(memory, id), 'the session, stored').to.deep.equal({ user: 'ann', roles: ['reader'] });
      expect(memory.size, 'no new session stored').to.equal(sizeBefore);
      expect(await dataAfterwards(setup, id)).to.deep.equal({ user: 'ann', roles: ['reader'] });
    });

    it('after two failed destroy() calls, what the handler changed between them goes with the failure too', async () => {
      const setup = await failingDestroy();
      const { t, id } = setup;

      expect((await t.client.post('/switch-user-caught?twice').set('Cookie', cookieFor(id))).status).to.equal(503);

      expect(await dataAfterwards(setup, id)).to.deep.equal({ user: 'ann', roles: ['reader'] });
    });

    it('a set() before a destroy() that fails is saved, as a change the handler made before its failure', async () => {
      const setup = await failingDestroy();
      const { t, id } = setup;

      expect((await t.client.post('/set-then-logout-caught').set('Cookie', cookieFor(id))).status).to.equal(503);

      expect(await dataAfterwards(setup, id)).to.deep.equal({ user: 'ann', roles: ['reader'], cart: [1] });
    });

    it('a regenerate() before a destroy() that fails still happens: the session moves to its new ID, with its data', async () => {
      const { t, memory, id } = await failingDestroy(1);

      const res = await t.client.post('/regenerate-then-logout-caught').set('Cookie', cookieFor(id));

      expect(res.status).to.equal(503);
      const cookie = sessionCookie(res);
      expect(cookie?.value, 'the cookie names the regenerated ID').to.match(HEX64).and.not.equal(id);
      expect(await storedData(memory, cookie!.value)).to.deep.equal({ user: 'ann', roles: ['reader'] });
      expect(await memory.get(id), 'the old ID, removed by the regenerate').to.equal(undefined);
    });

    it('a destroy() that fails and is tried again with success logs out as usual', async () => {
      const { t, memory, id } = await failingDestroy(1);

      const res = await t.client.post('/logout-retried').set('Cookie', cookieFor(id));

      expect(res.status).to.equal(200);
      expect(res.body).to.deep.equal({ tries: 2 });
      expect(await memory.get(id)).to.equal(undefined);
      expect(sessionCookie(res)!.expires!.getTime()).to.be.at.most(Date.now() - 24 * 60 * 60 * 1000);
    });

    it('a retry chained on a destroy() the handler did not await is waited for too: it logs out as usual', async () => {
      const { t, spy, memory, id } = await failingDestroy();
      let failures = 1;
      const retried = gate();
      spy.hooks.before = async (method) => {
        if (method !== 'destroy') return;
        await sleep(20);
        if (failures-- > 0) throw new Error('store down');
        await sleep(50);
        retried.open();
      };

      const res = await t.client.post('/logout-retried-unawaited').set('Cookie', cookieFor(id));
      await retried.promise; // the retry reached the store, waited for by the request or not
      await new Promise((resolve) => setImmediate(resolve));

      expect(spy.calls.destroy, 'removals asked of the store').to.equal(2);
      expect(await memory.get(id), 'the session, in the store').to.equal(undefined);
      expect(res.status, 'a logout that did happen answers as one').to.equal(200);
      expect(sessionCookie(res)?.expires?.getTime(), 'the cookie expired').to.be.at.most(Date.now() - 24 * 60 * 60 * 1000);
    });

    it("a destroy() too late (during a read-mode commit's wait for the exclusive lock) whose removal fails leaves the request's own changes committed", async () => {
      const { t, spy, id } = await failingDestroy();
      const removing = gate(); // the late destroy() reached the store
      const fail = gate(); // let it fail, once the commit has written
      const failed = gate();
      spy.hooks.before = async (method) => {
        if (method !== 'destroy') return;
        removing.open();
        await fail.promise;
        failed.open();
        throw new Error('store down');
      };
      lingerHeld = gate();
      const release = gate();
      lingerRelease = release;

      await warningsDuring('KOA_LOCKED_SESSION_LATE_CHANGE', async () => {
        // A reader holds the shared lock, so the next request's commit waits for the exclusive one.
        const lingering = t.client.get('/linger').set('Cookie', cookieFor(id)).then((r) => r);
        await lingerHeld!.promise;
        const pending = t.client.get('/set-then-late-logout').set('Cookie', cookieFor(id)).then((r) => r);
        await removing.promise; // the late destroy(), while the commit waits
        release.open();
        const res = await pending;
        expect(res.status).to.equal(200);
        await lingering;
        fail.open();
        await failed.promise;
        await new Promise((resolve) => setImmediate(resolve));
      });

      expect(await dataAfterwards({ t, spy }, id), 'the session: its set() made before the commit began').to.deep.equal({ user: 'ann', roles: ['reader'], seen: 1 });
    });

    it("ctx.session = null in a handler that then throws: the request fails with the handler's error, and the app hears the removal's failure once", async () => {
      const { t, id } = await failingDestroy();
      const errors = errorsHeardBy(t);

      const res = await t.client.post('/logout-null-then-fail').set('Cookie', cookieFor(id));

      expect(res.status).to.equal(400);
      expect(errors.filter((error) => error instanceof SessionStoreError), 'SessionStoreErrors the app heard').to.have.length(1);
      expect(errors.map((error) => (error as Error).message)).to.include('handler failed').and.have.length(2);
    });

    it("an 'error' listener that throws when told of the removal's failure does not keep the session locked: its error fails the request, and the session is served after it", async () => {
      const { t, id } = await failingDestroy(1);
      t.app.on('error', (error: unknown) => {
        if (error instanceof SessionStoreError) throw new Error('the logger failed');
      });

      const res = await t.client.post('/logout-null-then-fail').set('Cookie', cookieFor(id)).timeout(3_000);

      expect([res.status, res.text], 'the listener\'s error, as Koa answers it').to.deep.equal([500, 'Internal Server Error']);
      const write = await t.client.post('/login').set('Cookie', cookieFor(id)).timeout(3_000);
      expect(write.status, 'the next write of the session (its exclusive lock)').to.equal(200);
      const read = await t.client.get('/whoami').set('Cookie', cookieFor(id)).timeout(3_000);
      expect(read.status, 'the next read').to.equal(200);
      expect(read.body).to.deep.include({ id, isNew: false });
      expect(read.body.data).to.deep.equal({ user: 'ann', roles: ['reader'] });
    });

    const STREAMED: Array<[string, string]> = [
      ['a failure the handler caught', '/logout-streamed'],
      ['ctx.session = null, whose removal fails,', '/logout-null-streamed'],
    ];
    for (const [what, path] of STREAMED) {
      it(`${what} on a response whose headers went out lets the response end, and the app hears of it`, async () => {
        const { t, id } = await failingDestroy();
        const errors = errorsHeardBy(t);

        const res = await t.client.post(path).set('Cookie', cookieFor(id)).timeout(3_000);

        expect([res.status, res.text]).to.deep.equal([200, 'data: bye\n\n']);
        expect(errors).to.have.length(1);
        expect(errors[0]).to.be.instanceOf(SessionStoreError);
      });
    }
  });

  for (const [what, path, data] of [
    ['new session', '/create-then-late-regenerate', { cart: ['book'] }],
    ['login (regenerate, then set)', '/login-then-late-regenerate', { user: 'alice', roles: ['reader'] }],
  ] as const) {
    it(`a regenerate() too late, while a slow store saves a ${what}, is lost as warned: the cookie names the session as stored`, async () => {
      const { t, spy } = await start();
      const loggedIn = path === '/login-then-late-regenerate' ? await login(t) : undefined;
      spy.hooks.before = async (method) => {
        if (method === 'set') await sleep(50);
      };

      let res: Awaited<ReturnType<typeof t.client.post>> | undefined;
      const warnings = await warningsDuring('KOA_LOCKED_SESSION_LATE_CHANGE', async () => {
        const request = t.client.post(path);
        res = await (loggedIn === undefined ? request : request.set('Cookie', cookieFor(loggedIn)));
      });
      expect(warnings).to.have.length(1);
      const id = sessionCookie(res!)?.value;
      expect(id, 'the session cookie').to.be.a('string');
      expect(await spy.get(id!), 'what the cookie names is stored').to.not.equal(undefined);
      spy.hooks.before = undefined;
      const next = await t.client.get('/whoami').set('Cookie', cookieFor(id!));
      expect(next.body).to.deep.include({ id, isNew: false, data });
    });
  }

  it('a destroy() from a task the handler did not await, once the commit began, still empties ctx.session when it resolves', async () => {
    const { t, spy } = await start();
    const id = await login(t);
    seenAfterLateLogout = undefined;

    await warningsDuring('KOA_LOCKED_SESSION_LATE_CHANGE', async () => {
      expect((await t.client.post('/logout-late-seen').set('Cookie', cookieFor(id))).status).to.equal(200);
      await waitUntil(() => seenAfterLateLogout !== undefined, 'the late destroy() resolved');
    });

    expect(seenAfterLateLogout, 'ctx.session after the late destroy()').to.deep.equal({ keys: [], data: {} });
    expect(await spy.get(id), 'the session').to.equal(undefined);
  });

  it('after a logout the old cookie gives a new, empty session', async () => {
    const { t, memory } = await start();
    const id = await login(t);
    await t.client.post('/logout').set('Cookie', cookieFor(id));

    const res = await t.client.get('/whoami').set('Cookie', cookieFor(id));

    expect(await memory.get(id)).to.equal(undefined);
    expect(res.body.isNew).to.equal(true);
    expect(res.body.id).to.not.equal(id);
    expect(res.body.data).to.deep.equal({});
  });

  it('a set() after destroy() starts a new session with a new ID, and the response carries that ID instead', async () => {
    const { t, memory } = await start();
    const id = await login(t);

    const res = await t.client.post('/logout?set=cart').set('Cookie', cookieFor(id));

    expect(res.body.newId).to.match(HEX64).and.not.equal(id);
    const cookies = setCookies(res).filter((c) => c.name === 'session_id');
    expect(cookies.map((c) => c.value), 'session cookies set').to.deep.equal([res.body.newId]);
    expect(cookies[0].expires!.getTime()).to.be.greaterThan(Date.now());
    expect(await memory.get(id), 'old ID in the store').to.equal(undefined);
    expect(await storedData(memory, res.body.newId), 'new session, without the old data').to.deep.equal({ cart: [1] });

    const next = await t.client.get('/whoami').set('Cookie', cookieFor(res.body.newId));
    expect(next.body).to.deep.equal({ id: res.body.newId, isNew: false, data: { cart: [1] } });
  });

  it('a value set() before destroy() in the same request goes with the session: the cookie is expired and nothing is stored', async () => {
    const { t, memory } = await start();
    const id = await login(t);

    const res = await t.client.post('/set-then-logout').set('Cookie', cookieFor(id));

    expect(res.status).to.equal(200);
    const cookies = setCookies(res).filter((c) => c.name === 'session_id');
    expect(cookies.map((c) => c.value), 'session cookies set').to.deep.equal(['']);
    expect(cookies[0].expires!.getTime(), 'Expires').to.be.at.most(Date.now());
    expect(await memory.get(id), 'old ID in the store').to.equal(undefined);
    expect(memory.size, 'sessions stored').to.equal(0);
  });

  it('after destroy(), the ID the first set() gives stays the session ID through later set()s, and the cookie carries it', async () => {
    const { t, memory } = await start();
    const id = await login(t);

    const res = await t.client.post('/logout-then-sets').set('Cookie', cookieFor(id));

    const { afterFirstSet, afterSecondSet } = res.body;
    expect(afterFirstSet).to.match(HEX64).and.not.equal(id);
    expect(afterSecondSet, 'the ID after a second set()').to.equal(afterFirstSet);
    expect(setCookies(res).filter((c) => c.name === 'session_id').map((c) => c.value)).to.deep.equal([afterFirstSet]);
    expect(await storedData(memory, afterFirstSet)).to.deep.equal({ cart: [1], theme: 'dark' });
  });

  it('regenerate() after destroy() gives the new session its ID: a set() after it keeps that ID, and the cookie carries it', async () => {
    const { t, memory } = await start();
    const id = await login(t);

    const res = await t.client.post('/logout-regenerate-set').set('Cookie', cookieFor(id));

    const { regenerated, afterSet } = res.body;
    expect(regenerated).to.match(HEX64).and.not.equal(id);
    expect(afterSet, 'the ID after set()').to.equal(regenerated);
    expect(setCookies(res).filter((c) => c.name === 'session_id').map((c) => c.value)).to.deep.equal([regenerated]);
    expect(await storedData(memory, regenerated)).to.deep.equal({ cart: [1] });
    expect(await memory.get(id), 'old ID in the store').to.equal(undefined);
  });

  it('destroy() in a read-mode (GET) request removes the session and expires the cookie too', async () => {
    const { t, memory } = await start();
    const id = await login(t);

    const res = await t.client.get('/logout').set('Cookie', cookieFor(id));

    expect(res.body.stillStored).to.equal(false);
    expect(await memory.get(id)).to.equal(undefined);
    expect(sessionCookie(res)!.expires!.getTime()).to.be.at.most(Date.now());
  });
});
