/**
 * SPEC, "MemoryStore": deep copies in and out, expired entries invisible at
 * once and swept out in slices that never block the event loop for long, a
 * sweep timer that never keeps the process alive, a `size` of live entries.
 */
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import fc from 'fast-check';
import { MemoryStore, createMemoryStore } from '../src';
import type { SessionData } from '../src';
import { shardOf } from '../src/stores/memory';
import { Jar, call, closeAll, hexId, start } from './support/app';
import { runChild } from './support/child';
import { withHeldClock } from './support/clock';
import { expect, sleep, waitUntil } from './support/concurrency';

const stores: MemoryStore[] = [];

function memoryStore(options?: ConstructorParameters<typeof MemoryStore>[0]): MemoryStore {
  const store = new MemoryStore(options);
  stores.push(store);
  return store;
}

afterEach(() => {
  for (const store of stores.splice(0)) store.close();
});

/**
 * Entries the store still holds, expired or not. Nothing public tells an
 * expired entry that is still held from one that was swept (get and size
 * hide both), so the sweep tests look at the private map.
 */
function heldEntries(store: MemoryStore): number {
  const { shards } = store as unknown as { shards: Map<string, unknown>[] };
  return shards.reduce((held, shard) => held + shard.size, 0);
}

describe('MemoryStore', function () {
  this.timeout(60_000);

  describe('copies', () => {
    it('get returns a deep copy: changing what it returned does not change the stored session', async () => {
      const store = memoryStore();
      await store.set('a', { user: { name: 'ann', roles: ['reader'] } }, 60_000);

      const got = (await store.get('a')) as { user: { name: string; roles: string[] } };
      got.user.name = 'mallory';
      got.user.roles.push('admin');
      (got as SessionData).extra = true;

      expect(await store.get('a')).to.deep.equal({ user: { name: 'ann', roles: ['reader'] } });
    });

    it('set stores a deep copy: changing the object after set does not change the stored session', async () => {
      const store = memoryStore();
      const data = { user: { name: 'ann', roles: ['reader'] } };
      await store.set('a', data, 60_000);

      data.user.name = 'mallory';
      data.user.roles.push('admin');

      expect(await store.get('a')).to.deep.equal({ user: { name: 'ann', roles: ['reader'] } });
    });

    it('a record in the middleware\'s shape comes back exactly as JSON would carry it, any key included', async () => {
      const store = memoryStore();
      const data = JSON.parse('{"__proto__":{"x":1},"constructor":"c","":[1,{"a":null}],"n":-0}') as SessionData;
      await store.set('r', { data: { ...data, dropped: undefined }, createdAt: 1000, touchedAt: 2000 }, 60_000);
      const got = (await store.get('r')) as { data: SessionData; createdAt: number; touchedAt: number };
      expect(JSON.stringify(got)).to.equal(JSON.stringify({ data, createdAt: 1000, touchedAt: 2000 }));
      expect(Object.keys(got.data)).to.deep.equal(['__proto__', 'constructor', '', 'n']);
      expect(Object.getPrototypeOf(got.data)).to.equal(Object.prototype, 'the __proto__ key is data, not a prototype');
    });

    it('applyChanges replays set, delete and clear in order, and never recreates a missing session', async () => {
      const store = memoryStore();
      await store.set('s1', { data: { a: 1, b: 2 }, createdAt: 1000, touchedAt: 1000 }, 60_000);
      const changes = [
        { op: 'set', key: 'c', value: { deep: [1] } },
        { op: 'set', key: 'a', value: 'replaced' },
        { op: 'delete', key: 'b' },
        { op: 'delete', key: 'never-there' },
      ] as const;
      expect(await store.applyChanges('s1', changes, 2000, 60_000)).to.equal(true);
      expect(await store.get('s1')).to.deep.equal({ data: { a: 'replaced', c: { deep: [1] } }, createdAt: 1000, touchedAt: 2000 });
      expect(await store.applyChanges('s1', [{ op: 'clear' }, { op: 'set', key: 'after', value: true }], 3000, 60_000)).to.equal(true);
      expect(await store.get('s1')).to.deep.equal({ data: { after: true }, createdAt: 1000, touchedAt: 3000 });

      // Plain data stored by someone else becomes a record of that data, created now.
      await store.set('plain', { a: 1 }, 60_000);
      expect(await store.applyChanges('plain', [{ op: 'set', key: 'b', value: 2 }], 4000, 60_000)).to.equal(true);
      expect(await store.get('plain')).to.deep.equal({ data: { a: 1, b: 2 }, createdAt: 4000, touchedAt: 4000 });

      expect(await store.applyChanges('gone', [{ op: 'set', key: 'x', value: 1 }], 2000, 60_000)).to.equal(false);
      expect(await store.get('gone')).to.equal(undefined);
    });

    it('applyChanges gives what replaying the log on a Map gives, key order included, for short logs and for logs of thousands of keys alike (property)', async () => {
      const store = memoryStore();
      const key = fc.integer({ min: 0, max: 300 }).map((n) => `k${n}`);
      const change = fc.oneof(
        fc.record({ op: fc.constant('set' as const), key, value: fc.oneof(fc.integer(), fc.string(), fc.constant(undefined)) }),
        fc.record({ op: fc.constant('delete' as const), key }),
        fc.constant({ op: 'clear' as const }),
      );
      // Mostly sets, so that long logs end with many keys; a clear now and then starts over.
      const log = fc.array(fc.oneof({ weight: 12, arbitrary: change.filter((c) => c.op === 'set') }, { weight: 3, arbitrary: change }), { maxLength: 600, size: 'max' });
      await fc.assert(
        fc.asyncProperty(fc.uniqueArray(key, { maxLength: 300, size: 'max' }), log, async (keys, changes) => {
          const data = Object.fromEntries(keys.map((k, i) => [k, i]));
          await store.set('s', { data, createdAt: 1000, touchedAt: 1000 }, 60_000);
          const model = new Map<string, unknown>(Object.entries(data));
          for (const c of changes) {
            if (c.op === 'clear') model.clear();
            else if (c.op === 'delete' || c.value === undefined) model.delete(c.key);
            else model.set(c.key, c.value);
          }
          expect(await store.applyChanges('s', changes, 2000, 60_000)).to.equal(true);
          const stored = (await store.get('s')) as { data: Record<string, unknown> };
          expect(Object.entries(stored.data)).to.deep.equal([...model]);
        }),
        { numRuns: 200 },
      );
    });

    it("applyChanges finds a key by its name, never by a stored value whose JSON reads the same (a key '1' beside a value 1)", async () => {
      const store = memoryStore();
      await store.set('s', { data: { a: 1, b: true, c: null }, createdAt: 1000, touchedAt: 1000 }, 60_000);
      const changes = [
        { op: 'set', key: '1', value: 'one' },
        { op: 'set', key: 'true', value: 'yes' },
        { op: 'delete', key: 'null' },
      ] as const;
      expect(await store.applyChanges('s', changes, 2000, 60_000)).to.equal(true);
      expect(await store.get('s')).to.deep.equal({ data: { a: 1, b: true, c: null, 1: 'one', true: 'yes' }, createdAt: 1000, touchedAt: 2000 });
    });

    it('two gets return objects that share nothing', async () => {
      const store = memoryStore();
      await store.set('a', { list: [1] }, 60_000);

      const first = (await store.get('a')) as { list: number[] };
      const second = (await store.get('a')) as { list: number[] };

      expect(first).to.not.equal(second);
      expect(first.list).to.not.equal(second.list);
    });

    it('set replaces what was stored, and destroy removes it (a missing ID included)', async () => {
      const store = memoryStore();
      await store.set('a', { v: 1, w: 1 }, 60_000);
      await store.set('a', { v: 2 }, 60_000);
      expect(await store.get('a')).to.deep.equal({ v: 2 });

      await store.destroy('a');
      await store.destroy('never-stored');
      expect(await store.get('a')).to.equal(undefined);
    });
  });

  describe('expiry', () => {
    it('an expired session is invisible at once, before any sweep', async () => {
      const store = memoryStore({ cleanupInterval: 3_600_000 });
      await store.set('short', { v: 1 }, 40);
      await store.set('long', { v: 2 }, 60_000);
      expect(await store.get('short')).to.deep.equal({ v: 1 });

      await sleep(80);

      expect(await store.get('short')).to.equal(undefined);
      expect(await store.get('long')).to.deep.equal({ v: 2 });
    });

    it('a session set for maxAgeMs is there a millisecond before that and gone at that very millisecond', async () => {
      const store = memoryStore({ cleanupInterval: 3_600_000 });
      await withHeldClock(async (clock) => {
        await store.set('s', { v: 1 }, 1_000);
        clock.at += 999;
        expect(await store.get('s'), 'a millisecond before').to.deep.equal({ v: 1 });
        expect(store.size, 'size a millisecond before').to.equal(1);
        clock.at += 1;
        expect(await store.get('s'), 'at the end').to.equal(undefined);
        expect(store.size, 'size at the end').to.equal(0);
      });
    });

    it('size counts live sessions only, not expired ones waiting for the sweep', async () => {
      const store = memoryStore({ cleanupInterval: 3_600_000 });
      await store.set('a', {}, 60_000);
      await store.set('b', {}, 60_000);
      await store.set('c', {}, 40);
      expect(store.size).to.equal(3);

      await sleep(80);

      expect(store.size).to.equal(2);
      expect(heldEntries(store), 'entries held before any sweep or get').to.equal(3);
    });

    it('size no longer counts a session at the very millisecond it expires, before anything reads it', async () => {
      const store = memoryStore({ cleanupInterval: 3_600_000 });
      await withHeldClock(async (clock) => {
        await store.set('s', { v: 1 }, 1_000);
        clock.at += 1_000;
        expect(store.size, 'size at the end, nothing read').to.equal(0);
      });
    });

    it('a sweep at the very millisecond a session expires removes it', async () => {
      const store = memoryStore({ cleanupInterval: 3_600_000 });
      await withHeldClock(async (clock) => {
        await store.set('ending', { v: 1 }, 1_000);
        await store.set('live', { v: 2 }, 1_001);
        clock.at += 1_000;
        await store.sweep();
        expect(heldEntries(store), 'entries held after the sweep').to.equal(1);
        expect(await store.get('live')).to.deep.equal({ v: 2 });
      });
    });

    it('size is a getter', () => {
      const store = memoryStore();
      expect(Object.getOwnPropertyDescriptor(MemoryStore.prototype, 'size')?.get).to.be.a('function');
      expect(store.size).to.equal(0);
    });

    it('sweep() removes the expired sessions and keeps the live ones', async () => {
      const store = memoryStore({ cleanupInterval: 3_600_000 });
      for (let i = 0; i < 10; i++) await store.set(`old${i}`, { i }, 20);
      await store.set('live', { v: 1 }, 60_000);
      await sleep(50);
      expect(heldEntries(store)).to.equal(11);

      await store.sweep();

      expect(heldEntries(store)).to.equal(1);
      expect(await store.get('live')).to.deep.equal({ v: 1 });
    });

    /** A store of 20,000 expired sessions `old0`… whose sweep has done its first slice, and waits. */
    async function sweepUnderWay(): Promise<{ store: MemoryStore; sweeping: Promise<void> }> {
      const store = memoryStore({ cleanupInterval: 3_600_000 });
      for (let i = 0; i < 20_000; i++) await store.set(`old${i}`, { i }, 20);
      await sleep(40);
      const sweeping = store.sweep();
      await new Promise<void>((resolve) => setImmediate(resolve));
      expect(heldEntries(store), 'entries held after the first slice').to.be.above(1000);
      return { store, sweeping };
    }

    it('sessions set again or added while a sweep is under way are kept', async () => {
      const { store, sweeping } = await sweepUnderWay();
      for (let i = 0; i < 20_000; i += 1000) await store.set(`old${i}`, { i, again: true }, 60_000);
      await store.set('new', { v: 1 }, 60_000);
      await sweeping;

      expect(heldEntries(store)).to.equal(21);
      expect(await store.get('old19000')).to.deep.equal({ i: 19000, again: true });
      expect(await store.get('new')).to.deep.equal({ v: 1 });
    });

    it('a sweep() called while another is under way resolves once that one is done, not before', async () => {
      const { store, sweeping } = await sweepUnderWay();

      await store.sweep();

      expect(heldEntries(store), 'entries held once the second sweep() resolved').to.equal(0);
      await sweeping;
    });

    for (const [label, lifetime] of [
      ['NaN', NaN],
      ["'session' (koa-session's browser-session maxAge)", 'session'],
      ['undefined', undefined],
      ['0', 0],
      ['-1', -1],
      ['Infinity', Infinity],
      ['1e19 (beyond Number.MAX_SAFE_INTEGER)', 1e19],
    ] as const) {
      it(`a lifetime of ${label} is refused by set, touch and applyChanges, and nothing is stored or changed`, async () => {
        const store = memoryStore();
        await store.set('kept', { v: 1 }, 60_000);
        const bad = lifetime as unknown as number;
        const refusals = await Promise.allSettled([
          store.set('other', { v: 2 }, bad),
          store.touch('kept', bad),
          store.applyChanges('kept', [{ op: 'set', key: 'v', value: 3 }], Date.now(), bad),
        ]);
        for (const refusal of refusals) {
          expect(refusal.status).to.equal('rejected');
          expect(String((refusal as PromiseRejectedResult).reason)).to.match(/TypeError: .*MemoryStore needs a positive, finite maxAgeMs/);
        }
        expect(heldEntries(store)).to.equal(1);
        expect(await store.get('kept')).to.deep.equal({ v: 1 });
      });
    }

    it('applyChanges with a value JSON cannot encode (a BigInt) rejects and changes nothing, not even the changes before it', async () => {
      const store = memoryStore();
      await store.set('s', { data: { a: 'old' }, createdAt: 1000, touchedAt: 1000 }, 60_000);
      const changes = [{ op: 'clear' }, { op: 'set', key: 'b', value: 1 }, { op: 'set', key: 'c', value: 10n }] as const;

      const refusal = await store.applyChanges('s', changes, 2000, 60_000).then(() => 'resolved', (error: unknown) => String(error));

      expect(refusal).to.match(/TypeError: Do not know how to serialize a BigInt/);
      expect(await store.get('s')).to.deep.equal({ data: { a: 'old' }, createdAt: 1000, touchedAt: 1000 });
    });

    it('applyChanges with a push time older than the stored one applies the changes and leaves push time and expiry as they are', async () => {
      const store = memoryStore();
      await store.set('s', { data: { a: 1 }, createdAt: 1000, touchedAt: 1000 }, 60_000);
      expect(await store.applyChanges('s', [], 5000, 60_000)).to.equal(true); // a later push, made meanwhile
      expect(await store.applyChanges('s', [{ op: 'set', key: 'b', value: 2 }], 4000, 30)).to.equal(true);
      await sleep(60); // past the older push's lifetime

      expect(await store.get('s')).to.deep.equal({ data: { a: 1, b: 2 }, createdAt: 1000, touchedAt: 5000 });
    });

    it('touch pushes the expiry out without changing the data, and records the push time of a record in the middleware\'s shape', async () => {
      const store = memoryStore();
      await store.set('a', { v: 1 }, 600);
      await store.set('s', { data: { user: 'ann' }, createdAt: 1000, touchedAt: 1000 }, 600);
      const setBy = Date.now();
      await sleep(200); // the touches come 400 ms before the set's end: room for a loaded machine
      const touchedFrom = Date.now();
      await store.touch('a', 1_500);
      await store.touch('s', 1_500);
      await sleep(Math.max(0, setBy + 600 + 50 - Date.now())); // past the end the set gave them

      expect(await store.get('a')).to.deep.equal({ v: 1 });
      const record = await store.get('s');
      expect(record).to.deep.include({ data: { user: 'ann' }, createdAt: 1000 });
      expect(record?.touchedAt, 'the push time').to.be.within(touchedFrom, Date.now());
    });

    it('touch never creates a session that is not stored', async () => {
      const store = memoryStore();
      await store.touch('ghost', 60_000);
      await store.set('gone', { v: 1 }, 20);
      await sleep(40);
      await store.touch('gone', 60_000);

      expect(await store.get('ghost')).to.equal(undefined);
      expect(await store.get('gone')).to.equal(undefined);
      expect(store.size).to.equal(0);
    });
  });

  describe('the sweep timer', () => {
    it('sweeps every cleanupInterval by itself', async () => {
      const store = memoryStore({ cleanupInterval: 30 });
      for (let i = 0; i < 10; i++) await store.set(`old${i}`, {}, 10);
      await store.set('live', {}, 60_000);

      await waitUntil(() => heldEntries(store) === 1, 'the timer swept the expired entries', 5_000);
      expect(await store.get('live')).to.deep.equal({});
    });

    it('close() stops the sweeps', async () => {
      const store = memoryStore({ cleanupInterval: 20 });
      let sweeps = 0;
      store.sweep = async () => {
        sweeps++;
      };
      await waitUntil(() => sweeps >= 2, 'two sweeps ran', 5_000);

      store.close();
      const afterClose = sweeps;
      await sleep(150);

      expect(sweeps, 'sweeps after close()').to.equal(afterClose);
    });

    it('the store still works after close()', async () => {
      const store = memoryStore();
      store.close();
      await store.set('a', { v: 1 }, 60_000);
      expect(await store.get('a')).to.deep.equal({ v: 1 });
    });

    it('the sweep timer never keeps the process alive: a process that only creates a MemoryStore exits by itself', async function () {
      this.timeout(120_000);
      const code = await runChild(
        "const { MemoryStore } = require('./src'); const s = new MemoryStore(); s.set('a', {}, 60000); " +
          "new MemoryStore({ cleanupInterval: 50 });",
        90_000,
      );
      expect(code).to.equal(0);
    });

    it('a MemoryStore dropped without close(), and the one session() makes without a store, are collected with their sessions: the timer does not hold them', async function () {
      this.timeout(120_000);
      const code = await runChild(
        "const { MemoryStore, session } = require('./src');" +
          "require('v8').setFlagsFromString('--expose-gc'); const gc = require('vm').runInNewContext('gc');" +
          'const stores = []; const heapBefore = process.memoryUsage().heapUsed;' +
          '(() => { for (let i = 0; i < 20; i++) { const s = new MemoryStore({ cleanupInterval: 60000 });' +
          "  s.set('a', { text: 'x'.repeat(1000) }, 60000); stores.push(new WeakRef(s)); }" +
          '  for (let i = 0; i < 200; i++) session(); })();' +
          '(async () => {' +
          '  for (let i = 0; i < 10; i++) { await new Promise((r) => setImmediate(r)); gc(); }' +
          '  const alive = stores.filter((s) => s.deref() !== undefined).length;' +
          '  const grown = (process.memoryUsage().heapUsed - heapBefore) / 1e6;' +
          // An empty MemoryStore holds some 200 KB (its 1024 Maps): 200 kept would be 40 MB.
          "  if (alive > 0 || grown > 5) { console.error(`${alive} of 20 stores alive, heap grown by ${grown.toFixed(1)} MB`); process.exit(1); }" +
          '})();',
        90_000,
      );
      expect(code).to.equal(0);
    });

    it('a cleanupInterval under 1 ms, or null, is refused as its message says', () => {
      expect(() => new MemoryStore({ cleanupInterval: 0.5 })).to.throw(TypeError, /cleanupInterval must be a number of milliseconds from 1 to/);
      expect(() => new MemoryStore({ cleanupInterval: null as never })).to.throw(TypeError, /cleanupInterval must be a number of milliseconds from 1 to/);
    });

    it('an unknown option (a typo of cleanupInterval) or options that are not an object are refused with a TypeError', () => {
      expect(() => new MemoryStore({ cleanupIntervall: 5 } as never)).to.throw(TypeError, /unknown MemoryStore option cleanupIntervall \(the one option is cleanupInterval\)/);
      expect(() => new MemoryStore(null as never)).to.throw(TypeError, /MemoryStore options must be an object/);
      expect(() => new MemoryStore(60_000 as never)).to.throw(TypeError, /MemoryStore options must be an object/);
    });

    const day = 24 * 60 * 60 * 1000;
    for (const [label, interval] of [['30 days (longer than a timer can wait)', 30 * day], ['Infinity', Number.POSITIVE_INFINITY]] as const) {
      it(`a cleanupInterval of ${label} is refused or honoured, never turned into a sweep every millisecond`, async () => {
        let store: MemoryStore | undefined;
        let refused: unknown;
        const sweeps = { count: 0 };
        const originalSweep = MemoryStore.prototype.sweep;
        MemoryStore.prototype.sweep = async function sweep() {
          sweeps.count++;
        };
        const warnings: string[] = [];
        const onWarning = (warning: Error) => warnings.push(warning.name);
        process.on('warning', onWarning);
        try {
          try {
            store = memoryStore({ cleanupInterval: interval });
          } catch (error) {
            refused = error;
          }
          await sleep(100);
        } finally {
          MemoryStore.prototype.sweep = originalSweep;
          process.off('warning', onWarning);
        }

        if (refused !== undefined) {
          // Refusing it is fine, as long as the error says which option.
          expect(refused).to.be.an.instanceOf(TypeError);
          expect(String((refused as Error).message)).to.include('cleanupInterval');
        } else {
          expect(store).to.be.an.instanceOf(MemoryStore);
          expect(sweeps.count, `sweeps within 100 ms (warnings: ${warnings.join(', ') || 'none'})`).to.equal(0);
        }
      });
    }
  });

  describe('sharding (a sweep goes shard by shard, deleting in place)', () => {
    const spread = (ids: string[]) => {
      const sizes = new Map<number, number>();
      for (const id of ids) sizes.set(shardOf(id), (sizes.get(shardOf(id)) ?? 0) + 1);
      return { shards: sizes.size, largest: Math.max(...sizes.values()) };
    };
    const KINDS: Array<[string, (i: number) => string]> = [
      ['default 64-hex IDs', () => randomBytes(32).toString('hex')],
      ["a custom genid's IDs sharing a suffix", () => `${randomBytes(16).toString('hex')}-web`],
      ["a custom genid's IDs sharing a prefix", () => `app:v1:${randomBytes(12).toString('base64url')}`],
      ['sequential IDs', (i) => `user-${i}-session`],
      ['a zero-padded 64-character counter', (i) => String(i).padStart(64, '0')],
      ['a counter before a fixed UUID', (i) => `${i}.0b5f3d2e-6a51-4c3e-9d1f-2b7c8e4a9f60`],
      ['a counter between a prefix and a long host name', (i) => `sess-${i}-web-frontend-01.example.internal`],
      ['a counter in the last characters of 13 and of 15', (i) => (i % 2 === 0 ? `s:${String(i).padStart(11, '0')}` : `ses:${String(i).padStart(11, '0')}`)],
      ['IDs of 256 characters, a counter in the middle', (i) => `${'p'.repeat(120)}${String(i).padStart(16, '0')}${'s'.repeat(120)}`],
      ['IDs longer than 256 characters, a counter in the middle', (i) => `${'p'.repeat(150)}${i}${'s'.repeat(150)}`],
      ['IDs beyond Latin-1, a counter in the middle', (i) => `会话-${i}-🙂`],
      ['IDs of 257 characters, a counter at the end', (i) => `${'p'.repeat(252)}${String(i).padStart(5, '0')}`],
      ['IDs of 300 characters, a counter at the end', (i) => `${'p'.repeat(295)}${String(i).padStart(5, '0')}`],
      ['a counter whose digits are every fourth character', (i) => [...String(i).padStart(6, '0')].map((digit) => `abc${digit}`).join('')],
      ['a counter whose digits are every fourth character, from the second', (i) => [...String(i).padStart(6, '0')].map((digit) => `a${digit}bc`).join('')],
      ['IDs beyond Latin-1 that differ only in the high byte of characters', (i) => `sess${[i & 63, (i >> 6) & 63, i >> 12].map((k) => String.fromCharCode(0x4e00 + 256 * k)).join('')}`],
      ['IDs beyond Latin-1 that differ only in the high byte of every second character', (i) => [i & 63, (i >> 6) & 63, i >> 12].map((k) => `a${String.fromCharCode(0x4e00 + 256 * k)}`).join('')],
    ];
    it('an ID lands in the same shard whatever ID was hashed before it', () => {
      const before = (length: number) => [...randomBytes(length)].map((byte) => String.fromCharCode(0x4e00 + byte)).join('');
      for (let length = 0; length <= 300; length++) {
        const id = 'q'.repeat(length);
        const first = shardOf(id);
        for (const other of [before(256), before(length + 1), before(300)]) {
          shardOf(other);
          expect(shardOf(id), `length ${length}`).to.equal(first);
        }
      }
    });
    it('every character of an ID, its high byte too, moves the ID to another shard', () => {
      for (const length of [1, 2, 3, 4, 5, 8, 63, 64, 255, 256, 257, 300]) {
        const base = [...randomBytes(length)].map((byte) => String.fromCharCode(0x41 + (byte % 26)));
        for (let at = 0; at < length; at++) {
          for (const step of [1, 0x100]) {
            const shards = new Set<number>();
            for (let k = 0; k < 64; k++) {
              const id = [...base];
              id[at] = String.fromCharCode(0x3000 + k * step);
              shards.add(shardOf(id.join('')));
            }
            expect(shards.size, `length ${length}, character ${at}, step ${step}`).to.be.at.least(48);
          }
        }
      }
    });

    // Whatever shard they hash to, each shard keys its sessions by the whole ID: these must never share a record.
    it('IDs that differ only in the high byte of a character, or only past the 256th, are kept as different sessions', async () => {
      const store = memoryStore();
      const long = 'x'.repeat(300);
      const ids = ['a\u0100', 'a\u0000', 'a\u0200', `${long}1`, `${long}2`, `${'y'.repeat(255)}\u0101`, `${'y'.repeat(255)}\u0001`];
      for (const [i, id] of ids.entries()) await store.set(id, { i }, 60_000);
      for (const [i, id] of ids.entries()) expect(await store.get(id), JSON.stringify(id)).to.deep.equal({ i });
      await store.destroy(ids[0]!);
      expect(await store.get(ids[0]!)).to.equal(undefined);
      expect(await store.get(ids[1]!)).to.deep.equal({ i: 1 });
      expect(store.size).to.equal(ids.length - 1);
    });

    for (const [label, make] of KINDS) {
      it(`${label} spread over all 1024 shards, none holding more than twice its share`, () => {
        const { shards, largest } = spread(Array.from({ length: 50_000 }, (_, i) => make(i)));
        expect(shards).to.equal(1024);
        expect(largest).to.be.at.most(2 * Math.ceil(50_000 / 1024));
      });
    }
  });

  describe('a sweep over a million sessions', () => {
    it('never blocks the event loop for more than a few milliseconds at a time', async function () {
      this.timeout(300_000);
      const store = memoryStore({ cleanupInterval: 3_600_000 });
      const total = 1_000_000;
      for (let i = 0; i < total; i++) await store.set(`s${i}`, { i }, 1);
      await store.set('live', { v: 1 }, 3_600_000);
      await sleep(20);
      expect(heldEntries(store)).to.equal(total + 1);

      // The probe notes how long the event loop went between two of its turns.
      // On a busy shared machine the OS also takes the CPU away for tens of
      // milliseconds at times; that is not the sweep blocking the loop, so a
      // block counts only the process's CPU time within the gap (a long
      // synchronous slice burns CPU the whole time; a preempted one does not).
      let longestWall = 0;
      let longestBlock = 0;
      let probing = true;
      let lastWall = performance.now();
      let lastCpu = process.cpuUsage();
      const probe = () => {
        const wall = performance.now() - lastWall;
        const cpuUsed = process.cpuUsage(lastCpu);
        const cpu = (cpuUsed.user + cpuUsed.system) / 1000;
        longestWall = Math.max(longestWall, wall);
        longestBlock = Math.max(longestBlock, Math.min(wall, cpu));
        lastWall = performance.now();
        lastCpu = process.cpuUsage();
        if (probing) setImmediate(probe);
      };
      setImmediate(probe);
      const started = performance.now();
      await store.sweep();
      const took = performance.now() - started;
      // Let the probe take its measure of the sweep's last stretch (or of all of it, had it never yielded).
      await new Promise<void>((resolve) => setImmediate(resolve));
      await sleep(5);
      probing = false;

      console.log(
        `      sweep of ${total} expired sessions: ${took.toFixed(0)} ms in all; longest block ${longestBlock.toFixed(1)} ms of CPU, ` +
          `longest wall-clock gap ${longestWall.toFixed(1)} ms, ` +
          `load average ${os.loadavg()[0].toFixed(1)} on ${os.cpus().length} CPUs`,
      );
      expect(heldEntries(store), 'entries left after the sweep').to.equal(1);
      expect(await store.get('live')).to.deep.equal({ v: 1 });
      expect(longestBlock, 'longest event-loop block during the sweep (ms of CPU)').to.be.below(50);
    });
  });

  describe('as the middleware\'s store', () => {
    afterEach(closeAll);

    it("a session put in with set() as plain data (koa-session's shape) is what the next request with its ID reads", async () => {
      const store = memoryStore();
      const id = hexId('c');
      await store.set(id, { user: 'ann', cart: [1, 2] }, 60_000);
      const run = await start({ store }, (ctx) => {
        ctx.body = { isNew: ctx.session.isNew, user: ctx.session.get('user') ?? null, cart: ctx.session.get('cart') ?? null };
      });
      const res = await call(run, new Jar().set('session_id', id), 'get');
      expect(res.body).to.deep.equal({ isNew: false, user: 'ann', cart: [1, 2] });
    });
  });

  describe('construction', () => {
    it('createMemoryStore() returns a MemoryStore', () => {
      const store = createMemoryStore();
      stores.push(store);
      expect(store).to.be.an.instanceOf(MemoryStore);
    });

    it('createMemoryStore(options) passes its options on', async () => {
      const store = createMemoryStore({ cleanupInterval: 30 });
      stores.push(store);
      await store.set('old', {}, 10);
      await waitUntil(() => heldEntries(store) === 0, 'the timer swept the expired entry', 5_000);
      expect(() => createMemoryStore({ cleanupInterval: -1 })).to.throw(TypeError, /cleanupInterval/);
    });

    for (const bad of [0, -1, Number.NaN, '1000', true]) {
      it(`new MemoryStore({ cleanupInterval: ${typeof bad === 'string' ? `'${bad}'` : String(bad)} }) throws a TypeError naming cleanupInterval`, () => {
        expect(() => new MemoryStore({ cleanupInterval: bad as number })).to.throw(TypeError, /cleanupInterval/);
      });
    }

    it('new MemoryStore() with no options sweeps every 10 minutes', async () => {
      const intervals: number[] = [];
      const original = global.setInterval;
      global.setInterval = ((handler: () => void, ms: number) => {
        intervals.push(ms);
        return original(handler, ms);
      }) as typeof setInterval;
      try {
        memoryStore();
      } finally {
        global.setInterval = original;
      }
      expect(intervals).to.deep.equal([10 * 60 * 1000]);
    });
  });
});
