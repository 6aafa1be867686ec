/**
 * SPEC "Store": custom stores (koa-session's get / set / destroy), plugged
 * in with withStore or the store option, and what a failing store does to
 * a request (SessionStoreError, 503; a failed load is never "no session",
 * a failed commit never a success).
 */
import type { Context } from 'koa';
import { SessionStoreError, createMemoryStore, withStore } from '../src';
import type { SessionData, SessionRecord, Store } from '../src';
import { HEX64, Jar, RecordingStore, call, closeAll, cookieNamed, expect, hexId, setCookies, start } from './support/app';

afterEach(closeAll);

/** POST /?k=&v= sets k to v, DELETE destroys; every other response reports the session. */
async function handler(ctx: Context): Promise<void> {
  const k = ctx.query.k;
  if (ctx.method === 'POST' && typeof k === 'string') ctx.session.set(k, JSON.parse(String(ctx.query.v ?? 'true')));
  if (ctx.method === 'DELETE') await ctx.session.destroy();
  ctx.body = { id: ctx.session.id, isNew: ctx.session.isNew, data: ctx.session.toJSON() };
}

/** A koa-session-style external store over a Map, written as a plain JS object. */
function koaSessionStyleStore(map: Map<string, unknown>, sync: boolean): Store {
  const wrap = <T>(value: T) => (sync ? value : Promise.resolve(value));
  const store = {
    get(key: string) {
      return wrap(map.get(key));
    },
    set(key: string, sess: unknown, maxAge: number) {
      void maxAge;
      map.set(key, JSON.parse(JSON.stringify(sess)));
      return wrap(undefined);
    },
    destroy(key: string) {
      map.delete(key);
      return wrap(undefined);
    },
  };
  // A JavaScript store written for koa-session has no types; its methods may be synchronous.
  return store as unknown as Store;
}

