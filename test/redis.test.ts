/**
 * RedisStore against real redis-server processes (test/support/redis-server.ts
 * starts throwaway ones on free loopback ports; the system Redis is never
 * touched). Two Koa apps with their own middleware and their own ioredis
 * client stand for two processes of one deployment.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createServer, connect as netConnect, type AddressInfo, type Socket } from 'node:net';
import { join } from 'node:path';
import fc from 'fast-check';
import Redis from 'ioredis';
import RedisV5 from 'ioredis-v5';
import type { RedisOptions } from 'ioredis';
import Koa from 'koa';
import supertest from 'supertest';
import { RedisStore, SessionLockTimeoutError, session } from '../src';
import type { SessionOptions, Store } from '../src';
import { warningsDuring } from './support/app';
import { withHeldClock, withSteppedClock } from './support/clock';
import { gate } from './support/concurrency';
import { PROPERTY_RUNS, propertyParams } from './support/hardening-harness';
import { skipOrFail, startRedis, testRedis, type RedisServer } from './support/redis-server';
import { CookieJar, send, sleep, startApp, type Reply, type TestApp } from './support/redis-apps';
import { IOREDIS_MAJORS } from './support/ioredis-majors';

/** The client settings the README recommends (section "Scaling out"). */
/** What hashIds puts in the store instead of the ID, computed here independently of the library. */
const sha256Hex = (id: string): string => createHash('sha256').update(id).digest('hex');

const RECOMMENDED: RedisOptions = {
  maxRetriesPerRequest: 1,
  commandTimeout: 2000,
  retryStrategy: (times) => Math.min(times * 100, 1000),
  enableAutoPipelining: true,
};

/** The concurrency tests run on both: commands sent one by one, and batched per turn of the event loop. */
const CLIENT_KINDS: Array<[string, RedisOptions]> = [
  ['commands sent one by one', { ...RECOMMENDED, enableAutoPipelining: false }],
  ['auto-pipelining client', RECOMMENDED],
];

