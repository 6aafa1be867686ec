/**
 * RedisStore on a Redis Cluster of three throwaway masters (started and
 * joined by test/support/redis-server.ts, stopped by pid), through ioredis
 * Cluster clients. Two Koa apps with their own Cluster client stand for two
 * processes.
 */
import assert from 'node:assert/strict';
import type { Cluster } from 'ioredis';
import { RedisStore } from '../src';
import { hasRedisCli, hasRedisServer, skipOrFail, startRedisCluster, type RedisCluster } from './support/redis-server';
import { CookieJar, send, startApp, type TestApp } from './support/redis-apps';
import { IOREDIS_MAJORS } from './support/ioredis-majors';

for (const { name: major, Cluster: ClusterClient, resp } of IOREDIS_MAJORS) describe(`RedisStore on Redis Cluster (${major})`, function () {
  this.timeout(60_000);

  let cluster: RedisCluster | undefined;
  const clients: Cluster[] = [];
  const apps: TestApp[] = [];
  let counter = 0;
  let prefix: string;

  before(async function () {
    if (!hasRedisServer() || !hasRedisCli()) {
      skipOrFail(this, 'no redis-server and redis-cli binaries on PATH: the Redis Cluster tests need them to start a cluster');
    }
    cluster = await startRedisCluster({ masters: 3 });
  });

  after(async () => {
    await cluster?.stop();
  });

  beforeEach(() => {
    prefix = `kls-cluster-${++counter}:`;
  });

  afterEach(async () => {
    for (const app of apps.splice(0)) {
      app.release();
      await app.close();
    }
    await Promise.all(clients.splice(0).map((client) => client.quit().catch(() => client.disconnect())));
  });

  function connect(): Cluster {
    const client = new ClusterClient((cluster as RedisCluster).nodes, {
      redisOptions: { maxRetriesPerRequest: 1, commandTimeout: 2000 },
    });
    client.on('error', () => undefined);
    clients.push(client);
    return client;
  }

  async function instance(storeOptions: { lock?: boolean } = {}, lockTimeout = 5000) {
    const client = connect();
    const store = new RedisStore({ client, prefix, ...storeOptions });
    const app = await startApp(store, { lockTimeout, maxAge: 60_000 });
    apps.push(app);
    return { client, store, url: app.url };
  }

  it(`talks to the cluster's nodes in RESP${resp}, as ${major} does by default`, async () => {
    assert.match(String(await connect().call('CLIENT', 'INFO')), new RegExp(`\\bresp=${resp}\\b`));
  });

  it('round-trips a session; its key and lock key share one slot', async () => {
    const a = await instance({ lock: true });
    const jar = new CookieJar();
    await send(jar, a.url, 'POST', `/set?key=user&value=${encodeURIComponent('{"name":"ada"}')}`);
    const id = jar.sessionId as string;
    assert.deepEqual((await send(jar, a.url, 'GET', '/')).body, { user: { name: 'ada' } });

    const key = a.store.key(id);
    const pttl = await a.client.pttl(key);
    assert.ok(pttl > 50_000 && pttl <= 60_000, `PTTL ${pttl}`);
    const slot = await a.client.cluster('KEYSLOT', key);
    assert.equal(await a.client.cluster('KEYSLOT', a.store.lockKey(id)), slot);
  });

  it('two processes writing different keys of one session at the same time keep every key', async () => {
    const a = await instance();
    const b = await instance();
    const jar = new CookieJar();
    await send(jar, a.url, 'POST', '/set?key=seed&value=1');

    const writes: Promise<{ status: number }>[] = [];
    for (let i = 0; i < 30; i++) {
      writes.push(send(jar, a.url, 'POST', `/set?key=a${i}&value=${i}`));
      writes.push(send(jar, b.url, 'POST', `/set?key=b${i}&value=${i}`));
    }
    assert.ok((await Promise.all(writes)).every((reply) => reply.status === 200));

    const data = (await send(jar, b.url, 'GET', '/')).body as Record<string, number>;
    assert.equal(Object.keys(data).length, 61);
    for (let i = 0; i < 30; i++) {
      assert.equal(data[`a${i}`], i);
      assert.equal(data[`b${i}`], i);
    }
  });

  it('with lock: true, 100 concurrent increments spread over two processes add exactly 100', async () => {
    const a = await instance({ lock: true }, 30_000);
    const b = await instance({ lock: true }, 30_000);
    const jar = new CookieJar();
    await send(jar, a.url, 'POST', '/set?key=seed&value=1');

    const replies = await Promise.all(
      Array.from({ length: 100 }, (_, i) => send(jar, i % 2 === 0 ? a.url : b.url, 'POST', '/incr?delay=2')),
    );
    assert.deepEqual([...new Set(replies.map((reply) => reply.status))], [200]);
    assert.equal(((await send(jar, b.url, 'GET', '/')).body as { n: number }).n, 100);
    assert.equal(await a.client.exists(a.store.lockKey(jar.sessionId as string)), 0, 'no lock left behind');
  });
});
