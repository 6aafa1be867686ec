/**
 * The default MemoryStore and a RedisStore are reached directly by the
 * middleware: values stay JSON text until a handler reads them (and, in
 * MemoryStore, commits replay on that text). What users see must not
 * change: data round-trips exactly whether or not it was read, and a
 * subclass's overridden methods are still called.
 */
import Redis from 'ioredis';
import { MemoryStore, RedisStore, SessionStoreError } from '../src';
import type { SessionData, Store } from '../src';
import { Jar, closeAll, expect, sleep, start } from './support/app';
import { testRedis } from './support/redis-server';
import type { RedisServer } from './support/redis-server';

afterEach(closeAll);

const PROFILE = { name: 'Ada', tags: ['x', { deep: null }], nested: { a: { b: [1, 2.5, -3] } } };

/** A value with a key named __proto__, which JSON.parse and a plain assignment treat differently. */
const PROTO_VALUE = JSON.parse('{"__proto__": {"polluted": true}, "ok": 1}') as Record<string, unknown>;

/** The JSON of `data` with its top-level keys sorted (Object.fromEntries keeps a key named __proto__ as a key). */
function sortedJson(data: Record<string, unknown>): string {
  return JSON.stringify(Object.fromEntries(Object.entries(data).sort(([a], [b]) => (a < b ? -1 : 1))));
}

/**
 * Sets three values, increments one of them twice, regenerates, then reads
 * them all back: through the handler (twice, to see each get() is a fresh
 * copy) and straight from the store. `keepsOrder`: keys come back in the
 * order they were set.
 */
async function unreadValuesRoundTrip(store: Store, keepsOrder: boolean): Promise<void> {
  const t = await start({ store }, async (ctx) => {
    const s = ctx.session;
    switch (ctx.path) {
      case '/init':
        s.set('profile', PROFILE);
        s.set('__proto__', PROTO_VALUE);
        s.set('n', 0);
        break;
      case '/inc':
        s.set('n', (s.get<number>('n') ?? 0) + 1);
        break;
      case '/login':
        await s.regenerate();
        break;
      case '/dump': {
        const first = s.get<typeof PROFILE>('profile');
        if (first !== undefined) first.tags.push('changed');
        ctx.body = { data: s.toJSON(), second: s.get('profile'), keys: s.keys() };
        break;
      }
    }
    ctx.body ??= 'ok';
  });
  const jar = new Jar();
  const send = async (method: 'get' | 'post', path: string) =>
    jar.take(await t.http[method](path).set('Cookie', jar.header()).expect(200));

  await send('post', '/init');
  const firstId = jar.get();
  await send('post', '/inc');
  await send('post', '/inc');
  await send('post', '/login');
  const newId = jar.get() as string;
  expect(newId).to.not.equal(firstId);
  expect(await store.get(firstId as string)).to.equal(undefined);

  // Compared with sorted keys: a Redis hash past its listpack limits does not keep insertion order.
  const expected = `{"__proto__":${JSON.stringify(PROTO_VALUE)},"n":2,"profile":${JSON.stringify(PROFILE)}}`;
  const res = await send('get', '/dump');
  expect(res.body.second, 'a second get() is not changed by changes to the first').to.deep.equal(PROFILE);
  if (keepsOrder) expect(res.body.keys).to.deep.equal(['profile', '__proto__', 'n']);
  else expect([...res.body.keys].sort()).to.deep.equal(['__proto__', 'n', 'profile']);
  expect(sortedJson(res.body.data)).to.equal(expected);

  const stored = (await store.get(newId)) as { data: SessionData };
  expect(sortedJson(stored.data)).to.equal(expected);
  expect(Object.prototype.hasOwnProperty.call(stored.data, '__proto__')).to.equal(true);
  expect(({} as Record<string, unknown>).polluted).to.equal(undefined);
}

/** Increments a counter twice (a new session, then an update) and reads it once; resolves to what the handler saw. */
async function countTwiceAndRead(store: Store): Promise<string[]> {
  const t = await start({ store }, async (ctx) => {
    if (ctx.path === '/inc') ctx.session.set('n', (ctx.session.get<number>('n') ?? 0) + 1);
    ctx.body = String(ctx.session.get('n'));
  });
  const jar = new Jar();
  const seen: string[] = [];
  seen.push(jar.take(await t.http.post('/inc').expect(200)).text);
  seen.push(jar.take(await t.http.post('/inc').set('Cookie', jar.header()).expect(200)).text);
  seen.push((await t.http.get('/').set('Cookie', jar.header()).expect(200)).text);
  return seen;
}

type Overridable = 'get' | 'set' | 'applyChanges';

/**
 * Makes `store` an instance of a subclass overriding `methods`, each noting
 * its name in `calls` and then doing what the class's own does. This is
 * what `class extends` builds: a prototype between the instance and its
 * class's, holding the overrides.
 */
function overriding<S extends Store>(store: S, methods: readonly Overridable[], calls: string[]): S {
  type Methods = Record<Overridable, (...args: unknown[]) => unknown>;
  const own = Object.getPrototypeOf(store) as Methods;
  const overrides = Object.create(own) as Methods;
  for (const method of methods) {
    overrides[method] = function (this: S, ...args: unknown[]) {
      calls.push(method);
      return own[method].apply(this, args);
    };
  }
  return Object.setPrototypeOf(store, overrides) as S;
}