describe('Store: custom stores', () => {
  it('a custom store plugged in with withStore is used to save and to load the session', async () => {
    const store = new RecordingStore();
    const run = await start(undefined, handler, { middleware: withStore(store) });
    const jar = new Jar();
    const first = await call(run, jar, 'post', '/?k=n&v=1');
    expect(store.callsOf('set').map((c) => c.id)).to.deep.equal([first.body.id]);
    expect(store.map.has(first.body.id)).to.equal(true);
    store.calls.length = 0;
    const next = await call(run, jar, 'get');
    expect(store.callsOf('get').map((c) => c.id)).to.deep.equal([first.body.id]);
    expect(next.body.data).to.deep.equal({ n: 1 });
  });

  it('withStore(store, opts) applies the other options too', async () => {
    const store = new RecordingStore();
    const run = await start(undefined, handler, { middleware: withStore(store, { cookieName: 'sid', sameSite: 'strict' }) });
    const res = await call(run, new Jar(), 'post', '/?k=n&v=1');
    const cookie = cookieNamed(res, 'sid');
    expect(cookie?.value).to.equal(res.body.id);
    expect(String(cookie?.attrs.samesite).toLowerCase()).to.equal('strict');
    expect(store.map.has(res.body.id)).to.equal(true);
  });

  it('the store option of session() is used the same way', async () => {
    const store = new RecordingStore();
    const run = await start({ store }, handler);
    const jar = new Jar();
    const res = await call(run, jar, 'post', '/?k=n&v=2');
    expect(store.map.has(res.body.id)).to.equal(true);
    expect((await call(run, jar, 'get')).body.data).to.deep.equal({ n: 2 });
  });

  it('the store is called as set(id, data, maxAgeMs): the session ID, a JSON-serialisable object and a lifetime in ms', async () => {
    const store = new RecordingStore();
    const run = await start({ store, maxAge: 600_000 }, handler);
    const res = await call(run, new Jar(), 'post', '/?k=list&v=[1,2]');
    const [write] = store.callsOf('set');
    expect(write.id).to.equal(res.body.id).and.match(HEX64);
    const data = write.args[0] as SessionData;
    expect(data).to.be.an('object');
    expect(JSON.parse(JSON.stringify(data))).to.deep.equal(data);
    expect(JSON.stringify(data)).to.include('"list":[1,2]');
    expect(write.args[1]).to.be.a('number');
    expect(write.args[1] as number).to.be.greaterThan(0).and.at.most(600_000);
  });

  for (const sync of [true, false]) {
    it(`a koa-session-style store over a Map (${sync ? 'synchronous' : 'async'} get/set/destroy) works unchanged through withStore`, async () => {
      const map = new Map<string, unknown>();
      const run = await start(undefined, handler, { middleware: withStore(koaSessionStyleStore(map, sync)) });
      const jar = new Jar();
      const first = await call(run, jar, 'post', '/?k=n&v=1');
      expect(first.status).to.equal(200);
      expect([...map.keys()]).to.deep.equal([first.body.id]);
      const second = await call(run, jar, 'post', '/?k=m&v=2');
      expect(second.body).to.deep.equal({ id: first.body.id, isNew: false, data: { n: 1, m: 2 } });
      const read = await call(run, jar, 'get');
      expect(read.body.data).to.deep.equal({ n: 1, m: 2 });
      const gone = await call(run, jar, 'delete');
      expect(gone.status).to.equal(200);
      expect(map.size).to.equal(0);
      expect((await call(run, jar, 'get')).body.isNew).to.equal(true);
    });
  }

  /** A store over `map` whose get() answers `missing` for an ID it does not have. */
  function storeAnswering(missing: unknown, map: Map<string, unknown>): Store {
    return {
      get: async (id: string) => (map.has(id) ? map.get(id) : missing) as SessionData | undefined,
      set: async (id: string, record: SessionData) => void map.set(id, JSON.parse(JSON.stringify(record))),
      destroy: async (id: string) => void map.delete(id),
    };
  }

  for (const missing of [null, false, '', 0, {}]) {
    it(`a store that answers ${JSON.stringify(missing)} for a missing session (null as koa-redis does, any falsy value as koa-session reads it, {} as HGETALL does) gives a new session: the client's ID is not adopted`, async () => {
      const map = new Map<string, unknown>();
      const run = await start(undefined, handler, { middleware: withStore(storeAnswering(missing, map)) });
      const chosen = hexId('d');
      const missed: unknown[] = [];
      run.app.on('session:missed', (event) => missed.push(event));

      const res = await call(run, new Jar().set('session_id', chosen), 'post', '/?k=n&v=1');

      expect(res.status).to.equal(200);
      expect(res.body.isNew).to.equal(true);
      expect(res.body.id).to.match(HEX64).and.not.equal(chosen);
      expect(cookieNamed(res)?.value).to.equal(res.body.id);
      expect([...map.keys()]).to.deep.equal([res.body.id]);
      expect(missed).to.have.length(1);
    });
  }

  class Row {
    n = 1;
  }
  const notRecords: [string, unknown][] = [
    ['a string', '{"n":1}'],
    ['an array', [7]],
    ['a number', 5],
    // Keys '0', '1', …: read as a session, the next commit would store its bytes as the user's data.
    ['an instance of Buffer', Buffer.from('{"n":1}')],
    // No keys of their own: read as no session, the user would be logged out and a new session stored.
    ['an instance of Map', new Map([['n', 1]])],
    ['an instance of Date', new Date()],
    ['an instance of Row', new Row()],
  ];
  for (const [what, answer] of notRecords) {
    it(`a store whose get() answers ${what} fails the request with 503: it is not read as a session of the client's ID`, async () => {
      const map = new Map<string, unknown>();
      const run = await start(undefined, handler, { middleware: withStore(storeAnswering(answer, map)) });
      const errors: unknown[] = [];
      run.app.on('error', (error) => errors.push(error));

      const res = await call(run, new Jar().set('session_id', hexId('d')), 'post', '/?k=n&v=1');

      expect(res.status).to.equal(503);
      expect(setCookies(res)).to.deep.equal([]);
      expect(map.size).to.equal(0);
      expect(errors[0]).to.be.instanceOf(SessionStoreError);
      expect(String((errors[0] as Error).cause)).to.include(`answered ${what}`);
    });
  }

  it('a record without a prototype (node-redis answers hGetAll so) is read as the session', async () => {
    const map = new Map<string, unknown>();
    const run = await start(undefined, handler, { middleware: withStore(storeAnswering(undefined, map)) });
    const jar = new Jar();
    const id = (await call(run, jar, 'post', '/?k=n&v=1')).body.id;
    const stored = map.get(id) as SessionRecord;
    map.set(id, Object.assign(Object.create(null), { ...stored, data: Object.assign(Object.create(null), stored.data) }));
    const res = await call(run, jar, 'get');
    expect(res.status).to.equal(200);
    expect(res.body).to.deep.equal({ id, isNew: false, data: { n: 1 } });
  });

  it("a session koa-session left in its store is read as plain data while its _expire is ahead, and as gone once it is past, as koa-session would", async () => {
    const map = new Map<string, unknown>();
    const live = hexId('1');
    const ended = hexId('2');
    map.set(live, { user: 'ada', _expire: Date.now() + 60_000, _maxAge: 86_400_000 });
    map.set(ended, { user: 'dave', _expire: Date.now() - 1000, _maxAge: 86_400_000 });
    const run = await start(undefined, handler, { middleware: withStore(koaSessionStyleStore(map, false)) });
    const missed: unknown[] = [];
    run.app.on('session:missed', (event) => missed.push(event));

    expect((await call(run, new Jar().set('session_id', live), 'get')).body).to.deep.include({ id: live, isNew: false });
    const res = await call(run, new Jar().set('session_id', ended), 'get');
    expect(res.body).to.deep.include({ isNew: true, data: {} });
    expect(res.body.id).to.not.equal(ended);
    expect(missed).to.have.length(1);
  });

  it('a record seeded into a Map store as plain data ({ n: 5 }) is read as the session\'s data', async () => {
    const map = new Map<string, unknown>();
    const id = hexId('e');
    map.set(id, { n: 5 });
    const run = await start(undefined, handler, { middleware: withStore(koaSessionStyleStore(map, false)) });
    const res = await call(run, new Jar().set('session_id', id), 'get');
    expect(res.body).to.deep.equal({ id, isNew: false, data: { n: 5 } });
  });

  it('a session seeded as plain data can be changed, and keeps its seeded values', async () => {
    const map = new Map<string, unknown>();
    const id = hexId('f');
    map.set(id, { n: 5 });
    const run = await start(undefined, handler, { middleware: withStore(koaSessionStyleStore(map, true)) });
    const jar = new Jar().set('session_id', id);
    await call(run, jar, 'post', '/?k=m&v=6');
    expect((await call(run, jar, 'get')).body).to.deep.equal({ id, isNew: false, data: { n: 5, m: 6 } });
  });

  it('a record seeded with data and createdAt but no touchedAt is not the library\'s shape: it is read as plain data, key by key', async () => {
    const map = new Map<string, unknown>();
    const id = hexId('9');
    map.set(id, { data: { theme: 'dark' }, createdAt: 1_700_000_000_000 });
    const run = await start(undefined, handler, { middleware: withStore(koaSessionStyleStore(map, false)) });
    const res = await call(run, new Jar().set('session_id', id), 'get');
    expect(res.body).to.deep.equal({ id, isNew: false, data: { data: { theme: 'dark' }, createdAt: 1_700_000_000_000 } });
  });

  it('destroy() removes the session from a custom store', async () => {
    const store = new RecordingStore();
    const run = await start({ store }, handler);
    const jar = new Jar();
    const id = (await call(run, jar, 'post', '/?k=n&v=1')).body.id;
    await call(run, jar, 'delete');
    expect(store.callsOf('destroy').map((c) => c.id)).to.include(id);
    expect(store.map.has(id)).to.equal(false);
  });

  it("an atomic store whose applyChanges answers at once, and not with a boolean (a Redis integer reply), commits as an async one does", async () => {
    const map = new Map<string, { data: Record<string, unknown>; createdAt: number; touchedAt: number }>();
    const plain = koaSessionStyleStore(map, true);
    // Written in plain JavaScript: 1 when applied, 0 when the session is gone.
    const store = {
      ...plain,
      applyChanges(key: string, changes: readonly { op: string; key?: string; value?: unknown }[], touchedAt: number) {
        const record = map.get(key);
        if (record === undefined) return 0;
        for (const change of changes) if (change.op === 'set' && change.key !== undefined) record.data[change.key] = change.value;
        record.touchedAt = touchedAt;
        return 1;
      },
    } as unknown as Store;
    const run = await start({ store }, handler);
    const jar = new Jar();
    const id = (await call(run, jar, 'post', '/?k=n&v=1')).body.id;
    const second = await call(run, jar, 'post', '/?k=m&v=2');
    expect(second.status).to.equal(200);
    expect(second.body).to.include({ id, isNew: false });
    expect(map.get(id)?.data).to.deep.equal({ n: 1, m: 2 });
    map.delete(id); // gone: the next change is dropped, nothing is brought back
    const third = await call(run, jar, 'post', '/?k=o&v=3');
    expect(third.status).to.equal(200);
    expect(map.has(id)).to.equal(false);
  });

  it('a MemoryStore from createMemoryStore() plugs in through withStore', async () => {
    const store = createMemoryStore();
    try {
      const run = await start(undefined, handler, { middleware: withStore(store) });
      const jar = new Jar();
      await call(run, jar, 'post', '/?k=n&v=3');
      expect(store.size).to.equal(1);
      expect((await call(run, jar, 'get')).body.data).to.deep.equal({ n: 3 });
    } finally {
      store.close();
    }
  });
});