describe('RedisStore options', () => {
  const client = { evalsha: async () => 1, eval: async () => 1, hgetall: async () => ({}), del: async () => 0 };

  it('refuses bad options with a TypeError naming the option', () => {
    const bad: [Record<string, unknown>, RegExp][] = [
      [{}, /option client/],
      [{ client: {} }, /option client/],
      [{ client, prefix: 'app:{x}:' }, /option prefix/],
      [{ client, prefix: 7 }, /option prefix/],
      [{ client, lock: 'yes' }, /option lock /],
      // null is not "the default" (prefix: process.env.X ?? null would put the app on the shared default prefix).
      [{ client, prefix: null }, /option prefix/],
      [{ client, lock: null }, /option lock /],
      [{ client, lockTtl: 0 }, /option lockTtl/],
      [{ client, lockTtl: Infinity }, /option lockTtl/],
      [{ client, timeout: -1 }, /option timeout/],
      [{ client, timeout: 2 ** 31 }, /option timeout .*2147483647.*Infinity/],
      [{ client, lockTtl: Number.MAX_SAFE_INTEGER }, /option lockTtl .*2147483647/],
      [{ client, lockttl: 100 }, /unknown RedisStore option lockttl$/],
      // koa-redis's and connect-redis's names, and session()'s, say where the setting is.
      [{ client, ttl: 1000 }, /unknown RedisStore option ttl \(the lifetime is session\(\)'s maxAge\)$/],
      [{ client, maxAge: 1000 }, /unknown RedisStore option maxAge \(it is an option of session\(\)\)$/],
      [{ client, lockTimeout: 1000 }, /unknown RedisStore option lockTimeout \(it is an option of session\(\); lockTtl is how long a cross-process lock lives\)$/],
      [{ client, keyPrefix: 'app:' }, /unknown RedisStore option keyPrefix \(it is prefix\)$/],
      [{ client, redis: client }, /unknown RedisStore option redis \(it is client\)$/],
      // The client itself where the options go (connect-redis and koa-redis take { client } too).
      [{ ...client, options: {} }, /pass the ioredis client as an option: new RedisStore\(\{ client \}\)/],
      // A brace in the client's keyPrefix would make it the hash tag instead of {ID}.
      [{ client: { ...client, options: { keyPrefix: 'app{x}:' } } }, /option client .*keyPrefix/],
      [{ client: { ...client, options: { redisOptions: { keyPrefix: 'app}:' } } } }, /option client .*keyPrefix/],
      [{ client: { ...client, options: { keyPrefix: Buffer.from('app{x}:') } } }, /option client .*keyPrefix/],
    ];
    for (const [options, message] of bad) {
      assert.throws(() => new RedisStore(options as never), (error: unknown) => error instanceof TypeError && message.test(error.message));
    }
  });

  it('tells to pass { client } when given a real ioredis client itself, and takes one whose keyPrefix has no braces (ioredis 6 and 5, their own types)', () => {
    const settings = { host: '127.0.0.1', port: 1, lazyConnect: true, keyPrefix: 'app:' };
    for (const real of [new Redis(settings), new RedisV5(settings)]) {
      try {
        assert.throws(() => new RedisStore(real as never), (error: unknown) => error instanceof TypeError && /new RedisStore\(\{ client \}\)/.test(error.message));
        assert.equal(new RedisStore({ client: real }).key('a'), 'sess:{a}');
      } finally {
        real.disconnect();
      }
    }
  });

  it('offers a write lock only with lock: true', () => {
    assert.equal(new RedisStore({ client }).writeLock, undefined);
    assert.equal(typeof new RedisStore({ client, lock: true }).writeLock?.acquire, 'function');
  });
});

for (const { name: major, Redis: Client, resp } of IOREDIS_MAJORS) describe(`RedisStore on ${major}`, function () {
  this.timeout(60_000);

  let server: RedisServer | undefined;
  let url: string;
  const clients: Redis[] = [];
  const apps: TestApp[] = [];
  let counter = 0;
  let prefix: string;

  before(async function () {
    ({ url, server } = await testRedis(this, 'the RedisStore tests need a Redis'));
  });

  after(async () => {
    await server?.stop();
  });

  beforeEach(() => {
    // A prefix of its own per test: tests never see each other's keys, even on a shared REDIS_URL.
    prefix = `kls-test-${process.pid}-${++counter}:`;
  });

  afterEach(async () => {
    for (const app of apps.splice(0)) {
      app.release();
      await app.close();
    }
    await Promise.all(clients.splice(0).map((client) => client.quit().catch(() => client.disconnect())));
  });

  function connect(options: RedisOptions = RECOMMENDED, at = url): Redis {
    const client = new Client(at, options);
    client.on('error', () => undefined); // reconnects are expected in the fault test
    clients.push(client);
    return client;
  }

  /** A client whose calls of the script that keeps a removal under way (DESTROY_UNDER_WAY) go through `wrap`, given the call. */
  function connectWrappingRemovals(wrap: (call: () => Promise<unknown>) => Promise<unknown>): Redis {
    const client = connect();
    type Send = (script: string, numkeys: number, keysAndArgs: string[]) => Promise<unknown>;
    const calls = client as unknown as Record<'evalsha' | 'eval', Send>;
    for (const method of ['evalsha', 'eval'] as const) {
      const send: Send = calls[method].bind(client);
      calls[method] = (script, numkeys, keysAndArgs) => {
        const call = () => send(script, numkeys, keysAndArgs);
        return numkeys === 3 && keysAndArgs[2].endsWith(':removers') ? wrap(call) : call();
      };
    }
    return client;
  }

  /** One "process": its own ioredis client, RedisStore and Koa app. */
  /**
   * Runs `body` against a redis-server of its own, which it may stall with
   * SIGSTOP (REDIS_URL's is not ours to): left running again, then shut down.
   */
  async function withStalledRedis(test: Mocha.Context, body: (own: RedisServer) => Promise<void>): Promise<void> {
    if (server === undefined) skipOrFail(test, 'stalling Redis needs a redis-server binary (REDIS_URL is not ours to stop)');
    const own = await startRedis();
    try {
      await body(own);
    } finally {
      process.kill(own.pid, 'SIGCONT');
      await own.stop();
    }
  }

  /**
   * Stalls `own` just as the next script with three keys (RETIRE, a
   * regenerate's removal of the old ID) is sent, then calls `then` with the
   * client's socket (to drop it, say). Answers whether that has happened.
   */
  function stallRetire(a: { client: Redis }, own: RedisServer, then: (stream: { destroy(): void }) => void): () => boolean {
    const client = a.client as unknown as { evalsha: (...args: unknown[]) => Promise<unknown>; stream: { destroy(): void } };
    const evalsha = client.evalsha.bind(client);
    let armed = true;
    client.evalsha = (sha, numkeys, keysAndArgs) => {
      if (!armed || numkeys !== 3) return evalsha(sha, numkeys, keysAndArgs);
      armed = false;
      process.kill(own.pid, 'SIGSTOP');
      const answer = evalsha(sha, numkeys, keysAndArgs);
      then(client.stream);
      return answer;
    };
    return () => !armed;
  }

  /** After a regenerate: the client holds an ID other than `earlier`, and the session lives under it alone. */
  async function assertKeptUnderNewId(a: Awaited<ReturnType<typeof instance>>, jar: CookieJar, earlier: (string | undefined)[]): Promise<void> {
    assert.ok(!earlier.includes(jar.sessionId), 'the new ID went out');
    assert.deepEqual((await send(jar, a.url, 'GET', '/')).body, { seed: 1 }, 'the session is kept');
    assert.deepEqual(await sessionKeys(a.client), [a.store.key(jar.sessionId as string)]);
  }

  async function instance(storeOptions: { lock?: boolean; lockTtl?: number; timeout?: number } = {}, sessionOptions: SessionOptions = {}, client = connect()) {
    const store = new RedisStore({ client, prefix, ...storeOptions });
    const app = await startApp(store, sessionOptions);
    apps.push(app);
    return { store, client, app, url: app.url };
  }

  async function keysOf(client: Redis, match = '*'): Promise<string[]> {
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await client.scan(cursor, 'MATCH', match, 'COUNT', 1000);
      cursor = next;
      keys.push(...batch);
    } while (cursor !== '0');
    return keys.sort();
  }

  /**
   * This test's keys, once no removal is under way (its end is told without
   * waiting, after the response), leaving out the keys that keep track of
   * removals (their own tests look at them). Throws when a removal stays
   * under way.
   */
  async function ourKeys(client: Redis): Promise<string[]> {
    const isRemovers = (key: string) => key.endsWith(':removers');
    for (let tries = 0; ; tries++) {
      const keys = await keysOf(client, `${prefix}*`);
      const underWay = await Promise.all(keys.filter(isRemovers).map((key) => client.zcount(key, `(${Date.now()}`, '+inf')));
      if (underWay.every((count) => count === 0)) return keys.filter((key) => !isRemovers(key));
      if (tries === 100) throw new Error(`a removal is still under way: ${keys.filter(isRemovers).join(', ')}`);
      await sleep(10);
    }
  }

  /** This test's session hashes: its keys but the locks and removal marks (and never a removal under way, see ourKeys). */
  async function sessionKeys(client: Redis): Promise<string[]> {
    return (await ourKeys(client)).filter((key) => !key.endsWith(':lock') && !key.endsWith(':removed'));
  }

  /** Starts a session holding { seed: 1 } in `jar` through `base`. */
  async function login(jar: CookieJar, base: string): Promise<string> {
    const reply = await send(jar, base, 'POST', '/set?key=seed&value=1');
    assert.equal(reply.status, 200);
    assert.ok(jar.sessionId);
    return jar.sessionId;
  }

  it(`talks to Redis in RESP${resp}, as ${major} does by default`, async () => {
    assert.match(String(await connect().call('CLIENT', 'INFO')), new RegExp(`\\bresp=${resp}\\b`));
  });

  it(`a client that has subscribed to a channel ${resp === 3 ? 'still serves the store (RESP3 allows every command)' : 'refuses the store\'s commands, and the request gets a 503 (RESP2)'}`, async () => {
    const client = connect();
    await client.subscribe(`${prefix}news`);
    const a = await instance({}, {}, client);
    const jar = new CookieJar();
    const reply = await send(jar, a.url, 'POST', '/set?key=k&value=1');
    assert.equal(reply.status, resp === 3 ? 200 : 503);
    if (resp === 3) assert.deepEqual((await send(jar, a.url, 'GET', '/')).body, { k: 1 });
  });

  if (resp === 3) {
    it("a client with replyMapping: 'resp3' (map replies as objects) serves the store alike: values, locked increments, regenerate, destroy", async () => {
      const client = connect({ ...RECOMMENDED, protocol: 3, replyMapping: 'resp3' });
      // The setting is in effect: a map reply (CONFIG GET's) arrives as an object, not as a flat [key, value] array.
      assert.deepEqual(Object.keys((await client.call('CONFIG', 'GET', 'maxmemory')) as object), ['maxmemory']);
      const a = await instance({ lock: true }, {}, client);
      const jar = new CookieJar();
      await send(jar, a.url, 'POST', `/set?key=user&value=${encodeURIComponent('{"name":"ada"}')}`);
      await Promise.all(Array.from({ length: 20 }, () => send(jar, a.url, 'POST', '/incr?delay=2')));
      const before = jar.sessionId;
      assert.deepEqual((await send(jar, a.url, 'POST', '/regenerate')).body, { user: { name: 'ada' }, n: 20 });
      assert.notEqual(jar.sessionId, before);
      assert.deepEqual(await sessionKeys(client), [a.store.key(jar.sessionId as string)]);
      assert.equal((await send(jar, a.url, 'POST', '/destroy')).status, 204);
      assert.deepEqual(await sessionKeys(client), []);
    });
  }

  it('round-trips a session, stored as one hash that expires with maxAge', async () => {
    const a = await instance({}, { maxAge: 60_000 });
    const jar = new CookieJar();
    await send(jar, a.url, 'POST', `/set?key=user&value=${encodeURIComponent('{"name":"ada","roles":["admin"]}')}`);
    const id = jar.sessionId as string;

    assert.deepEqual((await send(jar, a.url, 'GET', '/')).body, { user: { name: 'ada', roles: ['admin'] } });

    const key = `${prefix}{${id}}`;
    assert.deepEqual(await ourKeys(a.client), [key]);
    assert.equal(await a.client.type(key), 'hash');
    const fields = await a.client.hgetall(key);
    assert.deepEqual(Object.keys(fields).sort(), ['d:user', 'm:c', 'm:t']);
    const pttl = await a.client.pttl(key);
    assert.ok(pttl > 50_000 && pttl <= 60_000, `PTTL ${pttl} should be close to maxAge 60000`);
  });

  it('a session of 70,000 keys is applied, regenerated and read back whole (script arguments are never spread into a call)', async () => {
    const a = await instance();
    const jar = new CookieJar();
    await login(jar, a.url);
    const changes = Array.from({ length: 70_000 }, (_, i) => ({ op: 'set' as const, key: `item${i}`, value: i }));
    assert.equal(await a.store.applyChanges(jar.sessionId as string, changes, Date.now(), 60_000), true);

    const regenerated = await send(jar, a.url, 'POST', '/regenerate');
    assert.equal(regenerated.status, 200);
    const data = (await send(jar, a.url, 'GET', '/')).body as Record<string, number>;
    assert.equal(Object.keys(data).length, 70_001);
    assert.equal(data.item69999, 69_999);
    assert.deepEqual(await sessionKeys(a.client), [`${prefix}{${jar.sessionId}}`], 'only the new ID is left');
    assert.equal((await send(jar, a.url, 'POST', '/destroy')).status, 204);
    assert.deepEqual(await sessionKeys(a.client), []);
  });

  it('keeps any key name and any JSON value, __proto__ and the empty key included', async () => {
    const a = await instance();
    const jar = new CookieJar();
    const values: [string, unknown][] = [
      ['__proto__', { polluted: true }],
      ['', 'empty key'],
      ['constructor', [1, 'two', null, { three: 3 }]],
      ['d:looks-like-ours', 'no key is reserved'],
      ['m:c', 0],
      ['unicode ✓', 'ünïcødé'],
    ];
    for (const [key, value] of values) {
      const reply = await send(jar, a.url, 'POST', `/set?key=${encodeURIComponent(key)}&value=${encodeURIComponent(JSON.stringify(value))}`);
      assert.equal(reply.status, 200);
    }
    const body = (await send(jar, a.url, 'GET', '/')).body as Record<string, unknown>;
    for (const [key, value] of values) assert.deepEqual(Object.getOwnPropertyDescriptor(body, key)?.value, value, key);
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
  });

  it('keeps keys that are not well-formed Unicode (lone surrogates) apart and intact, through a commit, a regenerate and clear()', async () => {
    const a = await instance();
    const jar = new CookieJar();
    const values: [string, string][] = [['\uD800', 'high alone'], ['\uDC00', 'low alone'], ['\uFFFD', 'replacement character'], ['\uD83D\uDE00', 'a pair']];
    const setAll = async () => {
      for (const [key, value] of values) {
        const reply = await send(jar, a.url, 'POST', `/set?keyJson=${encodeURIComponent(JSON.stringify(key))}&value=${encodeURIComponent(JSON.stringify(value))}`);
        assert.equal(reply.status, 200);
      }
    };
    const expected = Object.fromEntries(values);
    await setAll();
    assert.deepEqual((await send(jar, a.url, 'GET', '/')).body, expected);
    await send(jar, a.url, 'POST', '/regenerate');
    assert.deepEqual((await send(jar, a.url, 'GET', '/')).body, expected, 'after regenerate');
    const fields = Object.keys(await a.client.hgetall(`${prefix}{${jar.sessionId as string}}`)).sort();
    assert.deepEqual(fields, ['d:\uD83D\uDE00', 'd:\uFFFD', 'm:c', 'm:t', 'u:"\\ud800"', 'u:"\\udc00"'].sort());
    assert.equal(await a.store.applyChanges(jar.sessionId as string, [{ op: 'clear' }], Date.now(), 60_000), true);
    assert.deepEqual(Object.keys(await a.client.hgetall(`${prefix}{${jar.sessionId as string}}`)).sort(), ['m:c', 'm:t'], 'after clear()');
  });

  it('fields it cannot have written itself (another tool wrote them) are left out, and the session stays usable', async () => {
    const a = await instance();
    const jar = new CookieJar();
    const id = await login(jar, a.url);
    await a.client.hset(a.store.key(id), 'u:notjson', '"x"', 'u:123', '"number key"', 'u:{"a":1}', '"object key"', 'z:other', '1');
    assert.deepEqual((await send(jar, a.url, 'GET', '/')).body, { seed: 1 });
    const reply = await send(jar, a.url, 'POST', '/set?key=more&value=2');
    assert.equal(reply.status, 200);
    assert.deepEqual(reply.body, { seed: 1, more: 2 });
  });

  it('two middlewares on one RedisStore, one with hashIds, keep their records apart even when requests for one ID queue across them', async () => {
    const store = new RedisStore({ client: connect(), prefix });
    const plain = await startApp(store);
    const hashed = await startApp(store, { hashIds: true });
    apps.push(plain, hashed);
    const jar = new CookieJar();
    await send(jar, plain.url, 'POST', `/set?key=who&value=${encodeURIComponent('"plain"')}`);
    const id = jar.sessionId as string;
    // The same ID's record as the hashIds middleware keeps it: another key, other data.
    await store.set(sha256Hex(id), { data: { who: 'hashed' }, createdAt: Date.now(), touchedAt: Date.now() }, 60_000);

    // A write on the plain middleware holds the ID's lock while a write on the hashed one asks for the same ID.
    const holding = send(jar, plain.url, 'POST', `/hold?key=during&value=true`);
    await plain.held();
    const viaHashed = send(jar, hashed.url, 'POST', `/set?key=seen&value=true`);
    await sleep(50);
    plain.release();
    await holding;
    assert.deepEqual((await viaHashed).body, { who: 'hashed', seen: true }, "the hashed middleware's request sees its own record, not the one the plain middleware committed");
  });

  it('with hashIds: true, only the SHA-256 of an ID ever reaches Redis, lock key included', async () => {
    const a = await instance({ lock: true }, { hashIds: true });
    const jar = new CookieJar();
    const first = await login(jar, a.url);
    await send(jar, a.url, 'POST', '/regenerate');
    const id = jar.sessionId as string;
    assert.notEqual(id, first);

    // Hold a write request, so that its lock key exists while we look.
    const holding = send(jar, a.url, 'POST', '/hold?key=during&value=true');
    await a.app.held();
    const seen: string[] = [];
    for (const key of await keysOf(a.client)) {
      seen.push(key);
      const type = await a.client.type(key);
      if (type === 'hash') seen.push(...Object.entries(await a.client.hgetall(key)).flat());
      else if (type === 'string') seen.push((await a.client.get(key)) as string);
    }
    a.app.release();
    assert.equal((await holding).status, 200);

    for (const raw of [id, first]) {
      assert.ok(!seen.some((text) => text.includes(raw)), 'a raw session ID was found in Redis');
    }
    assert.ok(seen.includes(`${prefix}{${sha256Hex(id)}}`), 'the session key is named by the hash');
    assert.ok(seen.includes(`${prefix}{${sha256Hex(id)}}:lock`), 'the lock key is named by the hash');
    assert.ok(seen.includes(`${prefix}{${sha256Hex(first)}}:removed`), 'the mark of the regenerated-away ID is named by the hash');
    assert.deepEqual(await sessionKeys(a.client), [`${prefix}{${sha256Hex(id)}}`]);
  });

  for (const [kind, clientOptions] of CLIENT_KINDS) {
    it(`two processes writing different keys of one session at the same time keep every key (${kind})`, async () => {
      const a = await instance({}, {}, connect(clientOptions));
      const b = await instance({}, {}, connect(clientOptions));
      const jar = new CookieJar();
      await login(jar, a.url);

      const writes: Promise<unknown>[] = [];
      for (let i = 0; i < 40; i++) {
        writes.push(send(jar, a.url, 'POST', `/set?key=a${i}&value=${i}`));
        writes.push(send(jar, b.url, 'POST', `/set?key=b${i}&value=${i}`));
      }
      const replies = (await Promise.all(writes)) as { status: number }[];
      assert.ok(replies.every((reply) => reply.status === 200));

      const data = (await send(jar, b.url, 'GET', '/')).body as Record<string, number>;
      assert.equal(Object.keys(data).length, 81);
      for (let i = 0; i < 40; i++) {
        assert.equal(data[`a${i}`], i);
        assert.equal(data[`b${i}`], i);
      }
    });

    it(`with lock: true, 100 concurrent increments spread over two processes add exactly 100 (${kind})`, async () => {
      const a = await instance({ lock: true }, { lockTimeout: 30_000 }, connect(clientOptions));
      const b = await instance({ lock: true }, { lockTimeout: 30_000 }, connect(clientOptions));
      const jar = new CookieJar();
      await login(jar, a.url);

      const replies = await Promise.all(
        Array.from({ length: 100 }, (_, i) => send(jar, i % 2 === 0 ? a.url : b.url, 'POST', '/incr?delay=2')),
      );
      assert.deepEqual([...new Set(replies.map((reply) => reply.status))], [200]);
      assert.equal(((await send(jar, a.url, 'GET', '/')).body as { n: number }).n, 100);
      assert.deepEqual(await ourKeys(a.client), [`${prefix}{${jar.sessionId}}`], 'no lock key left behind');
    });
  }

  it('without lock: true, concurrent increments across processes lose updates (what lock: true is for)', async () => {
    const a = await instance();
    const b = await instance();
    const jar = new CookieJar();
    await login(jar, a.url);

    await Promise.all(Array.from({ length: 100 }, (_, i) => send(jar, i % 2 === 0 ? a.url : b.url, 'POST', '/incr?delay=5')));
    const n = ((await send(jar, a.url, 'GET', '/')).body as { n: number }).n;
    // Each process is exact on its own (its in-process write lock), but the
    // two read-modify-write the same key at the same time.
    assert.ok(n > 0 && n < 100, `expected lost updates without the Redis lock, got n = ${n}`);
  });

  /**
   * Counts the session loads (HGETALL sent by a client, not run inside a
   * script) that Redis runs for `prefix` from now until `count()`, watching
   * with MONITOR. `count()` first waits for a marker sent through `client`,
   * so every command sent before it has been seen.
   */
  async function watchLoads(client: Redis): Promise<{ count(): Promise<number> }> {
    const monitor = await connect().monitor();
    clients.push(monitor); // closed after the test even when it fails before count()
    let loads = 0;
    let markerSeen: () => void = () => undefined;
    const marker = `${prefix}marker`;
    monitor.on('monitor', (_time: string, args: string[], source: string) => {
      const [command, key] = args;
      if (command?.toLowerCase() === 'hgetall' && key?.startsWith(prefix) && source !== 'lua') loads++;
      if (command?.toLowerCase() === 'echo' && key === marker) markerSeen();
    });
    return {
      async count() {
        const seen = new Promise<void>((resolve) => (markerSeen = resolve));
        await client.echo(marker);
        await seen;
        monitor.disconnect();
        return loads;
      },
    };
  }

  /*
   * A hot session: requests queued behind a writer start from the session
   * as its commit left it in Redis (read back by the commit's own script),
   * instead of loading it again. Nothing a user sees may change by it.
   */
  describe('requests queued for a session start from what the writer before them committed', () => {
    for (const [kind, clientOptions] of CLIENT_KINDS) {
      it(`100 concurrent increments in one process add exactly 100, with far fewer loads than requests (${kind})`, async () => {
        const a = await instance({}, { lockTimeout: 30_000 }, connect(clientOptions));
        const jar = new CookieJar();
        await login(jar, a.url);

        const watching = await watchLoads(a.client);
        const replies = await Promise.all(Array.from({ length: 100 }, () => send(jar, a.url, 'POST', '/incr?delay=2')));
        const loads = await watching.count();
        assert.deepEqual([...new Set(replies.map((reply) => reply.status))], [200]);
        assert.deepEqual(replies.map((reply) => (reply.body as { n: number }).n).sort((x, y) => x - y), Array.from({ length: 100 }, (_, i) => i + 1));
        assert.deepEqual((await send(jar, a.url, 'GET', '/')).body, { seed: 1, n: 100 });
        assert.ok(loads < 50, `expected the queued requests to skip their loads, but Redis loaded the session ${loads} times for 100 requests`);
      });
    }

    it('any mix of concurrent increments, reads and writes in either lock mode on one session ends exact (property)', async () => {
      const a = await instance({}, { lockTimeout: 30_000, lockMode: (ctx) => (ctx.method === 'GET' || ctx.query.mode === 'read' ? 'read' : 'write') });
      const request = fc.oneof(
        fc.record({ kind: fc.constant('incr' as const), delay: fc.integer({ min: 0, max: 3 }) }),
        fc.record({ kind: fc.constant('read' as const) }),
        fc.record({ kind: fc.constant('set' as const), mode: fc.constantFrom('read', 'write') }),
      );
      await fc.assert(
        fc.asyncProperty(fc.array(request, { minLength: 2, maxLength: 30 }), async (requests) => {
          const jar = new CookieJar();
          await login(jar, a.url);
          const replies = await Promise.all(
            requests.map((r, i) => {
              if (r.kind === 'incr') return send(jar, a.url, 'POST', `/incr?delay=${r.delay}`);
              if (r.kind === 'read') return send(jar, a.url, 'GET', '/');
              return send(jar, a.url, 'POST', `/set?key=k${i}&value=${i}&mode=${r.mode}`);
            }),
          );
          assert.deepEqual([...new Set(replies.map((reply) => reply.status))], [200]);
          const increments = requests.filter((r) => r.kind === 'incr').length;
          const counted = replies.filter((_, i) => requests[i]?.kind === 'incr').map((reply) => (reply.body as { n: number }).n);
          assert.deepEqual(counted.sort((x, y) => x - y), Array.from({ length: increments }, (_, i) => i + 1), 'each increment saw the one before');
          const expected: Record<string, number> = { seed: 1 };
          if (increments > 0) expected.n = increments;
          requests.forEach((r, i) => {
            if (r.kind === 'set') expected[`k${i}`] = i;
          });
          const final = (await send(jar, a.url, 'GET', '/')).body as Record<string, number>;
          assert.deepEqual(Object.fromEntries(Object.entries(final).sort()), Object.fromEntries(Object.entries(expected).sort()));
        }),
        propertyParams(PROPERTY_RUNS),
      );
    });

    /** lockMode for these tests (GET and `?mode=read` read, the rest write), noting each request as it asks for its lock. */
    function notingLockMode(asked: string[]): NonNullable<SessionOptions['lockMode']> {
      return (ctx) => {
        asked.push(ctx.url);
        return ctx.method === 'GET' || ctx.query.mode === 'read' ? 'read' : 'write';
      };
    }

    /**
     * An app whose lockMode notes each request as it asks for its lock, a
     * session { seed: 1 }, and a write request holding that session's lock
     * after setting `key` to 1. `inLine` sends a request and resolves once
     * it has taken its place in line (its reply still to come).
     */
    async function writerHolding(key: string) {
      const asked: string[] = [];
      const a = await instance({}, { lockMode: notingLockMode(asked) });
      const jar = new CookieJar();
      await login(jar, a.url);
      const writing = send(jar, a.url, 'POST', `/hold?key=${key}&value=1`);
      await a.app.held();
      const inLine = async (sending: () => Promise<Reply>): Promise<{ reply: Promise<Reply> }> => {
        const before = asked.length;
        const reply = sending();
        while (asked.length === before) await sleep(2);
        return { reply };
      };
      return { a, jar, writing, inLine };
    }

    it('readers and writers queued behind a writer see its changes', async () => {
      const { a, jar, writing, inLine } = await writerHolding('x');
      const read = await inLine(() => send(jar, a.url, 'GET', '/'));
      const write = await inLine(() => send(jar, a.url, 'POST', '/set?key=y&value=2'));
      const readAfter = await inLine(() => send(jar, a.url, 'GET', '/'));
      a.app.release();
      assert.equal((await writing).status, 200);
      assert.deepEqual((await read.reply).body, { seed: 1, x: 1 });
      assert.deepEqual((await write.reply).body, { seed: 1, x: 1, y: 2 });
      assert.deepEqual((await readAfter.reply).body, { seed: 1, x: 1, y: 2 });
    });

    it('only the first request in line starts from what the writer left: the next one loads, and sees what another process wrote', async () => {
      const { a, jar, writing, inLine } = await writerHolding('w');
      const b = await instance();
      // A reader first in line behind the writer, holding the lock in turn (and changing nothing, so that it
      // hands nothing over itself); a writer behind it, granted only after it.
      const holding = await inLine(() => send(jar, a.url, 'POST', '/hold?mode=read'));
      const waiting = await inLine(() => send(jar, a.url, 'POST', '/set?key=last&value=3'));
      a.app.holds.shift()?.();
      assert.deepEqual((await writing).body, { seed: 1, w: 1 });
      await a.app.held();
      assert.equal((await send(jar, b.url, 'POST', '/set?key=other&value=2')).status, 200);

      a.app.release();
      assert.deepEqual((await waiting.reply).body, { seed: 1, w: 1, other: 2, last: 3 });
      assert.equal((await holding.reply).status, 200);
      assert.deepEqual((await send(jar, a.url, 'GET', '/')).body, { seed: 1, w: 1, other: 2, last: 3 });
    });

    it('with lock: true, nothing is handed over: every request loads from Redis', async () => {
      const a = await instance({ lock: true }, { lockTimeout: 30_000 });
      const jar = new CookieJar();
      await login(jar, a.url);

      const watching = await watchLoads(a.client);
      await Promise.all(Array.from({ length: 20 }, () => send(jar, a.url, 'POST', '/incr?delay=2')));
      assert.equal(await watching.count(), 20);
      assert.deepEqual((await send(jar, a.url, 'GET', '/')).body, { seed: 1, n: 20 });
    });
  });

  it('a write lock is renewed while its request runs, and other processes wait for it', async () => {
    const lockTtl = 1000;
    const a = await instance({ lock: true, lockTtl }, { lockTimeout: 20_000 });
    const b = await instance({ lock: true, lockTtl }, { lockTimeout: 20_000 });
    const jar = new CookieJar();
    const id = await login(jar, a.url);

    const holding = send(jar, a.url, 'POST', '/hold?key=first&value=1');
    await a.app.held();
    const waiting = send(jar, b.url, 'POST', '/set?key=second&value=2');
    await sleep(lockTtl * 3); // several lifetimes of an unrenewed lock
    assert.ok((await a.client.pttl(`${prefix}{${id}}:lock`)) > 0, 'the lock is still held');
    assert.deepEqual(await a.store.get(id).then((record) => (record as { data: unknown }).data), { seed: 1 }, 'B has not written yet');

    a.app.release();
    assert.equal((await holding).status, 200);
    assert.equal((await waiting).status, 200);
    assert.deepEqual((await send(jar, a.url, 'GET', '/')).body, { seed: 1, first: 1, second: 2 });
  });

  it('a lock whose holder process died expires, and the next request proceeds within lockTtl', async () => {
    const lockTtl = 1500;
    // Renewed every lockTtl / 3, the lock has at most lockTtl left when its holder dies.
    const a = await instance({ lock: true, lockTtl }, { lockTimeout: lockTtl * 2 });
    const jar = new CookieJar();
    const id = await login(jar, a.url);

    const child = spawn(process.execPath, ['-r', 'ts-node/register', join(__dirname, 'fixtures', 'hold-redis-lock.ts'), url, prefix, id, String(lockTtl)], {
      cwd: join(__dirname, '..'),
      env: { ...process.env, TS_NODE_TRANSPILE_ONLY: 'true' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      await new Promise<void>((resolve, reject) => {
        let out = '';
        child.stdout?.on('data', (chunk: Buffer) => {
          out += chunk.toString();
          if (out.includes('locked')) resolve();
        });
        child.once('exit', (code) => reject(new Error(`lock holder exited early (${code})`)));
      });
      assert.ok((await a.client.pttl(`${prefix}{${id}}:lock`)) > 0, 'the child holds the lock');
    } catch (error) {
      child.kill('SIGKILL');
      throw error;
    }
    const killedAt = Date.now();
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));

    const reply = await send(jar, a.url, 'POST', '/set?key=after&value=1');
    const waited = Date.now() - killedAt;
    assert.equal(reply.status, 200, `the request should get the lock once it expired (waited ${waited} ms)`);
    assert.deepEqual((await send(jar, a.url, 'GET', '/')).body, { seed: 1, after: 1 });
  });

  it('a held lock never keeps its process alive: a process that closed everything else exits, its lock left to expire', async () => {
    const lockTtl = 1500;
    const id = 'held-at-exit';
    const child = spawn(process.execPath, ['-r', 'ts-node/register', join(__dirname, 'fixtures', 'hold-redis-lock.ts'), url, prefix, id, String(lockTtl), 'quit'], {
      cwd: join(__dirname, '..'),
      env: { ...process.env, TS_NODE_TRANSPILE_ONLY: 'true' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout?.on('data', (chunk: Buffer) => (out += chunk.toString()));
    let timer: NodeJS.Timeout | undefined;
    try {
      const code = await Promise.race([
        new Promise<number | null>((resolve) => child.once('exit', (exitCode) => resolve(exitCode))),
        new Promise<'running'>((resolve) => (timer = setTimeout(() => resolve('running'), 20_000))),
      ]);
      assert.equal(out, 'locked\n');
      assert.equal(code, 0, 'the process exited by itself');
    } finally {
      clearTimeout(timer);
      child.kill('SIGKILL');
    }
    const pttl = await connect().pttl(`${prefix}{${id}}:lock`);
    assert.ok(pttl <= lockTtl, `PTTL ${pttl}: the lock expires by itself`);
  });

  it('a request that cannot get the Redis lock within lockTimeout gets a 503 and changes nothing', async () => {
    const a = await instance({ lock: true });
    const b = await instance({ lock: true }, { lockTimeout: 300 });
    const jar = new CookieJar();
    await login(jar, a.url);
    const holding = send(jar, a.url, 'POST', '/hold?key=first&value=1');
    await a.app.held();
    const timedOut = await send(jar, b.url, 'POST', '/set?key=lost&value=1');
    assert.equal(timedOut.status, 503);
    a.app.release();
    await holding;
    assert.deepEqual((await send(jar, a.url, 'GET', '/')).body, { seed: 1, first: 1 });
  });

  it('the lock is released only by its holder', async () => {
    const client = connect();
    const store = new RedisStore({ client, prefix, lock: true, lockTtl: 5000 });
    const lock = store.writeLock!;
    const releaseFirst = await lock.acquire('some-session', 1000);
    await assert.rejects(lock.acquire('some-session', 100), SessionLockTimeoutError);
    await client.del(store.lockKey('some-session')); // as if it had expired
    const releaseSecond = await lock.acquire('some-session', 1000);
    await releaseFirst(); // a late release from the first holder
    assert.equal(await client.exists(store.lockKey('some-session')), 1, "the first holder's release left the second's lock alone");
    await releaseSecond();
    await releaseSecond(); // twice is harmless
    assert.equal(await client.exists(store.lockKey('some-session')), 0);
  });

  it('a lock lost to another holder is never renewed by its old holder', async () => {
    const real = connect();
    const key = `${prefix}{lost}:lock`;
    let taken = false;
    let renewed!: () => void;
    const renewal = new Promise<void>((resolve) => (renewed = resolve));
    /** Runs a script; once the lock is taken, the only one sent with its key, a token and a TTL is a renewal. */
    const watch = async (run: () => Promise<unknown>, keysAndArgs: string[]) => {
      const renewsTakenLock = taken && keysAndArgs[0] === key && keysAndArgs.length === 3;
      const answer = await run(); // a script Redis does not have yet rejects (NOSCRIPT), and goes again by its source
      if (renewsTakenLock) renewed();
      return answer;
    };
    const watched = {
      hgetall: (k: string) => real.hgetall(k),
      del: (...keys: string[]) => real.del(...keys),
      eval: (script: string, numkeys: number, keysAndArgs: string[]) => watch(() => real.eval(script, numkeys, keysAndArgs), keysAndArgs),
      evalsha: (sha: string, numkeys: number, keysAndArgs: string[]) => watch(() => real.evalsha(sha, numkeys, keysAndArgs), keysAndArgs),
    };
    const store = new RedisStore({ client: watched, prefix, lock: true, lockTtl: 300 });
    const release = await store.writeLock!.acquire('lost', 1000);
    // The lock expired during a stall, and another process took it.
    await real.set(key, 'another-holder', 'PX', 60_000);
    taken = true;
    await renewal; // a renewal sent after that has been answered
    const pttl = await real.pttl(key);
    assert.ok(pttl > 55_000, `PTTL ${pttl}: the other holder's lock was left as it was`);
    await release();
    assert.equal(await real.get(key), 'another-holder', 'nor released by it');
  });

  it('a lockTtl that is not a whole number of milliseconds is rounded up: write requests with lock: true still get their lock', async () => {
    const a = await instance({ lock: true, lockTtl: 1000.5 });
    const jar = new CookieJar();
    const id = await login(jar, a.url);
    const holding = send(jar, a.url, 'POST', '/hold?key=b&value=2');
    await a.app.held();
    const pttl = await a.client.pttl(a.store.lockKey(id));
    assert.ok(pttl > 0 && pttl <= 1001, `PTTL ${pttl}`);
    a.app.release();
    assert.equal((await holding).status, 200);
    assert.deepEqual((await send(jar, a.url, 'GET', '/')).body, { seed: 1, b: 2 });
  });

  it('with lock: true, a lock is forgotten once its request is done: a later applyChanges of the app on that session is not taken for a commit under a lost lock', async () => {
    const a = await instance({ lock: true });
    const jar = new CookieJar();
    const id = await login(jar, a.url);
    assert.equal((await send(jar, a.url, 'POST', '/set?key=b&value=2')).status, 200);
    assert.equal(await a.client.exists(a.store.lockKey(id)), 0);
    assert.equal(await a.store.applyChanges(id, [{ op: 'set', key: 'by', value: 'admin' }], Date.now(), 60_000), true);
    assert.deepEqual((await send(jar, a.url, 'GET', '/')).body, { seed: 1, b: 2, by: 'admin' });
  });

  for (const [how, step] of [['back', -3_600_000], ['forward', 3_600_000]] as const) {
    it(`the Redis lock's wait is timed on the monotonic clock: a wall clock set ${how} an hour while waiting changes nothing`, async () => {
      const client = connect();
      const store = new RedisStore({ client, prefix, lock: true, lockTtl: 5000 });
      const lock = store.writeLock!;
      const releaseFirst = await lock.acquire('stepped', 5000);
      const started = performance.now();
      // Forward, lockTimeout is long: the waiter must not give up at the step, however late the loaded machine frees the lock.
      const second = lock.acquire('stepped', step > 0 ? 10_000 : 400).then(
        (release) => ({ release, ms: performance.now() - started }),
        (error: unknown) => ({ error, ms: performance.now() - started }),
      );
      await withSteppedClock(step, async () => {
        if (step > 0) {
          // Forward: the lock comes free well within lockTimeout, and the waiter must still be there to take it.
          await sleep(100);
          await releaseFirst();
          const outcome = await second;
          assert.ok('release' in outcome, `gave up after ${Math.round(outcome.ms)} ms instead of taking the lock freed after 100 ms`);
          await outcome.release();
        } else {
          // Back: the lock never comes free, and the waiter must give up after lockTimeout, not an hour later.
          const outcome = await Promise.race([second, sleep(3000).then(() => ({ ms: Infinity }))]);
          assert.ok('error' in outcome && outcome.error instanceof SessionLockTimeoutError, `still waiting after ${Math.round(outcome.ms)} ms (lockTimeout 400 ms)`);
          await releaseFirst();
        }
      });
      assert.equal(await client.exists(store.lockKey('stepped')), 0, 'no lock left behind');
    });
  }

  for (const [what, path] of [['an update', '/hold?key=stale&value=1'], ['a regenerate', '/regenerate?hold']]) {
    it(`with lock: true, ${what} whose Redis lock expired while it ran (a stall longer than lockTtl) gets a 503 and writes nothing; the new holder's changes stand`, async () => {
      const a = await instance({ lock: true });
      const b = await instance({ lock: true });
      const jar = new CookieJar();
      const id = await login(jar, a.url);
      const storeErrors: unknown[] = [];
      a.app.app.on('error', (error) => storeErrors.push(error));

      const stale = send(jar, a.url, 'POST', path);
      await a.app.held();
      await a.client.del(a.store.lockKey(id)); // as if it had expired while the process stalled
      const fresh = send(jar, b.url, 'POST', '/hold?key=fresh&value=2');
      await b.app.held(); // b took the lock
      a.app.release();
      const staleReply = await stale;
      b.app.release();

      assert.equal(staleReply.status, 503);
      assert.equal((await fresh).status, 200);
      assert.equal(jar.sessionId, id);
      assert.deepEqual((await send(jar, a.url, 'GET', '/')).body, { seed: 1, fresh: 2 });
      assert.deepEqual(await ourKeys(a.client), [`${prefix}{${id}}`], 'no copy, no lock and no removal mark left behind');
      const cause = (storeErrors[0] as { cause?: Error } | undefined)?.cause;
      assert.match(String(cause?.message), /Redis lock expired \(lockTtl 10000 ms\) before the commit, so nothing was written/);
    });
  }

  it('with lock: true, a write-mode request that changed nothing still answers 200 and pushes the expiry after its lock expired: a push spoils nothing', async () => {
    const a = await instance({ lock: true }, { maxAge: 2000 });
    const jar = new CookieJar();
    const id = await login(jar, a.url);
    const savedAt = Number(await a.client.hget(a.store.key(id), 'm:t'));
    await sleep(300); // past a tenth of maxAge: a push is due

    const idle = send(jar, a.url, 'POST', '/hold'); // changes nothing
    await a.app.held();
    await a.client.del(a.store.lockKey(id)); // as if it had expired while the process stalled
    a.app.release();
    const reply = await idle;

    assert.equal(reply.status, 200);
    assert.equal(reply.setCookies.filter((line) => line.startsWith('session_id=')).length, 1, 'the pushed expiry goes out');
    assert.ok(Number(await a.client.hget(a.store.key(id), 'm:t')) > savedAt, 'the push is stored');
  });

  it('a lifetime beyond Number.MAX_SAFE_INTEGER is refused before anything is written: the stored session and its expiry stay', async () => {
    const a = await instance();
    await a.store.set('kept', { data: { v: 1 }, createdAt: 1, touchedAt: 1 }, 60_000);
    for (const call of [
      () => a.store.set('kept', { data: { v: 2 }, createdAt: 1, touchedAt: 1 }, 1e19),
      () => a.store.applyChanges('kept', [{ op: 'set', key: 'v', value: 3 }], Date.now(), 1e19),
    ]) {
      await assert.rejects(call(), /TypeError: .*RedisStore needs a positive, finite maxAgeMs/);
    }
    assert.deepEqual((await a.store.get('kept'))?.data, { v: 1 });
    const pttl = await a.client.pttl(`${prefix}{kept}`);
    assert.ok(pttl > 50_000 && pttl <= 60_000, `PTTL ${pttl}`);
    await a.store.destroy('kept');
  });

  it('applyChanges replays set, delete and clear in order, and never recreates a missing session', async () => {
    const client = connect();
    const store = new RedisStore({ client, prefix });
    await store.set('s1', { data: { a: 1, b: 2 }, createdAt: 1000, touchedAt: 1000 }, 60_000);
    assert.equal(await store.applyChanges('s1', [
      { op: 'set', key: 'c', value: { deep: [1] } },
      { op: 'delete', key: 'a' },
      { op: 'clear' },
      { op: 'set', key: 'after', value: true },
    ], 2000, 30_000), true);
    assert.deepEqual(await store.get('s1'), { data: { after: true }, createdAt: 1000, touchedAt: 2000 });
    const pttl = await client.pttl(store.key('s1'));
    assert.ok(pttl > 25_000 && pttl <= 30_000, `PTTL ${pttl}`);

    // Big sessions go through the scripts' chunked HSET / HDEL.
    const big = Object.fromEntries(Array.from({ length: 1500 }, (_, i) => [`k${i}`, { i }]));
    await store.set('s2', { data: big, createdAt: 1000, touchedAt: 1000 }, 60_000);
    assert.deepEqual(((await store.get('s2')) as { data: unknown }).data, big);
    assert.equal(await store.applyChanges('s2', [{ op: 'clear' }, { op: 'set', key: 'only', value: 1 }], 3000, 60_000), true);
    assert.deepEqual(await store.get('s2'), { data: { only: 1 }, createdAt: 1000, touchedAt: 3000 });

    assert.equal(await store.applyChanges('gone', [{ op: 'set', key: 'x', value: 1 }], 2000, 30_000), false);
    await store.touch('gone', 30_000);
    assert.equal(await client.exists(store.key('gone')), 0);
    assert.equal(await store.get('gone'), undefined);
  });

  it('applyChanges with a push time older than the stored one applies the changes and leaves push time and expiry as they are', async () => {
    const client = connect();
    const store = new RedisStore({ client, prefix });
    const otherProcess = new RedisStore({ client: connect(), prefix });
    await store.set('s3', { data: { a: 1 }, createdAt: 1000, touchedAt: 1000 }, 60_000);
    assert.equal(await otherProcess.applyChanges('s3', [], 5000, 60_000), true); // a later push, made meanwhile
    assert.equal(await store.applyChanges('s3', [{ op: 'set', key: 'b', value: 2 }], 4000, 10_000), true);
    assert.deepEqual(await store.get('s3'), { data: { a: 1, b: 2 }, createdAt: 1000, touchedAt: 5000 });
    const pttl = await client.pttl(store.key('s3'));
    assert.ok(pttl > 50_000, `PTTL ${pttl}: the later push's expiry stays`);
  });

  it('applyChanges that sets a key to a value JSON leaves out (undefined) removes the key, as MemoryStore does', async () => {
    const store = new RedisStore({ client: connect(), prefix });
    await store.set('s4', { data: { a: 1, b: 2 }, createdAt: 1000, touchedAt: 1000 }, 60_000);
    assert.equal(await store.applyChanges('s4', [{ op: 'set', key: 'a', value: undefined }], 2000, 60_000), true);
    assert.deepEqual(await store.get('s4'), { data: { b: 2 }, createdAt: 1000, touchedAt: 2000 });
  });

  it('set() replaces the whole record: keys it no longer has are gone, values JSON leaves out (undefined) are left out, and its times come back as given', async () => {
    const client = connect();
    const store = new RedisStore({ client, prefix });
    await store.set('r1', { data: { a: 1, b: 2 }, createdAt: 1000, touchedAt: 1000 }, 60_000);
    await store.set('r1', { data: { a: 3, gone: undefined }, createdAt: 1500, touchedAt: 2500 }, 60_000);
    assert.deepEqual(await store.get('r1'), { data: { a: 3 }, createdAt: 1500, touchedAt: 2500 });
    assert.deepEqual(Object.keys(await client.hgetall(store.key('r1'))).sort(), ['d:a', 'm:c', 'm:t']);
  });

  it('touch() pushes the expiry out to maxAgeMs from now and keeps the data', async () => {
    const client = connect();
    const store = new RedisStore({ client, prefix });
    await store.set('t1', { data: { a: 1 }, createdAt: 1000, touchedAt: 1000 }, 10_000);
    await store.touch('t1', 120_000);
    const pttl = await client.pttl(store.key('t1'));
    assert.ok(pttl > 110_000 && pttl <= 120_000, `PTTL ${pttl} should be close to 120000`);
    assert.deepEqual((await store.get('t1'))?.data, { a: 1 });
  });

  it('set() of plain data (not in the record shape the middleware writes) stores it as a session created and touched now', async () => {
    const store = new RedisStore({ client: connect(), prefix });
    const before = Date.now();
    await store.set('plain', { theme: 'dark' }, 60_000);
    const after = Date.now();
    const got = (await store.get('plain')) as { data: unknown; createdAt: number; touchedAt: number };
    assert.deepEqual(got.data, { theme: 'dark' });
    assert.ok(got.createdAt >= before && got.createdAt <= after, `createdAt ${got.createdAt} is the time of the set(), ${before} to ${after}`);
    assert.equal(got.touchedAt, got.createdAt);
  });

  it("get() of a session hash written by another tool, without the library's times, gives its plain data, as MemoryStore gives back plain data", async () => {
    const client = connect();
    const store = new RedisStore({ client, prefix });
    await client.hset(store.key('seeded'), 'd:user', '"ada"');
    await client.pexpire(store.key('seeded'), 60_000);
    assert.deepEqual(await store.get('seeded'), { user: 'ada' });
  });

  // A subclass is reached through get() and set(), not directly (see directRedisStore).
  class SubclassedStore extends RedisStore {
    override async get(id: string) {
      return super.get(id);
    }
  }
  for (const Store of [RedisStore, SubclassedStore]) {
    it(`a session hash without the library's times (written by another tool) is pushed on its first read and gets them: reads keep it alive, and absoluteTimeout counts from then (${Store.name})`, async () => {
      const client = connect();
      const store = new Store({ client, prefix });
      const app = await startApp(store, { maxAge: 2_000, absoluteTimeout: 4_000 });
      apps.push(app);
      const jar = new CookieJar();
      const id = await login(jar, app.url);
      const key = store.key(id);
      await client.hdel(key, 'm:c', 'm:t');
      await client.persist(key);

      const first = await send(jar, app.url, 'GET', '/');
      const pushedBy = Date.now();
      assert.deepEqual(first.body, { seed: 1 });
      assert.equal(first.setCookies.filter((line) => line.startsWith(`session_id=${id};`)).length, 1, 'Set-Cookie of the push');
      const [created, touched] = await client.hmget(key, 'm:c', 'm:t');
      assert.ok(touched !== null && Number(touched) <= pushedBy && Number(touched) > pushedBy - 1_000, `m:t ${touched} is the push time`);
      assert.equal(created, touched, 'm:c: created at its first push');
      assert.ok((await client.pttl(key)) > 0, 'the hash expires');

      // Read every 300 ms: each read pushes the idle expiry (2 s) out, so only absoluteTimeout can end it.
      // (The cookie's Expires, to the second, may end up to a second early: these reads stay a second clear of it.)
      while (Date.now() < pushedBy + 2_800) {
        await sleep(300);
        assert.deepEqual((await send(jar, app.url, 'GET', '/')).body, { seed: 1 }, 'still live before its absoluteTimeout');
      }
      await sleep(pushedBy + 4_300 - Date.now());
      // The cookie sent as it is, so that the server, not the jar's reading of Expires, decides.
      const kept = new CookieJar();
      for (const [name, value] of jar.cookies) kept.cookies.set(name, value);
      assert.deepEqual((await send(kept, app.url, 'GET', '/')).body, {}, 'the session ended at its absoluteTimeout, counted from the push');
    });
  }

  it('regenerate and destroy remove the old keys from Redis, leaving a mark of the removal for a minute', async () => {
    const a = await instance({ lock: true });
    const jar = new CookieJar();
    const first = await login(jar, a.url);
    assert.deepEqual(await ourKeys(a.client), [`${prefix}{${first}}`]);

    await send(jar, a.url, 'POST', '/regenerate');
    const second = jar.sessionId as string;
    assert.notEqual(second, first);
    assert.deepEqual(await ourKeys(a.client), [`${prefix}{${first}}:removed`, `${prefix}{${second}}`].sort());
    assert.deepEqual((await send(jar, a.url, 'GET', '/')).body, { seed: 1 });

    const reply = await send(jar, a.url, 'POST', '/destroy');
    assert.equal(reply.status, 204);
    assert.equal(jar.sessionId, undefined);
    assert.deepEqual(await ourKeys(a.client), [`${prefix}{${first}}:removed`, `${prefix}{${second}}:removed`].sort());
    for (const id of [first, second]) {
      const removedAt = Number(await a.client.get(a.store.removedKey(id)));
      assert.ok(removedAt > Date.now() - 10_000 && removedAt <= Date.now(), 'the mark holds the time of the removal');
      const pttl = await a.client.pttl(a.store.removedKey(id));
      assert.ok(pttl > 55_000 && pttl <= 60_000, `PTTL ${pttl}: the mark stays for a minute`);
    }
  });

  it('store.destroy() called by the app (a revoke) also leaves a mark holding the time of the removal, for a minute', async () => {
    const client = connect();
    const store = new RedisStore({ client, prefix });
    await store.set('revoked', { data: { a: 1 }, createdAt: 1000, touchedAt: 1000 }, 60_000);
    const before = Date.now();
    await store.destroy('revoked');
    const after = Date.now();
    assert.equal(await client.exists(store.key('revoked')), 0);
    const removedAt = Number(await client.get(store.removedKey('revoked')));
    assert.ok(removedAt >= before && removedAt <= after, `the mark holds ${removedAt}, not the time of the removal (${before} to ${after})`);
    const pttl = await client.pttl(store.removedKey('revoked'));
    assert.ok(pttl > 55_000 && pttl <= 60_000, `PTTL ${pttl}: the mark stays for a minute, and no longer`);
  });

  it('a slower request in one process never brings back a session destroyed in another', async () => {
    const a = await instance();
    const b = await instance();
    const jar = new CookieJar();
    const id = await login(jar, a.url);
    const interrupted: unknown[] = [];
    a.app.app.on('session:interrupted', (event) => interrupted.push(event));

    const slow = send(jar, a.url, 'POST', '/hold?key=late&value=1');
    await a.app.held();
    assert.equal((await send(jar, b.url, 'POST', '/destroy')).status, 204);
    a.app.release();
    const reply = await slow;

    assert.equal(reply.status, 200);
    assert.ok(!reply.setCookies.some((line) => line.includes(id)), 'no cookie for the destroyed ID');
    assert.equal(interrupted.length, 1);
    assert.deepEqual(await sessionKeys(a.client), [], 'the session stays destroyed');
  });

  it('a regenerate starts a new absoluteTimeout lifetime: the new ID outlives the old one\'s end', async () => {
    const a = await instance({}, { maxAge: 3_600_000, absoluteTimeout: 60_000 });
    await withHeldClock(async (clock) => {
      const jar = new CookieJar();
      await login(jar, a.url);
      clock.at += 40_000;
      const regeneratedAt = clock.at;
      assert.equal((await send(jar, a.url, 'POST', '/regenerate')).status, 200);
      const newId = jar.sessionId as string;
      assert.equal(Number(await a.client.hget(a.store.key(newId), 'm:c')), regeneratedAt, 'the new ID is created at the regenerate');
      clock.at += 40_000; // past the end of the first lifetime, inside the new one
      assert.deepEqual((await send(jar, a.url, 'GET', '/')).body, { seed: 1 });
      assert.equal(jar.sessionId, newId);
    });
  });

  describe('a request still carrying an ID that another process removed starts no session: its cookie would replace the login\'s, or undo the logout', () => {
    /** A second tab of the browser `jar`, still holding its cookie. */
    function tabOf(jar: CookieJar): CookieJar {
      const tab = new CookieJar();
      for (const [name, value] of jar.cookies) tab.cookies.set(name, value);
      return tab;
    }

    /** What `b` does with `write`, a request whose session `a` removed; `a` and `b` stand for two processes. */
    async function lateWrite(b: TestApp, write: Promise<Reply>) {
      const interrupted: unknown[] = [];
      const missed: unknown[] = [];
      b.app.on('session:interrupted', (event) => interrupted.push(event));
      b.app.on('session:missed', (event) => missed.push(event));
      const reply = await write;
      return { reply, interrupted: interrupted.length, missed: missed.length };
    }

    const removals = [
      ['a login (regenerate)', '/regenerate', 0],
      ['a logout (destroy)', '/destroy', 0],
      // A login by destroy() then set(): its handler runs on (a password check) well after the removal.
      ['a destroy() whose handler runs on for 700 ms', '/destroy', 700],
    ] as const;
    for (const [removal, path, runsOn] of removals) {
      it(`with lock: true, a write queued for the Redis lock behind ${removal}`, async () => {
        const a = await instance({ lock: true });
        const lateInLine = gate();
        const b = await instance({ lock: true }, {
          lockMode: (ctx) => {
            if (ctx.path === '/incr') lateInLine.open(); // b has noted when it asked, and asks for the lock right after this answer
            return ctx.method === 'GET' ? 'read' : 'write';
          },
        });
        const jar = new CookieJar();
        const oldId = await login(jar, a.url);
        const tab = tabOf(jar);

        const removing = send(jar, a.url, 'POST', `${path}?hold`);
        await a.app.held(); // holds the session's Redis lock; a regenerate moves the session at its commit
        await sleep(runsOn);
        const late = lateWrite(b.app, send(tab, b.url, 'POST', '/incr'));
        await lateInLine.promise; // sent is not there yet on a loaded machine
        await sleep(200); // b polls for the Redis lock meanwhile
        a.app.release();
        assert.ok([200, 204].includes((await removing).status));
        const { reply, interrupted, missed } = await late;

        assert.equal(reply.status, 200);
        assert.deepEqual(reply.setCookies, [], 'no cookie goes out: the browser keeps what the login or logout sent');
        assert.equal(interrupted, 1);
        assert.equal(missed, 0);
        assert.equal(tab.sessionId, oldId);
        assert.deepEqual(await sessionKeys(a.client), path === '/regenerate' ? [`${prefix}{${jar.sessionId}}`] : [], 'no session was started');
      });
    }

    it('without lock: true, a write that asked for the session in another process before the login', async () => {
      const a = await instance();
      const b = await instance();
      const jar = new CookieJar();
      const oldId = await login(jar, a.url);
      const tab = tabOf(jar);

      const holding = send(tab, b.url, 'POST', '/hold?key=early&value=1'); // loaded before the login: its commit is interrupted
      await b.app.held();
      const late = lateWrite(b.app, send(tab, b.url, 'POST', '/set?key=cart&value=1')); // in b's line behind it
      await sleep(100);
      await send(jar, a.url, 'POST', '/regenerate');
      b.app.release();
      assert.deepEqual((await holding).setCookies, []);
      const { reply, interrupted, missed } = await late;

      assert.equal(reply.status, 200);
      assert.deepEqual(reply.setCookies, [], 'no cookie to replace the one the login sent');
      assert.equal(interrupted, 2, 'the held request and the one behind it');
      assert.equal(missed, 0);
      assert.equal(tab.sessionId, oldId);
      assert.deepEqual(await sessionKeys(a.client), [`${prefix}{${jar.sessionId}}`], 'no session was started');
      assert.deepEqual((await send(jar, b.url, 'GET', '/')).body, { seed: 1 }, 'the login goes on');
    });

    // A login by destroy() then set(), whose handler runs on (a password check), and a request of the same
    // browser (another tab, a page's fetch) sent to another process meanwhile, past the clocks' margin.
    for (const [what, lockTtl, ahead] of [
      ['starts no session: the login\'s cookie stands', 10_000, true],
      ["later than the remover's lockTtl (its process may have ended) is one with an unknown ID", 200, false],
    ] as const) {
      it(`without lock: true, a request in another process while a login runs on after its destroy() ${what}`, async () => {
        const a = await instance({ lockTtl });
        const b = await instance();
        const jar = new CookieJar();
        const oldId = await login(jar, a.url);
        const tab = tabOf(jar);

        const loggingIn = send(jar, a.url, 'POST', '/destroy?hold&key=user&value=%22alice%22');
        await a.app.held();
        await sleep(800);
        const { reply, interrupted, missed } = await lateWrite(b.app, send(tab, b.url, 'POST', '/set?key=csrf&value=1'));
        a.app.release();
        assert.equal((await loggingIn).status, 204);

        assert.equal(reply.status, 200);
        assert.deepEqual([interrupted, missed], ahead ? [1, 0] : [0, 1]);
        if (ahead) {
          assert.deepEqual(reply.setCookies, [], 'no cookie to replace the one the login sent');
          assert.equal(tab.sessionId, oldId);
          assert.deepEqual((await send(jar, b.url, 'GET', '/')).body, { user: 'alice' }, 'the login goes on');
          assert.deepEqual(await sessionKeys(a.client), [`${prefix}{${jar.sessionId}}`], 'no other session was started');
        } else {
          assert.ok(tab.sessionId !== undefined && tab.sessionId !== oldId, 'a new session and its cookie');
        }
      });
    }

    it("removals under way are kept by token: two processes' removals of one session overlap, an end takes only its own and is final, whichever reaches Redis first", async () => {
      const a = await instance();
      const b = await instance();
      const id = await login(new CookieJar(), a.url);
      const underWay = () => a.store.removedSince(id, Date.now() + 60_000); // asked long after the mark's time: only a removal under way can say yes

      await a.store.removeUntilDone(id, 'a');
      await b.store.removeUntilDone(id, 'b');
      await a.store.removalDone(id, 'a');
      assert.equal(await underWay(), true, "b's removal is still under way after a's is done");
      await a.store.removalDone(id, 'a');
      await a.store.removalDone(id, 'never-started'); // the end of a removal the client dropped before sending it
      assert.equal(await underWay(), true, "ends of other removals take nothing from b's");
      await b.store.removalDone(id, 'b');
      assert.equal(await underWay(), false, 'both done');

      // A removal that reaches Redis after its request's end (it timed out in the client, or was sent again).
      await a.store.removalDone(id, 'late');
      await a.store.removeUntilDone(id, 'late');
      await a.store.removeUntilDone(id, 'b');
      assert.equal(await underWay(), false, 'a removal after its end is not under way');
      const ttl = await a.client.pttl(a.store.removersKey(id));
      assert.ok(ttl > 50_000 && ttl <= 60_000, `the ends are kept as long as the removal mark (${ttl} ms)`);
    });

    it("a removal under way lasts its remover's lockTtl when that is longer than the removal mark's minute, whatever other removals' ends come meanwhile", async () => {
      const a = await instance({ lockTtl: 90_000 });
      const b = await instance();
      const id = await login(new CookieJar(), a.url);

      await a.store.removeUntilDone(id, 'a');
      await b.store.removeUntilDone(id, 'b');
      await b.store.removalDone(id, 'b');

      const ttl = await a.client.pttl(a.store.removersKey(id));
      assert.ok(ttl > 89_000 && ttl <= 90_000, `the key lasts a's lockTtl (${ttl} ms)`);
      assert.equal(await a.store.removedSince(id, Date.now() + 80_000), true, "a's removal is under way");

      // An end before its removal is kept as long, for a removal that comes late to find it.
      const other = await login(new CookieJar(), a.url);
      await a.store.removalDone(other, 'late');
      const endKept = await a.client.pttl(a.store.removersKey(other));
      assert.ok(endKept > 89_000 && endKept <= 90_000, `the end is kept for a's lockTtl (${endKept} ms)`);
    });

    it('a logout whose removal never reached Redis takes nothing from a later one: a login by destroy() in another process still holds back a request of a third', async () => {
      // As ioredis drops a queued command at a failed reconnection: the removal never reaches Redis, its end does.
      const dropping = connectWrappingRemovals(() => Promise.reject(new Error('dropped before it was sent')));
      const failing = await instance({}, {}, dropping);
      const a = await instance();
      const b = await instance();
      const jar = new CookieJar();
      const oldId = await login(jar, a.url);
      const tab = tabOf(jar);

      assert.equal((await send(tabOf(jar), failing.url, 'POST', '/destroy')).status, 503);
      await sleep(50); // its end, told without waiting, reaches Redis
      const loggingIn = send(jar, a.url, 'POST', '/destroy?hold&key=user&value=%22alice%22');
      await a.app.held();
      await sleep(800); // past the clocks' margin: only the removal under way holds the request back
      const { reply, interrupted, missed } = await lateWrite(b.app, send(tab, b.url, 'POST', '/set?key=csrf&value=1'));
      a.app.release();
      assert.equal((await loggingIn).status, 204);

      assert.equal(reply.status, 200);
      assert.deepEqual(reply.setCookies, [], 'no cookie to replace the one the login sent');
      assert.deepEqual([interrupted, missed], [1, 0]);
      assert.equal(tab.sessionId, oldId);
      assert.deepEqual((await send(jar, b.url, 'GET', '/')).body, { user: 'alice' }, 'the login stands');
    });

    it('a logout whose removal reaches Redis only after its request let go (it timed out in the client) leaves nothing under way: a login right after starts a session', async () => {
      const client = connectWrappingRemovals(async (call) => (await sleep(400), call()));
      const a = await instance({ timeout: 200 }, {}, client);
      const b = await instance();
      const jar = new CookieJar();
      const id = await login(jar, a.url);

      assert.equal((await send(jar, a.url, 'POST', '/destroy')).status, 503);
      await sleep(700); // the removal reaches Redis after the request's end, and this is past the clocks' margin
      assert.deepEqual(await sessionKeys(a.client), [], 'the removal was made, and nothing of it is left under way');
      const { reply, interrupted, missed } = await lateWrite(b.app, send(jar, b.url, 'POST', '/set?key=user&value=%22bob%22'));

      assert.equal(reply.status, 200);
      assert.deepEqual([interrupted, missed], [0, 1]);
      assert.ok(jar.sessionId !== undefined && jar.sessionId !== id, 'a new session and its cookie');
      assert.deepEqual((await send(jar, b.url, 'GET', '/')).body, { user: 'bob' });
    });

    it('a logout whose first removal times out and reaches Redis after the retry succeeded and the request ended leaves nothing under way: a login right after starts a session', async () => {
      let removals = 0;
      const client = connectWrappingRemovals(async (call) => (removals++ === 0 ? (await sleep(400), call()) : call()));
      const a = await instance({ timeout: 200 }, {}, client);
      const b = await instance();
      const jar = new CookieJar();
      const id = await login(jar, a.url);
      const tab = tabOf(jar); // another tab, still carrying the ID

      assert.equal((await send(jar, a.url, 'POST', '/destroy?retry')).status, 204);
      await sleep(700); // the first removal reaches Redis after the request's end, and this is past the clocks' margin
      assert.deepEqual(await sessionKeys(a.client), [], 'the removal was made, and nothing of it is left under way');
      const { reply, interrupted, missed } = await lateWrite(b.app, send(tab, b.url, 'POST', '/set?key=user&value=%22bob%22'));

      assert.equal(reply.status, 200);
      assert.deepEqual([interrupted, missed], [0, 1]);
      assert.ok(tab.sessionId !== undefined && tab.sessionId !== id, 'a new session and its cookie');
    });

    it('a read-mode logout whose removal Redis makes but answers too late says it is done all the same: no removal is left under way', async () => {
      // The removal reaches Redis at once (by SHA, or as source the first time); its answer comes after the store's timeout.
      const client = connectWrappingRemovals((call) => call().then(async (reply) => (await sleep(400), reply)));
      const a = await instance({ timeout: 200 }, { lockMode: () => 'read' }, client);
      const jar = new CookieJar();
      const id = await login(jar, a.url);

      // A change before the removal: when the removal fails, the change is committed, under the lock made exclusive.
      const reply = await send(jar, a.url, 'POST', '/destroy?first=seen');
      assert.equal(reply.status, 503);
      await sleep(500); // the late answer, and what follows it
      assert.equal(await a.store.removedSince(id, Date.now() + 60_000), false, 'the removal is no longer under way');
      assert.ok(Number.isFinite(Number(await client.get(a.store.removedKey(id)))), 'the mark holds a time');
    });

    it('a request that comes after the removal (a logout response that was lost, an admin\'s revoke) is one with an unknown ID: a new session starts', async () => {
      const a = await instance();
      const b = await instance();
      const loggedIn = new CookieJar();
      await login(loggedIn, a.url);
      const keptOldCookie = tabOf(loggedIn);
      await send(loggedIn, a.url, 'POST', '/regenerate');
      const revoked = new CookieJar();
      const revokedId = await login(revoked, a.url);
      await a.store.destroy(revokedId); // a "log out everywhere" tool

      await sleep(600); // past the removals, by more than the clocks' margin
      for (const [label, tab] of [['lost login response', keptOldCookie], ['revoked', revoked]] as const) {
        const oldId = tab.sessionId;
        const { reply, interrupted, missed } = await lateWrite(b.app, send(tab, b.url, 'POST', '/set?key=cart&value=1'));
        assert.equal(reply.status, 200, label);
        assert.equal(interrupted, 0, label);
        assert.equal(missed, 1, label);
        assert.ok(tab.sessionId !== undefined && tab.sessionId !== oldId, `${label}: a new session and its cookie`);
        assert.deepEqual((await send(tab, a.url, 'GET', '/')).body, { cart: 1 }, label);
      }
    });

    it('a request whose session is gone gets 503, and starts no session, when Redis fails to say whether another process removed it', async () => {
      const a = await instance();
      const flaky = connect();
      const client = flaky as unknown as { evalsha: (sha: string, numkeys: number, keysAndArgs: string[]) => Promise<unknown> };
      const evalsha = client.evalsha.bind(client);
      let failMarkReads = false;
      // Only the read of a removal mark (and of its under-way key) fails: the session's own read answers "none".
      client.evalsha = (sha, numkeys, keysAndArgs) =>
        failMarkReads && keysAndArgs[0].endsWith(':removed') ? Promise.reject(new Error('connection lost')) : evalsha(sha, numkeys, keysAndArgs);
      const b = await instance({}, {}, flaky);
      const jar = new CookieJar();
      const oldId = await login(jar, a.url);
      await a.store.destroy(oldId); // a "log out everywhere" tool

      failMarkReads = true;
      const { reply, interrupted, missed } = await lateWrite(b.app, send(jar, b.url, 'POST', '/set?key=cart&value=1'));
      assert.equal(reply.status, 503, 'a failed read of the store is not "no session"');
      assert.deepEqual(reply.setCookies, []);
      assert.equal(interrupted + missed, 0);
      assert.equal(jar.sessionId, oldId);
      assert.deepEqual(await sessionKeys(a.client), [], 'no session was started');
    });
  });

  describe('a regenerate racing another process', () => {
    /**
     * The parts of `client` a RedisStore uses. Once `holdWritesBesides(key)`
     * is called, the first script run on a key other than that session's
     * own and its lock's (a regenerate saving the session under its new
     * ID) waits until `release()`: the old session is then copied but not
     * yet removed.
     */
    function gatedClient(client: Redis) {
      let besides: string | undefined;
      let reached!: () => void;
      let release!: () => void;
      const atGate = new Promise<void>((resolve) => (reached = resolve));
      const opened = new Promise<void>((resolve) => (release = resolve));
      return {
        client: {
          hgetall: (key: string) => client.hgetall(key),
          del: (...keys: string[]) => client.del(...keys),
          eval: (script: string, numkeys: number, keysAndArgs: string[]) => client.eval(script, numkeys, keysAndArgs),
          evalsha: async (sha: string, numkeys: number, keysAndArgs: string[]) => {
            if (besides !== undefined && !keysAndArgs[0].startsWith(besides)) {
              besides = undefined;
              reached();
              await opened;
            }
            return client.evalsha(sha, numkeys, keysAndArgs);
          },
        },
        holdWritesBesides: (key: string) => void (besides = key),
        atGate,
        release,
      };
    }

    /**
     * Process B regenerates a session of { seed: 1 } and is held between
     * copying it to the new ID and removing the old one, while `other`
     * runs in process A (a logout there is a read-mode request).
     */
    async function race(lock: boolean, other: (jar: CookieJar, base: string) => Promise<Reply>) {
      const a = await instance({ lock }, { lockMode: (ctx) => (ctx.method === 'GET' || ctx.path === '/destroy' ? 'read' : 'write') });
      const gate = gatedClient(connect());
      const b = await startApp(new RedisStore({ client: gate.client, prefix, lock }));
      apps.push(b);
      const jar = new CookieJar(); // the tab that logs in again (regenerates)
      const oldId = await login(jar, a.url);
      const elsewhere = new CookieJar(); // another tab of the same browser
      for (const [name, value] of jar.cookies) elsewhere.cookies.set(name, value);

      gate.holdWritesBesides(`${prefix}{${oldId}}`);
      const regenerating = send(jar, b.url, 'POST', '/regenerate');
      await gate.atGate;
      const otherReply = await other(elsewhere, a.url);
      gate.release();
      const regenerated = await regenerating;
      return { a, jar, elsewhere, oldId, otherReply, regenerated, sessionKeys: await sessionKeys(a.client) };
    }

    const setsSessionCookie = (reply: Reply) => reply.setCookies.some((line) => /^session_id=[^;]+/.test(line));

    for (const lock of [false, true]) {
      it(`a logout in one process while another regenerates the session stays a logout (lock: ${lock})`, async () => {
        const { a, jar, otherReply, regenerated, sessionKeys } = await race(lock, (tab, base) => send(tab, base, 'POST', '/destroy'));
        assert.equal(otherReply.status, 204);
        assert.equal(regenerated.status, 200);
        assert.ok(!setsSessionCookie(regenerated), 'no cookie for a session logged out meanwhile');
        assert.deepEqual(sessionKeys, [], 'no session left in Redis');
        assert.deepEqual((await send(jar, a.url, 'GET', '/')).body, {});
      });
    }

    it('a change committed in one process while another regenerates the session is in the new session', async () => {
      const { a, jar, oldId, otherReply, regenerated, sessionKeys } = await race(false, (tab, base) => send(tab, base, 'POST', '/set?key=k&value=2'));
      assert.equal(otherReply.status, 200);
      assert.equal(regenerated.status, 200);
      const newId = jar.sessionId as string;
      assert.notEqual(newId, oldId);
      assert.deepEqual(sessionKeys, [`${prefix}{${newId}}`]);
      assert.deepEqual((await send(jar, a.url, 'GET', '/')).body, { seed: 1, k: 2 });
    });

    it('two processes regenerating one session at once leave one session, and only one of them sends its ID', async () => {
      const { a, jar, elsewhere, otherReply, regenerated, sessionKeys } = await race(false, (tab, base) => send(tab, base, 'POST', '/regenerate'));
      assert.equal(otherReply.status, 200);
      assert.equal(regenerated.status, 200);
      assert.equal(sessionKeys.length, 1);
      assert.deepEqual([setsSessionCookie(otherReply), setsSessionCookie(regenerated)], [true, false], 'the first to finish wins');
      assert.deepEqual(sessionKeys, [`${prefix}{${elsewhere.sessionId}}`]);
      assert.deepEqual((await send(elsewhere, a.url, 'GET', '/')).body, { seed: 1 });
      assert.notEqual(jar.sessionId, elsewhere.sessionId);
    });

    it('a regenerate whose session another process changes before every attempt gives up with a 503, leaving the session as it is and no copy', async () => {
      const a = await instance();
      const jar = new CookieJar();
      const oldId = await login(jar, a.url);
      const oldKey = `${prefix}{${oldId}}`;
      const writer = connect();
      let writes = 0;
      // Another process writes the session each time, just before this one saves its copy.
      const client = {
        hgetall: (key: string) => a.client.hgetall(key),
        del: (...keys: string[]) => a.client.del(...keys),
        eval: (script: string, numkeys: number, keysAndArgs: string[]) => a.client.eval(script, numkeys, keysAndArgs),
        evalsha: async (sha: string, numkeys: number, keysAndArgs: string[]) => {
          if (!keysAndArgs[0].startsWith(oldKey)) await writer.hset(oldKey, 'd:other', String(++writes));
          return a.client.evalsha(sha, numkeys, keysAndArgs);
        },
      };
      const b = await startApp(new RedisStore({ client, prefix }));
      apps.push(b);

      const reply = await send(jar, b.url, 'POST', '/regenerate');

      assert.equal(reply.status, 503);
      assert.equal(jar.sessionId, oldId, 'no new cookie');
      assert.equal(writes, 10, 'one copy per attempt');
      assert.deepEqual(await ourKeys(a.client), [oldKey], 'the session stays, and every copy is gone');
      assert.deepEqual((await send(jar, a.url, 'GET', '/')).body, { seed: 1, other: 10 });
    });
  });

  it('with Redis down, requests fail fast with 503, and succeed again once it is back', async function () {
    if (server === undefined) {
      skipOrFail(this, 'stopping Redis needs a redis-server binary (REDIS_URL is not ours to stop)');
    }
    const own = await startRedis();
    try {
      // A: the recommended client settings. B: ioredis defaults, bounded by the store's own timeout.
      const lockTimeout = 4000;
      const a = await instance({ lock: true }, { lockTimeout }, connect(RECOMMENDED, own.url));
      const b = await instance({ timeout: 1500 }, { lockTimeout }, connect({}, own.url));
      const jar = new CookieJar();
      await login(jar, a.url);
      assert.equal((await send(jar, b.url, 'GET', '/')).status, 200);

      await own.kill();
      for (const base of [a.url, b.url]) {
        for (const [method, path] of [['POST', '/set?key=x&value=1'], ['GET', '/']]) {
          const reply = await send(jar, base, method, path);
          assert.equal(reply.status, 503, `${method} ${path} with Redis down`);
          assert.ok(reply.ms < lockTimeout, `${method} ${path} took ${reply.ms} ms, more than lockTimeout`);
        }
      }

      const again = await startRedis({ port: own.port });
      try {
        for (const base of [a.url, b.url]) {
          // The restarted server is empty (no persistence): the session is gone, a new one starts.
          const fresh = new CookieJar();
          const deadline = Date.now() + 20_000;
          let reply = await send(fresh, base, 'POST', '/set?key=back&value=1');
          while (reply.status !== 200 && Date.now() < deadline) {
            await sleep(100);
            reply = await send(fresh, base, 'POST', '/set?key=back&value=1');
          }
          assert.equal(reply.status, 200, 'requests succeed again without a restart');
          assert.deepEqual((await send(fresh, base, 'GET', '/')).body, { back: 1 });
        }
      } finally {
        await again.stop();
      }
    } finally {
      await own.stop();
    }
  });

  const STALLED_TIMEOUT = 1000;

  /**
   * With lock: true, stalls Redis while a request to `path` holds its
   * session's lock (in process and in Redis) and waits in the handler, then
   * lets it go on: its 503 must come within the store timeout, not after a
   * second wait to hand the lock back. `after` runs once Redis answers again.
   */
  async function failsWithinStoreTimeout(test: Mocha.Context, path: string, after?: (url: string, jar: CookieJar) => Promise<void>): Promise<void> {
    await withStalledRedis(test, async (own) => {
      // ioredis defaults: commands wait in the client for a server that stopped answering.
      const a = await instance({ lock: true, timeout: STALLED_TIMEOUT }, { lockTimeout: 10_000 }, connect({}, own.url));
      const jar = new CookieJar();
      await login(jar, a.url);
      const pending = send(jar, a.url, 'POST', path);
      await a.app.held();
      process.kill(own.pid, 'SIGSTOP');
      try {
        const started = Date.now();
        a.app.release();
        const reply = await pending;
        const ms = Date.now() - started;
        assert.equal(reply.status, 503);
        assert.ok(ms < 1.6 * STALLED_TIMEOUT, `the 503 came after ${ms} ms, with a store timeout of ${STALLED_TIMEOUT} ms`);
      } finally {
        process.kill(own.pid, 'SIGCONT');
      }
      await after?.(a.url, jar);
    });
  }

  it('with lock: true and Redis stalled during the handler, the request fails within the store timeout, not after a second wait to unlock', async function () {
    await failsWithinStoreTimeout(this, '/hold?key=x&value=1');
  });

  it('with lock: true and Redis stalled before a logout, the failed destroy() answers within the store timeout, not after a second wait to unlock', async function () {
    await failsWithinStoreTimeout(this, '/destroy?wait', async (url, jar) => {
      // The removal itself may still run once Redis goes on (see README, "When Redis is unreachable"); the lock is handed back.
      const next = await send(jar, url, 'POST', '/set?key=again&value=1');
      assert.equal(next.status, 200);
      assert.ok(next.ms < STALLED_TIMEOUT, `the next write waited ${next.ms} ms`);
    });
  });

  it('with ioredis defaults and Redis stalled, a request gets its 503 after the store\'s default timeout of 5 s', async function () {
    await withStalledRedis(this, async (own) => {
      // ioredis defaults: no commandTimeout, so a command waits in the client for as long as the server does not answer.
      const a = await instance({}, {}, connect({}, own.url));
      const jar = new CookieJar();
      await login(jar, a.url);
      process.kill(own.pid, 'SIGSTOP');
      let timer: NodeJS.Timeout | undefined;
      try {
        const reply = await Promise.race([
          send(jar, a.url, 'GET', '/'),
          new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), 20_000))),
        ]);
        assert.ok(reply !== undefined, 'no answer within 20 s');
        assert.equal(reply.status, 503);
        assert.ok(reply.ms >= 4900 && reply.ms < 10_000, `the 503 came after ${reply.ms} ms, with the default timeout of 5000 ms`);
      } finally {
        clearTimeout(timer);
        process.kill(own.pid, 'SIGCONT');
      }
    });
  });

  it('with lock: true, a lock whose taking timed out is handed back once Redis answers again: the session is not left locked for lockTtl', async function () {
    await withStalledRedis(this, async (own) => {
      // ioredis defaults: the SET NX waits in Redis's socket, and runs once Redis goes on.
      const a = await instance({ lock: true, timeout: 500 }, { lockTimeout: 1000 }, connect({}, own.url));
      const jar = new CookieJar();
      const id = await login(jar, a.url);
      assert.equal((await send(jar, a.url, 'POST', '/set?key=warm&value=1')).status, 200); // Redis has the lock scripts now
      process.kill(own.pid, 'SIGSTOP');
      let reply: Reply;
      try {
        reply = await send(jar, a.url, 'POST', '/set?key=b&value=2');
      } finally {
        process.kill(own.pid, 'SIGCONT');
      }
      assert.equal(reply.status, 503);
      await a.client.ping(); // behind the SET NX that timed out, and its undoing
      assert.equal(await a.client.exists(a.store.lockKey(id)), 0, 'no lock left behind');
      assert.equal((await send(jar, a.url, 'POST', '/set?key=c&value=3')).status, 200, 'the next write does not wait out lockTtl');
      assert.deepEqual((await send(jar, a.url, 'GET', '/')).body, { seed: 1, warm: 1, c: 3 });
    });
  });

  it('with lock: true, a lock taken by a command ioredis resends after a dropped connection is still the request\'s own', async function () {
    await withStalledRedis(this, async (own) => {
      const a = await instance({ lock: true }, { lockTimeout: 2000 }, connect(RECOMMENDED, own.url));
      const jar = new CookieJar();
      const id = await login(jar, a.url);
      assert.equal((await send(jar, a.url, 'POST', '/set?key=warm&value=1')).status, 200); // Redis has the lock script now
      process.kill(own.pid, 'SIGSTOP');
      let pending: Promise<Reply>;
      try {
        pending = send(jar, a.url, 'POST', '/set?key=b&value=2');
        await sleep(200); // its SET NX waits in Redis's socket
        // The connection drops before the reply: Redis still runs the SET, and ioredis sends it again on the next connection.
        (a.client as unknown as { stream: { destroy(): void } }).stream.destroy();
        await sleep(200);
      } finally {
        process.kill(own.pid, 'SIGCONT');
      }
      const reply = await pending;
      assert.equal(reply.status, 200, `the write across the dropped connection got ${reply.status} after ${reply.ms} ms`);
      assert.equal((await send(jar, a.url, 'POST', '/set?key=c&value=3')).status, 200);
      assert.deepEqual((await send(jar, a.url, 'GET', '/')).body, { seed: 1, warm: 1, b: 2, c: 3 });
      assert.equal(await a.client.exists(a.store.lockKey(id)), 0, 'no lock left behind');
    });
  });

  it('a regenerate whose removal of the old ID ioredis resends after a dropped connection keeps the session under its new ID', async function () {
    await withStalledRedis(this, async (own) => {
      const a = await instance({}, {}, connect(RECOMMENDED, own.url));
      const jar = new CookieJar();
      const first = await login(jar, a.url);
      assert.equal((await send(jar, a.url, 'POST', '/regenerate')).status, 200); // Redis has the scripts now
      // The script that removes the old ID (the only one with three keys) waits in Redis's socket,
      // and the connection drops before its reply: Redis still runs it, and ioredis sends it again.
      const stalled = stallRetire(a, own, (stream) => setTimeout(() => {
        stream.destroy();
        setTimeout(() => process.kill(own.pid, 'SIGCONT'), 200);
      }, 200));
      const before = jar.sessionId;
      const reply = await send(jar, a.url, 'POST', '/regenerate');
      assert.ok(stalled(), 'the removal went through the dropped connection');
      assert.equal(reply.status, 200);
      await assertKeptUnderNewId(a, jar, [first, before]);
    });
  });

  it('with lock: true, a regenerate whose removal of the old ID ioredis resends after its Redis lock expired keeps the session under its new ID', async function () {
    await withStalledRedis(this, async (own) => {
      // The client reconnects 4 s after the drop, well past lockTtl: the renewals wait in its queue meanwhile.
      const lockTtl = 1500;
      const slowReconnect: RedisOptions = { maxRetriesPerRequest: 1, retryStrategy: () => 4000 };
      const a = await instance({ lock: true, lockTtl, timeout: 20_000 }, {}, connect(slowReconnect, own.url));
      const jar = new CookieJar();
      const first = await login(jar, a.url);
      assert.equal((await send(jar, a.url, 'POST', '/regenerate')).status, 200); // Redis has the scripts now
      // The script that removes the old ID (the only one with three keys) is written to Redis, and the
      // connection drops at once, before its reply: Redis runs it under the lock, which is still held.
      const stalled = stallRetire(a, own, (stream) => setImmediate(() => {
        stream.destroy();
        process.kill(own.pid, 'SIGCONT');
      }));
      const before = jar.sessionId as string;
      const errors: unknown[] = [];
      a.app.app.on('error', (error) => errors.push(error));
      const reply = await send(jar, a.url, 'POST', '/regenerate');
      assert.ok(stalled(), 'the removal went through the dropped connection');
      assert.equal(await a.client.exists(a.store.key(before)), 0, 'the first run removed the old ID');
      assert.equal(reply.status, 200, `the regenerate got ${reply.status}: ${errors.map((error) => String((error as Error).cause ?? error)).join(', ')}`);
      await assertKeptUnderNewId(a, jar, [first, before]);
    });
  });

  it('a regenerate that gets a 503 because the reply of its removal of the old ID is lost with the connection keeps the session under its old ID, even when ioredis sends the removal again later', async function () {
    await withStalledRedis(this, async (own) => {
      // The recommended settings: commandTimeout (2 s) gives up on the removal, but ioredis keeps it to send again.
      const a = await instance({}, {}, connect(RECOMMENDED, own.url));
      const jar = new CookieJar();
      await login(jar, a.url);
      assert.equal((await send(jar, a.url, 'POST', '/regenerate')).status, 200); // Redis has the scripts now
      // The script that removes the old ID (the only one with three keys) waits in Redis's socket, and the
      // connection drops: Redis runs it once it goes on, and ioredis sends it again once reconnected.
      const stalled = stallRetire(a, own, (stream) => setTimeout(() => stream.destroy(), 100));
      const before = jar.sessionId as string;
      let reply: Reply;
      try {
        reply = await send(jar, a.url, 'POST', '/regenerate');
      } finally {
        process.kill(own.pid, 'SIGCONT');
      }
      assert.ok(stalled(), 'the removal went through the dropped connection');
      assert.equal(reply.status, 503);
      assert.equal(jar.sessionId, before, 'no new ID went out');
      await a.client.ping(); // behind whatever the client sends again, and anything queued behind that
      assert.deepEqual((await send(jar, a.url, 'GET', '/')).body, { seed: 1 }, 'the session is kept under the ID the client has');
      assert.deepEqual(await sessionKeys(a.client), [a.store.key(before)], 'and no copy is left');
      const pttl = await a.client.pttl(a.store.key(before));
      assert.ok(pttl > 0, `PTTL ${pttl}: the session put back still expires`);
    });
  });

  it('a regenerate that gets a 503 while a logout in another process removes the old ID leaves the logout as it was: no session, and the mark of its removal kept', async () => {
    const a = await instance();
    const b = await instance();
    const jar = new CookieJar();
    await login(jar, a.url);
    assert.equal((await send(jar, a.url, 'POST', '/regenerate')).status, 200); // Redis has the scripts now
    const tab = new CookieJar(); // another tab of the same browser, which logs out
    for (const [name, value] of jar.cookies) tab.cookies.set(name, value);
    type Eval = (...args: unknown[]) => Promise<unknown>;
    const client = a.client as unknown as { evalsha: Eval; eval: Eval };
    const [evalsha, evalSource] = [client.evalsha.bind(client), client.eval.bind(client)];
    let retireHeld!: () => void;
    const atRetire = new Promise<void>((resolve) => (retireHeld = resolve));
    let logoutDone!: () => void;
    const loggedOut = new Promise<void>((resolve) => (logoutDone = resolve));
    let undoAnswered!: () => void;
    const undone = new Promise<void>((resolve) => (undoAnswered = resolve));
    let held = false;
    // The removal of the old ID (the only script with three keys) never reaches Redis: it fails, as ioredis's
    // commandTimeout fails it, once the logout is done. The undoing (two keys, then a stamp: time.fraction) goes through.
    const watched = (send: Eval): Eval => async (...args) => {
      if (!held && args[1] === 3) {
        held = true;
        retireHeld();
        await loggedOut;
        throw new Error('Command timed out');
      }
      const answer = await send(...args);
      if (held && args[1] === 2 && /^\d+\.\d+$/.test(String((args[2] as string[])[3]))) undoAnswered();
      return answer;
    };
    client.evalsha = watched(evalsha);
    client.eval = watched(evalSource);
    const before = jar.sessionId as string;
    const regenerating = send(jar, a.url, 'POST', '/regenerate');
    await atRetire;
    const logoutFrom = Date.now();
    assert.equal((await send(tab, b.url, 'POST', '/destroy')).status, 204);
    const logoutBy = Date.now();
    logoutDone();
    assert.equal((await regenerating).status, 503);
    await undone;

    const mark = await a.client.get(a.store.removedKey(before));
    assert.ok(/^\d+$/.test(String(mark)) && Number(mark) >= logoutFrom && Number(mark) <= logoutBy, `the mark holds ${mark}, not the time of the logout`);
    for (let waited = 0; (await sessionKeys(a.client)).length > 0; waited += 10) {
      assert.ok(waited < 10_000, 'the copy was deleted');
      await sleep(10);
    }
    assert.deepEqual((await send(jar, a.url, 'GET', '/')).body, {}, 'the session stays logged out');
  });

  it('a regenerate that gets a 503 keeps the session under its old ID even when its removal of the old ID reaches Redis only after the undoing (as a Cluster client may send it)', async () => {
    // The store's own timeout stays the default: a short one fails the login too on a loaded machine (503 !== 200).
    const a = await instance();
    const jar = new CookieJar();
    await login(jar, a.url);
    assert.equal((await send(jar, a.url, 'POST', '/regenerate')).status, 200); // Redis has the scripts now
    type Eval = (...args: unknown[]) => Promise<unknown>;
    const client = a.client as unknown as { evalsha: Eval; eval: Eval };
    const [evalsha, evalSource] = [client.evalsha.bind(client), client.eval.bind(client)];
    let removal: unknown[] | undefined;
    let lateRemoval: Promise<unknown> | undefined;
    // The removal of the old ID (the only script with three keys) is held back, and fails as ioredis's commandTimeout
    // fails it; it goes out once the undoing (two keys, then a stamp: time.fraction) has been answered.
    const sendsLateRemoval = (send: Eval): Eval => async (...args) => {
      if (removal === undefined && args[1] === 3) {
        removal = args;
        return new Promise((_, reject) => setTimeout(() => reject(new Error('Command timed out')), 300));
      }
      const answer = await send(...args);
      if (removal !== undefined && lateRemoval === undefined && args[1] === 2 && /^\d+\.\d+$/.test(String((args[2] as string[])[3]))) {
        lateRemoval = evalsha(...removal);
      }
      return answer;
    };
    client.evalsha = sendsLateRemoval(evalsha);
    client.eval = sendsLateRemoval(evalSource); // a script Redis does not have yet goes by its source
    const before = jar.sessionId as string;
    const reply = await send(jar, a.url, 'POST', '/regenerate');
    assert.equal(reply.status, 503);
    assert.equal(jar.sessionId, before, 'no new ID went out');
    for (let waited = 0; lateRemoval === undefined; waited += 10) {
      assert.ok(waited < 10_000, 'the undoing was answered');
      await sleep(10);
    }
    await lateRemoval;
    assert.deepEqual((await send(jar, a.url, 'GET', '/')).body, { seed: 1 }, 'the session is kept under the ID the client has');
    for (let waited = 0; (await sessionKeys(a.client)).length > 1; waited += 10) {
      assert.ok(waited < 10_000, 'the copy was deleted');
      await sleep(10);
    }
    assert.deepEqual(await sessionKeys(a.client), [a.store.key(before)]);
  });

  /**
   * A TCP proxy on 127.0.0.1 in front of `own`, standing for the network or
   * a load balancer: `down()` drops every connection and from then on
   * accepts connections only to close them at once (a backend that is
   * gone), swallowing what the client writes; `up()` forwards again.
   */
  async function proxyTo(own: RedisServer) {
    const sockets = new Set<Socket>();
    let isDown = false;
    let refused = 0;
    const server = createServer((client) => {
      sockets.add(client);
      client.on('close', () => sockets.delete(client));
      client.on('error', () => undefined);
      if (isDown) {
        refused++;
        client.destroy();
        return;
      }
      const upstream = netConnect(own.port, '127.0.0.1');
      sockets.add(upstream);
      upstream.on('close', () => { sockets.delete(upstream); client.destroy(); });
      upstream.on('error', () => undefined);
      client.on('close', () => upstream.destroy());
      client.on('data', (chunk) => { if (!isDown) upstream.write(chunk); });
      upstream.on('data', (chunk) => { if (!isDown) client.write(chunk); });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return {
      url: `redis://127.0.0.1:${(server.address() as AddressInfo).port}`,
      /** Connections refused since the proxy went down. */
      refused: () => refused,
      down() {
        isDown = true;
        refused = 0;
        for (const socket of sockets) socket.destroy();
      },
      up() {
        isDown = false;
      },
      close: () => new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
    };
  }

  it('a regenerate that gets a 503 because Redis went away as its removal of the old ID was sent keeps the session under its old ID, even when ioredis drops the queued undoing at a failed reconnection and sends the removal again later', async function () {
    await withStalledRedis(this, async (own) => {
      const proxy = await proxyTo(own);
      try {
        // The recommended settings: maxRetriesPerRequest: 1 drops queued commands at every second failed reconnection,
        // but not the removal, which was written to the connection that dropped: ioredis sends it again once back.
        const a = await instance({}, {}, connect(RECOMMENDED, proxy.url));
        const jar = new CookieJar();
        await login(jar, a.url);
        assert.equal((await send(jar, a.url, 'POST', '/regenerate')).status, 200); // Redis has the scripts now
        const client = a.client as unknown as { evalsha: (...args: unknown[]) => Promise<unknown> };
        const evalsha = client.evalsha.bind(client);
        let armed = true;
        client.evalsha = (sha, numkeys, keysAndArgs) => {
          if (!armed || numkeys !== 3) return evalsha(sha, numkeys, keysAndArgs);
          armed = false;
          const answer = evalsha(sha, numkeys, keysAndArgs);
          setImmediate(() => proxy.down()); // once written: the removal never reaches Redis this time
          return answer;
        };
        const before = jar.sessionId as string;
        const reply = await send(jar, a.url, 'POST', '/regenerate');
        assert.ok(!armed, 'the removal was sent');
        assert.equal(reply.status, 503);
        assert.equal(jar.sessionId, before, 'no new ID went out');
        // Two more failed reconnections: ioredis has dropped what was queued meanwhile (every second one drops).
        const refusedAt503 = proxy.refused();
        const deadline = Date.now() + 20_000;
        while (proxy.refused() < refusedAt503 + 2 && Date.now() < deadline) await sleep(20);
        proxy.up();
        await a.client.ping(); // reconnected: the removal has been sent again, and has run
        const check = connect(RECOMMENDED, own.url);
        const kept = Date.now() + 5000;
        while ((await check.exists(a.store.key(before))) === 0 && Date.now() < kept) await sleep(20);
        assert.deepEqual((await send(jar, a.url, 'GET', '/')).body, { seed: 1 }, 'the session is kept under the ID the client has');
        assert.deepEqual(await sessionKeys(check), [a.store.key(before)], 'and no copy is left');
        const pttl = await check.pttl(a.store.key(before));
        assert.ok(pttl > 0, `PTTL ${pttl}: the session put back still expires`);
      } finally {
        await proxy.close();
      }
    });
  });

  it('a session() nested in another of the same cookie on another RedisStore object warns only when the two cannot serve one session', async () => {
    const cases: Array<[string, { prefix?: string; lock?: boolean }, boolean]> = [
      ['the same prefix, no Redis lock: one backend, shared', {}, false],
      ['the same prefix, lock: true: each takes the Redis lock for itself', { lock: true }, true],
      ['another prefix: sessions kept apart', { prefix: `${prefix}other:` }, true],
    ];
    for (const [label, inner, warns] of cases) {
      const client = connect();
      const app = new Koa();
      app.keys = ['redis-suite-secret'];
      app.silent = true;
      app.use(session({ store: new RedisStore({ client, prefix, lock: inner.lock }), lockTimeout: 200 }));
      app.use(session({ store: new RedisStore({ client, prefix, ...inner }), lockTimeout: 200 }));
      app.use((ctx) => {
        ctx.session.set('k', 1);
        ctx.body = 'ok';
      });
      const warnings = await warningsDuring('KOA_LOCKED_SESSION_COOKIE_SHARED', async () => {
        await supertest(app.callback()).post('/');
      });
      assert.equal(warnings.length, warns ? 1 : 0, label);
    }
  });

  it('a store written for koa-session (koa-redis) plugs in through withStore', async () => {
    // koa-redis 4 brings its own ioredis 4 client; it stores JSON strings under the bare ID.
    const koaRedis = require('koa-redis') as (options: Record<string, unknown>) => Store & { client: Redis };
    const store = koaRedis({ url, keyPrefix: prefix, maxRetriesPerRequest: 1 });
    try {
      const app = await startApp(store, { maxAge: 60_000 });
      apps.push(app);
      const jar = new CookieJar();
      await send(jar, app.url, 'POST', '/set?key=user&value=%22ada%22');
      const id = jar.sessionId as string;
      assert.deepEqual((await send(jar, app.url, 'GET', '/')).body, { user: 'ada' });

      const check = connect();
      const ttl = await check.ttl(prefix + id);
      assert.ok(ttl > 50 && ttl <= 60, `TTL ${ttl} s`);
      await send(jar, app.url, 'POST', '/regenerate');
      assert.deepEqual(await keysOf(check, `${prefix}*`), [prefix + jar.sessionId]);
      await send(jar, app.url, 'POST', '/destroy');
      assert.deepEqual(await keysOf(check, `${prefix}*`), []);
    } finally {
      await store.client.quit();
    }
  });
});