/** What countTwiceAndRead calls on a store reached through its public methods only. */
const EVERY_CALL: readonly Overridable[] = ['set', 'get', 'applyChanges', 'get'];

/** The tests both stores share; `make` gives a fresh store. */
function directStoreTests(make: () => MemoryStore | RedisStore, keepsOrder: boolean): void {
  it('values a handler never reads come through updates and regenerate exactly', async () => {
    await unreadValuesRoundTrip(make(), keepsOrder);
  });

  for (const methods of [['get', 'set', 'applyChanges'], ['get'], ['set'], ['applyChanges']] as const) {
    it(`a subclass's overridden ${methods.join(', ')} ${methods.length > 1 ? 'are' : 'is'} called for every load and commit`, async () => {
      const calls: string[] = [];
      expect(await countTwiceAndRead(overriding(make(), methods, calls))).to.deep.equal(['1', '2', '2']);
      expect(calls).to.deep.equal(EVERY_CALL.filter((method) => (methods as readonly Overridable[]).includes(method)));
    });
  }

  it("a subclass's overridden applyChanges is called for every commit of requests queued on one session", async () => {
    const calls: string[] = [];
    const t = await start({ store: overriding(make(), ['applyChanges'], calls) }, async (ctx) => {
      const n = ctx.session.get<number>('n') ?? 0;
      await sleep(2); // the others queue for the lock meanwhile
      ctx.session.set('n', n + 1);
      ctx.body = String(n + 1);
    });
    const jar = new Jar();
    jar.take(await t.http.post('/').expect(200));
    await Promise.all(Array.from({ length: 20 }, () => t.http.post('/').set('Cookie', jar.header()).expect(200)));
    expect((await t.http.post('/').set('Cookie', jar.header()).expect(200)).text).to.equal('22');
    expect(calls.length, 'one applyChanges per update').to.equal(21);
  });
}

describe('MemoryStore, reached directly by the middleware', () => {
  directStoreTests(() => {
    const store = new MemoryStore();
    store.close();
    return store;
  }, true);
});

describe('RedisStore, reached directly by the middleware', function () {
  this.timeout(30_000);
  let redis: { url: string; server: RedisServer | undefined } | undefined;
  const clients: Redis[] = [];
  let counter = 0;

  before(async function () {
    redis = await testRedis(this, 'the RedisStore direct-read tests need a Redis');
  });
  after(async () => {
    await Promise.all(clients.map((client) => client.quit().catch(() => undefined)));
    await redis?.server?.stop();
  });

  /** A store on its own prefix, so tests never see each other's keys. */
  function options() {
    const client = new Redis(redis!.url, { maxRetriesPerRequest: 1 });
    clients.push(client);
    return { client, prefix: `kls-direct-${process.pid}-${++counter}:` };
  }

  directStoreTests(() => new RedisStore(options()), false);

  it('regenerate stores a value no handler read as the very JSON text Redis held', async () => {
    const opts = options();
    const store = new RedisStore(opts);
    const t = await start({ store }, async (ctx) => {
      if (ctx.path === '/init') ctx.session.set('profile', { a: 1 });
      if (ctx.path === '/login') await ctx.session.regenerate();
      ctx.body = 'ok';
    });
    const jar = new Jar();
    jar.take(await t.http.post('/init').expect(200));
    const oldId = jar.get() as string;
    // As another writer might have stored it: decoding and encoding again would give {"a":1}.
    const text = '{ "a": 1.0 }';
    await opts.client.hset(store.key(oldId), 'd:profile', text);
    jar.take(await t.http.post('/login').set('Cookie', jar.header()).expect(200));
    const newId = jar.get() as string;
    expect(newId).to.not.equal(oldId);
    expect(await opts.client.hget(store.key(newId), 'd:profile')).to.equal(text);
    expect(await store.get(newId)).to.deep.include({ data: { profile: { a: 1 } } });
  });

  it("a load or commit Redis refuses gives a 503 and a SessionStoreError carrying Redis's error", async () => {
    const opts = options();
    const store = new RedisStore(opts);
    const t = await start({ store }, async (ctx) => {
      // A stray writer turns the session's hash into a string while the request runs.
      if (ctx.path === '/break') await opts.client.set(store.key(ctx.session.id), 'not a hash');
      ctx.session.set('n', 1);
      ctx.body = 'ok';
    });
    const jar = new Jar();
    jar.take(await t.http.post('/init').expect(200));
    const committing = await t.http.post('/break').set('Cookie', jar.header()).expect(503);
    expect(committing.headers['set-cookie']).to.equal(undefined);
    await t.http.post('/again').set('Cookie', jar.header()).expect(503);
    expect(t.errors.map((error) => (error as Error).message)).to.deep.equal([
      'koa-locked-session: session store failed during commit',
      'koa-locked-session: session store failed during load',
    ]);
    for (const error of t.errors as SessionStoreError[]) {
      expect(error).to.be.instanceOf(SessionStoreError);
      expect((error.cause as Error).message).to.match(/^WRONGTYPE/);
    }
  });
});