describe('Store errors', () => {
  /** A RecordingStore with a stored session `{ n: 1 }` and the cookie naming it. */
  async function seeded() {
    const store = new RecordingStore();
    let handlerRuns = 0;
    const run = await start({ store }, async (ctx) => {
      handlerRuns++;
      await handler(ctx);
    });
    const jar = new Jar();
    const id = (await call(run, jar, 'post', '/?k=n&v=1')).body.id as string;
    handlerRuns = 0;
    store.calls.length = 0;
    return { store, run, jar, id, handlerRuns: () => handlerRuns };
  }

  it('a store whose get rejects makes the request fail with 503, and the handler does not run', async () => {
    const { store, run, jar, handlerRuns } = await seeded();
    store.fail.add('get');
    const res = await call(run, jar, 'get');
    expect(res.status).to.equal(503);
    expect(handlerRuns()).to.equal(0);
  });

  it('a store whose get throws synchronously makes the request fail with 503, and the handler does not run', async () => {
    let ran = false;
    const store = {
      get() {
        throw new Error('sync failure');
      },
      set() {},
      destroy() {},
    } as unknown as Store;
    const run = await start(undefined, (ctx) => {
      ran = true;
      ctx.body = 'ran';
    }, { middleware: withStore(store) });
    const res = await call(run, new Jar().set('session_id', hexId('1')), 'get');
    expect(res.status).to.equal(503);
    expect(ran).to.equal(false);
  });

  it("a store answering with its own thenables (not native promises) works, and a rejected one gives a 503 and a SessionStoreError", async () => {
    /** A minimal Promises/A+ thenable, as an older promise library would return. */
    const thenable = <T>(settle: () => T) => ({
      then(onFulfilled: (value: T) => unknown, onRejected: (error: unknown) => unknown) {
        let value: T;
        try {
          value = settle();
        } catch (error) {
          setImmediate(() => onRejected(error));
          return;
        }
        setImmediate(() => onFulfilled(value));
      },
    });
    const map = new Map<string, unknown>();
    const failing = new Set<string>();
    const fail = (method: string) => {
      if (failing.has(method)) throw new Error(`store ${method} is down`);
    };
    const store = {
      get: (key: string) => thenable(() => (fail('get'), map.get(key))),
      set: (key: string, sess: unknown) => thenable(() => (fail('set'), void map.set(key, JSON.parse(JSON.stringify(sess))))),
      destroy: (key: string) => thenable(() => void map.delete(key)),
    } as unknown as Store;
    const run = await start(undefined, handler, { middleware: withStore(store) });
    const jar = new Jar();
    const { id } = (await call(run, jar, 'post', '/?k=n&v=1')).body as { id: string };
    expect((await call(run, jar, 'get')).body).to.deep.equal({ id, isNew: false, data: { n: 1 } });
    for (const method of ['get', 'set']) {
      failing.add(method);
      expect((await call(run, jar, 'post', '/?k=n&v=2')).status, `${method} failing`).to.equal(503);
      failing.delete(method);
    }
    expect(run.errors.map((error) => (error instanceof SessionStoreError ? (error.cause as Error).message : String(error)))).to.deep.equal([
      'store get is down',
      'store set is down',
    ]);
    expect((await call(run, jar, 'get')).body).to.deep.equal({ id, isNew: false, data: { n: 1 } });
  });

  it('the error is a SessionStoreError with code ESESSIONSTORE, status (and statusCode) 503 and the store\'s own error as cause; the client sees only the status text', async () => {
    const original = new Error('connection refused');
    const store: Store = {
      get: async () => {
        throw original;
      },
      set: async () => {},
      destroy: async () => {},
    };
    const run = await start(undefined, handler, { middleware: withStore(store) });
    const res = await call(run, new Jar().set('session_id', hexId('2')), 'get');
    expect(res.status).to.equal(503);
    expect(res.text, "Koa's status text, not the library's message").to.equal('Service Unavailable');
    expect(run.errors).to.have.length(1);
    const error = run.errors[0] as SessionStoreError;
    expect(error).to.be.instanceOf(SessionStoreError);
    expect(error).to.be.instanceOf(Error);
    expect(error.code).to.equal('ESESSIONSTORE');
    expect(error.status).to.equal(503);
    expect(error.statusCode, 'statusCode, for code that reads it').to.equal(503);
    expect(error.expose).to.equal(false);
    expect(error.cause).to.equal(original);
  });

  it('a store error carrying its own status (404) still gives 503: a failed load is never "not found"', async () => {
    const store: Store = {
      get: async () => {
        throw Object.assign(new Error('not found?'), { status: 404, expose: true });
      },
      set: async () => {},
      destroy: async () => {},
    };
    const run = await start(undefined, handler, { middleware: withStore(store) });
    const res = await call(run, new Jar().set('session_id', hexId('3')), 'get');
    expect(res.status).to.equal(503);
  });

  it('a failed load is never treated as "no session": nothing is written, and the session is intact once the store is back', async () => {
    const { store, run, jar, id } = await seeded();
    store.fail.add('get');
    const res = await call(run, jar, 'post', '/?k=n&v=99');
    expect(res.status).to.equal(503);
    expect(setCookies(res)).to.deep.equal([]);
    expect(store.callsOf('set')).to.deep.equal([]);
    expect(store.callsOf('destroy')).to.deep.equal([]);
    store.fail.delete('get');
    expect((await call(run, jar, 'get')).body).to.deep.equal({ id, isNew: false, data: { n: 1 } });
  });

  it('a store whose set rejects on a new session\'s first save gives 503, never a 2xx, and no cookie', async () => {
    const store = new RecordingStore();
    store.fail.add('set');
    const run = await start({ store }, handler);
    const res = await call(run, new Jar(), 'post', '/?k=n&v=1');
    expect(res.status).to.equal(503);
    expect(cookieNamed(res)).to.equal(undefined);
    expect(store.map.size).to.equal(0);
    expect(run.errors[0]).to.be.instanceOf(SessionStoreError);
  });

  it('a store whose set rejects on a change to a stored session gives 503 and overwrites nothing', async () => {
    const { store, run, jar, id } = await seeded();
    store.fail.add('set');
    const res = await call(run, jar, 'post', '/?k=n&v=2');
    expect(res.status).to.equal(503);
    store.fail.delete('set');
    expect((await call(run, jar, 'get')).body).to.deep.equal({ id, isNew: false, data: { n: 1 } });
  });

  it('a failing set on a store that hands out its own objects (no copies, like koa-session\'s examples) overwrites nothing', async () => {
    // The plain Map store of koa-session's README: get returns the stored object itself.
    const map = new Map<string, unknown>();
    let failSet = false;
    const store = {
      get: async (key: string) => map.get(key),
      set: async (key: string, sess: unknown) => {
        if (failSet) throw new Error('store set is down');
        map.set(key, sess);
      },
      destroy: async (key: string) => {
        map.delete(key);
      },
    } as unknown as Store;
    const run = await start(undefined, handler, { middleware: withStore(store) });
    const jar = new Jar();
    const id = (await call(run, jar, 'post', '/?k=n&v=1')).body.id;
    failSet = true;
    expect((await call(run, jar, 'post', '/?k=n&v=2')).status).to.equal(503);
    expect((await call(run, jar, 'post', '/?k=extra&v=3')).status).to.equal(503);
    failSet = false;
    expect((await call(run, jar, 'get')).body).to.deep.equal({ id, isNew: false, data: { n: 1 } });
  });

  it('a store whose set throws synchronously gives 503, never a 2xx', async () => {
    const store = {
      get: async () => undefined,
      set() {
        throw new Error('disk full');
      },
      destroy: async () => {},
    } as unknown as Store;
    const run = await start(undefined, handler, { middleware: withStore(store) });
    const res = await call(run, new Jar(), 'post', '/?k=n&v=1');
    expect(res.status).to.equal(503);
  });

  it('a failed commit after a handler that set a 201 still gives 503', async () => {
    const store = new RecordingStore();
    store.fail.add('set');
    const run = await start({ store }, (ctx) => {
      ctx.session.set('order', 1);
      ctx.status = 201;
      ctx.body = { created: true };
    });
    const res = await call(run, new Jar(), 'post');
    expect(res.status).to.equal(503);
  });

  it('a store whose destroy rejects makes destroy() fail the request with 503, and the session stays', async () => {
    const { store, run, jar, id } = await seeded();
    store.fail.add('destroy');
    const res = await call(run, jar, 'delete');
    expect(res.status).to.equal(503);
    store.fail.delete('destroy');
    expect((await call(run, jar, 'get')).body).to.deep.equal({ id, isNew: false, data: { n: 1 } });
  });
});
