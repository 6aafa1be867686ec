/**
 * SPEC "Session": the Session object a handler sees as ctx.session, its
 * values (what JSON carries, copied in and out), its keys, and
 * getSession / fromContext. Everything over real HTTP.
 */
import { inspect, isDeepStrictEqual } from 'node:util';
import { runInNewContext } from 'node:vm';
import fc from 'fast-check';
import Koa from 'koa';
import type { Context } from 'koa';
import koaSession from 'koa-session';
import supertest from 'supertest';
import { fromContext, getSession, session, Session } from '../src';
import { lockTableOf } from '../src/lock';
import { parseJson } from '../src/values';
import { HEX64, Jar, RecordingStore, call, closeAll, cookieNamed, expect, hexId, isExpired, memoryStore, setCookies, start, warningsDuring } from './support/app';

afterEach(closeAll);

describe('Session: values across requests', () => {
  it('a value set in one request is read back in the next with the same cookie', async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      if (ctx.method === 'POST') ctx.session.set('user', { name: 'ada', roles: ['admin'] });
      ctx.body = { user: ctx.session.get('user') ?? null };
    });
    const jar = new Jar();
    await call(run, jar, 'post');
    expect(jar.get()).to.match(HEX64);
    const res = await call(run, jar, 'get');
    expect(res.body).to.deep.equal({ user: { name: 'ada', roles: ['admin'] } });
  });

  it('a request without the cookie does not see the value', async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      if (ctx.method === 'POST') ctx.session.set('n', 1);
      ctx.body = { n: ctx.session.get('n') ?? null };
    });
    await call(run, new Jar(), 'post');
    const res = await call(run, new Jar(), 'get');
    expect(res.body).to.deep.equal({ n: null });
  });

  it('get() of a key never set is undefined and has() is false', async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      ctx.body = { got: ctx.session.get('nope') === undefined, has: ctx.session.has('nope') };
    });
    const res = await call(run, new Jar());
    expect(res.body).to.deep.equal({ got: true, has: false });
  });

  it('has() and keys() see what was set, in this request and the next', async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      if (ctx.method === 'POST') {
        ctx.session.set('a', 1);
        ctx.session.set('b', null);
      }
      ctx.body = { has: [ctx.session.has('a'), ctx.session.has('b'), ctx.session.has('c')], keys: ctx.session.keys().sort() };
    });
    const jar = new Jar();
    const first = await call(run, jar, 'post');
    expect(first.body).to.deep.equal({ has: [true, true, false], keys: ['a', 'b'] });
    const next = await call(run, jar, 'get');
    expect(next.body).to.deep.equal({ has: [true, true, false], keys: ['a', 'b'] });
  });

  it('delete(key) removes that one value and keeps the others', async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      if (ctx.path === '/seed') {
        ctx.session.set('a', 1);
        ctx.session.set('b', 2);
      }
      if (ctx.path === '/delete') ctx.session.delete('a');
      ctx.body = ctx.session.toJSON();
    });
    const jar = new Jar();
    await call(run, jar, 'post', '/seed');
    const deleted = await call(run, jar, 'post', '/delete');
    expect(deleted.body).to.deep.equal({ b: 2 });
    const next = await call(run, jar, 'get', '/');
    expect(next.body).to.deep.equal({ b: 2 });
  });

  it('clear() empties the session, in this request and the next', async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      if (ctx.path === '/seed') {
        ctx.session.set('a', 1);
        ctx.session.set('b', { c: 2 });
      }
      if (ctx.path === '/clear') ctx.session.clear();
      ctx.body = { keys: ctx.session.keys(), a: ctx.session.get('a') ?? null };
    });
    const jar = new Jar();
    await call(run, jar, 'post', '/seed');
    const cleared = await call(run, jar, 'post', '/clear');
    expect(cleared.body).to.deep.equal({ keys: [], a: null });
    const next = await call(run, jar, 'get', '/');
    expect(next.body).to.deep.equal({ keys: [], a: null });
  });

  it('a cleared session stays, with its ID and its cookie', async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      if (ctx.path === '/seed') ctx.session.set('a', 1);
      if (ctx.path === '/clear') ctx.session.clear();
      ctx.body = { id: ctx.session.id, isNew: ctx.session.isNew };
    });
    const jar = new Jar();
    const seeded = await call(run, jar, 'post', '/seed');
    const id = jar.get();
    const cleared = await call(run, jar, 'post', '/clear');
    const cookie = cookieNamed(cleared);
    if (cookie !== undefined) {
      expect(isExpired(cookie), 'clear() must not expire the cookie').to.equal(false);
      expect(cookie.value).to.equal(id);
    }
    expect(jar.get()).to.equal(id);
    const next = await call(run, jar, 'get', '/');
    expect(next.body).to.deep.equal({ id: seeded.body.id, isNew: false });
  });

  it('toJSON() gives a copy of all the data', async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      ctx.session.set('a', { deep: [1, 2] });
      ctx.session.set('b', 'x');
      const json = ctx.session.toJSON() as { a: { deep: number[] } };
      json.a.deep.push(3);
      (json as Record<string, unknown>).c = 'added';
      ctx.body = { json: JSON.parse(JSON.stringify(ctx.session)), keys: ctx.session.keys() };
    });
    const res = await call(run, new Jar(), 'post');
    expect(res.body).to.deep.equal({ json: { a: { deep: [1, 2] }, b: 'x' }, keys: ['a', 'b'] });
  });

  it('console.log(ctx.session) shows the flags and the data, never the ID (a credential logs must not hold)', async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      if (ctx.path === '/login') ctx.session.set('user', { name: 'ann', roles: ['admin'] });
      ctx.body = { shown: inspect(ctx.session, { depth: 4 }), id: ctx.session.id };
    });
    const jar = new Jar();
    const first = await call(run, jar, 'post', '/login');
    const oneLine = (shown: string): string => shown.replace(/\s+/g, ' ');
    expect(oneLine(first.body.shown)).to.equal("Session { isNew: true, changed: true, data: { user: { name: 'ann', roles: [ 'admin' ] } } }");
    const next = await call(run, jar, 'get', '/');
    expect(oneLine(next.body.shown)).to.equal("Session { isNew: false, changed: false, data: { user: { name: 'ann', roles: [ 'admin' ] } } }");
    expect(next.body.shown).to.not.include(next.body.id);
  });

  it('isNew is true on the first request and false once the session is stored', async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      const isNew = ctx.session.isNew;
      ctx.session.set('visits', ((ctx.session.get<number>('visits')) ?? 0) + 1);
      ctx.body = { isNew };
    });
    const jar = new Jar();
    expect((await call(run, jar, 'post')).body).to.deep.equal({ isNew: true });
    expect((await call(run, jar, 'post')).body).to.deep.equal({ isNew: false });
  });

  it('changed is false until set() and true after it', async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      const before = ctx.session.changed;
      ctx.session.set('a', 1);
      ctx.body = { before, after: ctx.session.changed };
    });
    const jar = new Jar();
    expect((await call(run, jar, 'post')).body).to.deep.equal({ before: false, after: true });
    expect((await call(run, jar, 'post')).body).to.deep.equal({ before: false, after: true });
  });

  it('ctx.session is a Session whose id is 64 lowercase hex and is what the cookie carries', async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      ctx.session.set('a', 1);
      ctx.body = { id: ctx.session.id, isSession: ctx.session instanceof Session };
    });
    const jar = new Jar();
    const res = await call(run, jar, 'post');
    expect(res.body.isSession).to.equal(true);
    expect(res.body.id).to.match(HEX64);
    expect(jar.get()).to.equal(res.body.id);
  });

  it('10,000 generated IDs are all 64 lowercase hex and all distinct', async () => {
    // A new session's ID and every regenerate() come from the generator.
    const run = await start({ store: memoryStore() }, async (ctx) => {
      const ids = [ctx.session.id];
      while (ids.length < 10_000) {
        await ctx.session.regenerate();
        ids.push(ctx.session.id);
      }
      ctx.body = ids;
    });
    const res = await call(run, new Jar());
    const ids = res.body as string[];
    expect(ids).to.have.length(10_000);
    expect(ids.filter((id) => !HEX64.test(id))).to.deep.equal([]);
    expect(new Set(ids).size).to.equal(10_000);
  });

  it('new sessions on separate requests all get distinct IDs', async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      ctx.session.set('a', 1);
      ctx.body = 'ok';
    });
    const ids: string[] = [];
    for (let batch = 0; batch < 10; batch++) {
      const jars = Array.from({ length: 20 }, () => new Jar());
      await Promise.all(jars.map((jar) => call(run, jar, 'post')));
      ids.push(...jars.map((jar) => jar.get() as string));
    }
    expect(ids.every((id) => HEX64.test(id))).to.equal(true);
    expect(new Set(ids).size).to.equal(200);
  });
});

// --------------------------------------------------------------------------

class Point {
  x = 1;
}

function circularObject(): unknown {
  const o: Record<string, unknown> = { a: 1 };
  o.self = o;
  return o;
}

function circularArray(): unknown {
  const a: unknown[] = [1];
  a.push([a]);
  return a;
}

function sparseArray(): unknown {
  const a = [1, 2, 3];
  delete a[1];
  return a;
}

function holeyArray(): unknown {
  const a: unknown[] = [];
  a[2] = 'x';
  return a;
}

/** `{ a: { a: … { a: 1 } } }`, `depth` objects deep. */
function nested(depth: number): unknown {
  let value: unknown = 1;
  for (let i = 0; i < depth; i++) value = { a: value };
  return value;
}

const REFUSED: Array<[string, () => unknown]> = [
  ['a function', () => () => 1],
  ['a symbol', () => Symbol('s')],
  ['an object with a symbol key (JSON drops it)', () => ({ a: 1, [Symbol('s')]: 2 })],
  ['a bigint', () => 10n],
  ['undefined', () => undefined],
  ['NaN', () => NaN],
  ['Infinity', () => Infinity],
  ['-Infinity', () => -Infinity],
  ['a circular object', circularObject],
  ['a circular array', circularArray],
  ['a Date', () => new Date(0)],
  ['a Map', () => new Map([['a', 1]])],
  ['a Set', () => new Set([1])],
  ['a class instance', () => new Point()],
  ['a typed array', () => new Uint8Array([1, 2])],
  ['a Buffer', () => Buffer.from('ab')],
  ['an object with toJSON', () => ({ toJSON: () => 'x' })],
  ['an object with a non-enumerable property', () => Object.defineProperty({ a: 1 }, 'hidden', { value: 2, enumerable: false })],
  ['an array with a non-enumerable property', () => Object.defineProperty([1], 'hidden', { value: 2, enumerable: false })],
  ['a sparse array (deleted element)', sparseArray],
  ['a sparse array (holes)', holeyArray],
  ['a RegExp', () => /x/],
  ['a boxed string', () => new String('x')],
  ['an object inheriting from a null-prototype object (JSON drops what it inherits)', () => Object.create(Object.assign(Object.create(null), { inherited: 1 }))],
  ['a Date from another realm (a vm context)', () => runInNewContext('new Date(0)')],
  ['a class instance from another realm', () => runInNewContext('new (class Point { constructor() { this.x = 1; } })()')],
  ['an object nested 1,001 deep (one past the 1,000 the README allows)', () => nested(1001)],
  ['an object nested 100,000 deep (not a RangeError from the stack)', () => nested(100_000)],
];

describe('Session: plain values made in another realm (a vm context, as Jest\'s test environment makes them)', () => {
  it('set() takes plain objects and arrays of another realm, and they come back equal in the next request', async () => {
    const made = runInNewContext(`({
      object: { user: 'alice', roles: ['admin'], nested: { a: [1, { b: null }] } },
      array: [1, 'two', { three: 3 }],
      parsed: JSON.parse('{"cart":[1,2]}'),
    })`) as Record<string, unknown>;
    const run = await start({ store: memoryStore() }, (ctx) => {
      if (ctx.method === 'POST') for (const key of Object.keys(made)) ctx.session.set(key, made[key]);
      ctx.body = ctx.session.toJSON();
    });
    const jar = new Jar();
    expect((await call(run, jar, 'post')).status).to.equal(200);
    expect((await call(run, jar, 'get')).body).to.deep.equal({
      object: { user: 'alice', roles: ['admin'], nested: { a: [1, { b: null }] } },
      array: [1, 'two', { three: 3 }],
      parsed: { cart: [1, 2] },
    });
  });
});

describe('Session: set() refuses what JSON cannot carry unchanged', () => {
  for (const [label, make] of REFUSED) {
    it(`set() refuses ${label}, at any depth, with a TypeError and keeps the previous value`, async () => {
      const run = await start({ store: memoryStore() }, (ctx) => {
        if (ctx.path === '/seed') ctx.session.set('k', { ok: 1 });
        if (ctx.path === '/try') {
          const shapes: Array<[string, unknown]> = [
            ['top', make()],
            ['in object', { a: make() }],
            ['deep', { a: [{ b: [1, make()] }] }],
          ];
          const results: Record<string, unknown> = {};
          for (const [where, value] of shapes) {
            let outcome: string;
            try {
              ctx.session.set('k', value);
              outcome = 'accepted';
            } catch (error) {
              outcome = error instanceof TypeError ? 'TypeError' : `other: ${String(error)}`;
            }
            results[where] = { outcome, kept: ctx.session.get('k') ?? null };
            try {
              ctx.session.set('fresh', value);
            } catch {
              // refused: the key must stay absent
            }
            results[`${where}, new key`] = { has: ctx.session.has('fresh') };
          }
          ctx.body = results;
          return;
        }
        ctx.body = { k: ctx.session.get('k') ?? null, fresh: ctx.session.has('fresh') };
      });
      const jar = new Jar();
      await call(run, jar, 'post', '/seed');
      const tried = await call(run, jar, 'post', '/try');
      for (const where of ['top', 'in object', 'deep']) {
        expect(tried.body[where], where).to.deep.equal({ outcome: 'TypeError', kept: { ok: 1 } });
        expect(tried.body[`${where}, new key`], `${where}, new key`).to.deep.equal({ has: false });
      }
      const next = await call(run, jar, 'get', '/');
      expect(next.body).to.deep.equal({ k: { ok: 1 }, fresh: false });
    });
  }
});

describe('Session: the TypeError of a refused value names the place in it', () => {
  it('with the key as JSON, then the path of object keys and array indices down to what was refused', async () => {
    const deep: Record<string, unknown> = { z: NaN };
    let deepest: Record<string, unknown> = deep;
    for (let i = 0; i < 3; i++) deepest = { [`k${i}`]: deepest };
    const circular: Record<string, unknown> = { list: [] };
    (circular.list as unknown[]).push({ back: circular });
    const run = await start({ store: memoryStore() }, (ctx) => {
      const messages: string[] = [];
      const attempts: Array<[string, unknown]> = [
        ['cart', { items: [1, { price: Infinity }] }],
        ['say "hi"', [[undefined]]],
        ['n', deepest],
        ['loop', circular],
        ['fn', { a: { b: () => 1 } }],
        ['deep', JSON.parse(`${'['.repeat(1001)}1${']'.repeat(1001)}`)],
      ];
      for (const [key, value] of attempts) {
        try {
          ctx.session.set(key, value);
          messages.push('accepted');
        } catch (error) {
          messages.push((error as Error).message);
        }
      }
      ctx.body = messages;
    });
    const res = await call(run, new Jar(), 'post', '/');
    expect(res.body).to.deep.equal([
      'koa-locked-session: session value "cart".items[1].price is a non-finite number (Infinity), which JSON cannot carry unchanged',
      'koa-locked-session: session value "say \\"hi\\""[0][0] is undefined, which JSON cannot carry unchanged',
      'koa-locked-session: session value "n".k2.k1.k0.z is a non-finite number (NaN), which JSON cannot carry unchanged',
      'koa-locked-session: session value "loop".list[0].back is a circular reference, which JSON cannot carry unchanged',
      'koa-locked-session: session value "fn".a.b is a function, which JSON cannot carry unchanged',
      `koa-locked-session: ${`session value "deep"${'[0]'.repeat(1000)}`.slice(0, 200)} is nested deeper than 1000 objects or arrays, the most a session value may nest`,
    ]);
  });
});

describe('Session: values JSON carries come back exactly', () => {
  const VALUES: Record<string, unknown> = {
    string: 'héllo \u0000 ✓ 😀',
    empty: '',
    int: 42,
    negative: -7.25,
    big: Number.MAX_VALUE,
    tiny: 5e-324,
    safe: Number.MIN_SAFE_INTEGER,
    yes: true,
    no: false,
    nothing: null,
    array: [1, 'two', null, [3, [4]], { five: 5 }],
    emptyArray: [],
    emptyObject: {},
    nested: { a: { b: { c: { d: [{ e: 'deep' }] } } } },
    thousandDeep: nested(1000),
  };

  it('strings, finite numbers, booleans, null, arrays and plain objects come back equal, in this request and the next', async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      const equal: Record<string, boolean> = {};
      for (const [key, value] of Object.entries(VALUES)) {
        if (ctx.method === 'POST') ctx.session.set(key, value);
        equal[key] = isDeepStrictEqual(ctx.session.get(key), value);
      }
      ctx.body = equal;
    });
    const jar = new Jar();
    const all = Object.fromEntries(Object.keys(VALUES).map((k) => [k, true]));
    expect((await call(run, jar, 'post')).body).to.deep.equal(all);
    expect((await call(run, jar, 'get')).body).to.deep.equal(all);
  });

  it('2,000 generated values come back equal in the next request: strings with quotes, backslashes, control characters and lone surrogates, numbers of every shape', async () => {
    // Values are kept as JSON text and decoded when read, through a quick path for plain strings and numbers (see parseJson).
    const codeUnit = fc.integer({ min: 0, max: 0xffff }).map((unit) => String.fromCharCode(unit));
    const generated = fc.sample(
      fc.oneof(
        fc.string({ unit: fc.oneof(codeUnit, fc.constantFrom('"', '\\', '\n', 'a', '\u0000', '\ud800')) }),
        fc.double({ noNaN: true, noDefaultInfinity: true }),
        fc.integer(),
        fc.jsonValue(),
      ),
      { numRuns: 2_000, seed: 6 },
    );
    const expected = generated.map((value) => JSON.parse(JSON.stringify(value)) as unknown);
    const run = await start({ store: memoryStore() }, (ctx) => {
      if (ctx.method === 'POST') generated.forEach((value, i) => ctx.session.set(`v${i}`, value));
      ctx.body = { differ: expected.flatMap((value, i) => (isDeepStrictEqual(ctx.session.get(`v${i}`), value) ? [] : [i])) };
    });
    const jar = new Jar();
    expect((await call(run, jar, 'post')).body).to.deep.equal({ differ: [] });
    expect((await call(run, jar, 'get')).body, 'read back in the next request').to.deep.equal({ differ: [] });
  });

  it('a stored value is decoded exactly as JSON.parse decodes it, malformed text included (50,000 texts)', () => {
    const piece = fc.constantFrom('"', '\\', '\\"', '\\u0041', '\u0001', '\u001f', '\n', ' ', 'a', 'é', '\ud800', '-', '+', '0', '1', '9', '.', 'e', 'E', '[', ']', '{', '}', ':', ',', 'null', 'true');
    const text = fc.oneof(
      fc.array(piece, { maxLength: 8 }).map((parts) => parts.join('')),
      fc.array(fc.constantFrom('"', 'a', '1', '-'), { maxLength: 6 }).map((parts) => parts.join('')),
      fc.jsonValue().map((value) => JSON.stringify(value)),
    );
    const outcome = (decode: (json: string) => unknown, json: string): unknown => {
      try {
        return { value: decode(json) };
      } catch (error) {
        return { threw: (error as Error).name };
      }
    };
    fc.assert(
      fc.property(text, (json) => isDeepStrictEqual(outcome(parseJson, json), outcome(JSON.parse, json))),
      // A regular expression with the m flag would take these for plain values.
      { numRuns: 50_000, seed: 6, examples: [['"\u001f"'], ['1\nx'], ['"a"\n"b"'], ['"a\n"']] },
    );
  });

  it('-0 comes back as 0, in this request and the next', async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      if (ctx.method === 'POST') {
        ctx.session.set('z', -0);
        ctx.session.set('nested', { list: [-0] });
      }
      const z = ctx.session.get('z');
      const nested = ctx.session.get<{ list: number[] }>('nested');
      ctx.body = { z: Object.is(z, 0), nested: Object.is(nested?.list[0], 0) };
    });
    const jar = new Jar();
    expect((await call(run, jar, 'post')).body).to.deep.equal({ z: true, nested: true });
    expect((await call(run, jar, 'get')).body).to.deep.equal({ z: true, nested: true });
  });

  it('an object reached twice (no cycle) and a value of thousands of objects are accepted and come back equal, in this request and the next', async () => {
    // JSON carries a shared object as two copies, and has no limit on how many objects a value holds (only on how deep they nest).
    const shared = { n: 1 };
    const values: Record<string, unknown> = {
      twice: { a: shared, b: shared, list: [shared, [shared]] },
      many: Array.from({ length: 2_000 }, (_, i) => ({ i, tags: [{ t: i }] })),
    };
    const run = await start({ store: memoryStore() }, (ctx) => {
      const outcome: Record<string, unknown> = {};
      for (const [key, value] of Object.entries(values)) {
        if (ctx.method === 'POST') {
          try {
            ctx.session.set(key, value);
          } catch (error) {
            outcome[key] = (error as Error).message;
            continue;
          }
        }
        outcome[key] = isDeepStrictEqual(ctx.session.get(key), value);
      }
      ctx.body = outcome;
    });
    const jar = new Jar();
    expect((await call(run, jar, 'post')).body).to.deep.equal({ twice: true, many: true });
    expect((await call(run, jar, 'get')).body).to.deep.equal({ twice: true, many: true });
  });

  it("a null-prototype object (what querystring.parse gives) is accepted, and its data comes back as a plain object's, in this request and the next", async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      if (ctx.method === 'POST') {
        const filters = Object.assign(Object.create(null) as Record<string, unknown>, { q: 'shoes', tags: ['red', 'blue'] });
        ctx.session.set('filters', filters);
        ctx.session.set('nested', { inner: Object.assign(Object.create(null) as Record<string, unknown>, { page: 2 }) });
      }
      const filters = ctx.session.get<object>('filters');
      ctx.body = { filters, nested: ctx.session.get('nested'), plain: filters !== undefined && Object.getPrototypeOf(filters) === Object.prototype };
    });
    const jar = new Jar();
    const expected = { filters: { q: 'shoes', tags: ['red', 'blue'] }, nested: { inner: { page: 2 } }, plain: true };
    const first = await call(run, jar, 'post');
    expect(first.status, String(first.text)).to.equal(200);
    expect(first.body).to.deep.equal(expected);
    expect((await call(run, jar, 'get')).body).to.deep.equal(expected);
  });

  it('null is a value: has() is true and get() gives null', async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      if (ctx.method === 'POST') ctx.session.set('n', null);
      ctx.body = { has: ctx.session.has('n'), value: ctx.session.get('n') };
    });
    const jar = new Jar();
    expect((await call(run, jar, 'post')).body).to.deep.equal({ has: true, value: null });
    expect((await call(run, jar, 'get')).body).to.deep.equal({ has: true, value: null });
  });
});

describe('Session: set() stores a copy and get() returns a copy', () => {
  it('mutating an object after set() does not change the session, in this request or the next', async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      if (ctx.method === 'POST') {
        const cart = { items: ['apple'], meta: { count: 1 } };
        ctx.session.set('cart', cart);
        cart.items.push('pear');
        cart.meta.count = 99;
      }
      ctx.body = ctx.session.get('cart');
    });
    const jar = new Jar();
    expect((await call(run, jar, 'post')).body).to.deep.equal({ items: ['apple'], meta: { count: 1 } });
    expect((await call(run, jar, 'get')).body).to.deep.equal({ items: ['apple'], meta: { count: 1 } });
  });

  for (const method of ['post', 'get'] as const) {
    it(`mutating an object after set() on a stored session (${method.toUpperCase()}) does not change what is saved`, async () => {
      // The first save writes the session whole; a later request's commit replays its set()s on the stored session.
      const run = await start({ store: memoryStore() }, (ctx) => {
        if (ctx.path === '/seed') ctx.session.set('user', 'ada');
        if (ctx.path === '/set') {
          const cart = { items: ['apple'], meta: { count: 1 } };
          ctx.session.set('cart', cart);
          cart.items.push('pear');
          cart.meta.count = 99;
        }
        ctx.body = { cart: ctx.session.get('cart') ?? null };
      });
      const jar = new Jar();
      await call(run, jar, 'post', '/seed');
      expect((await call(run, jar, method, '/set')).body).to.deep.equal({ cart: { items: ['apple'], meta: { count: 1 } } });
      expect((await call(run, jar, 'get', '/')).body, 'the next request').to.deep.equal({ cart: { items: ['apple'], meta: { count: 1 } } });
    });
  }

  it('mutating an object got from get() does not change the session, in this request or the next', async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      if (ctx.path === '/seed') ctx.session.set('cart', { items: ['apple'] });
      if (ctx.path === '/mutate') {
        const got = ctx.session.get<{ items: string[] }>('cart');
        got?.items.push('pear');
        const again = ctx.session.get<{ items: string[] }>('cart');
        ctx.body = { again };
        return;
      }
      ctx.body = { again: ctx.session.get('cart') };
    });
    const jar = new Jar();
    await call(run, jar, 'post', '/seed');
    expect((await call(run, jar, 'get', '/mutate')).body).to.deep.equal({ again: { items: ['apple'] } });
    expect((await call(run, jar, 'post', '/mutate')).body).to.deep.equal({ again: { items: ['apple'] } });
    expect((await call(run, jar, 'get', '/')).body).to.deep.equal({ again: { items: ['apple'] } });
  });

  it('a mutated copy changes the session once it is set() again', async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      if (ctx.path === '/seed') ctx.session.set('cart', { items: ['apple'] });
      if (ctx.path === '/add') {
        const cart = ctx.session.get<{ items: string[] }>('cart') as { items: string[] };
        cart.items.push('pear');
        ctx.session.set('cart', cart);
      }
      ctx.body = ctx.session.get('cart');
    });
    const jar = new Jar();
    await call(run, jar, 'post', '/seed');
    await call(run, jar, 'post', '/add');
    expect((await call(run, jar, 'get', '/')).body).to.deep.equal({ items: ['apple', 'pear'] });
  });

  it('two get() calls return objects that do not share state', async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      ctx.session.set('o', { list: [1] });
      const a = ctx.session.get<{ list: number[] }>('o') as { list: number[] };
      const b = ctx.session.get<{ list: number[] }>('o') as { list: number[] };
      a.list.push(2);
      ctx.body = { same: a === b, b };
    });
    const res = await call(run, new Jar(), 'post');
    expect(res.body).to.deep.equal({ same: false, b: { list: [1] } });
  });

  it('mutating an object inside an array got from get() does not change the session, in this request or the next', async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      if (ctx.method === 'POST') {
        ctx.session.set('lines', [{ sku: 'apple', qty: 1 }]);
        const got = ctx.session.get<Array<{ qty: number }>>('lines') as Array<{ qty: number }>;
        got[0].qty = 99;
      }
      ctx.body = { lines: ctx.session.get('lines') };
    });
    const jar = new Jar();
    expect((await call(run, jar, 'post')).body).to.deep.equal({ lines: [{ sku: 'apple', qty: 1 }] });
    expect((await call(run, jar, 'get')).body).to.deep.equal({ lines: [{ sku: 'apple', qty: 1 }] });
  });
});

describe('Session: any string is a key', () => {
  const SPECIAL = ['__proto__', 'constructor', 'hasOwnProperty', '', 'toString', 'valueOf', 'prototype'];

  it('__proto__, constructor, hasOwnProperty and "" are ordinary keys that round-trip across requests', async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      if (ctx.method === 'POST') SPECIAL.forEach((key, i) => ctx.session.set(key, { i, key }));
      ctx.body = {
        values: SPECIAL.map((key) => ctx.session.get(key) ?? null),
        has: SPECIAL.map((key) => ctx.session.has(key)),
        keys: ctx.session.keys().sort(),
      };
    });
    const jar = new Jar();
    const expected = {
      values: SPECIAL.map((key, i) => ({ i, key })),
      has: SPECIAL.map(() => true),
      keys: [...SPECIAL].sort(),
    };
    expect((await call(run, jar, 'post')).body).to.deep.equal(expected);
    expect((await call(run, jar, 'get')).body).to.deep.equal(expected);
  });

  it('a fresh session has no inherited keys: has("constructor") is false and get("toString") is undefined', async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      if (ctx.method === 'POST') ctx.session.set('a', 1);
      ctx.body = {
        has: SPECIAL.map((key) => ctx.session.has(key)),
        got: SPECIAL.map((key) => ctx.session.get(key) === undefined),
        keys: ctx.session.keys(),
      };
    });
    const jar = new Jar();
    const none = { has: SPECIAL.map(() => false), got: SPECIAL.map(() => true) };
    expect((await call(run, jar, 'get')).body).to.deep.equal({ ...none, keys: [] });
    await call(run, jar, 'post');
    expect((await call(run, jar, 'get')).body).to.deep.equal({ ...none, keys: ['a'] });
  });

  it('setting __proto__ pollutes no prototype, in this request or the next', async () => {
    const protoNames = Object.getOwnPropertyNames(Object.prototype).sort();
    const run = await start({ store: memoryStore() }, (ctx) => {
      if (ctx.method === 'POST') {
        ctx.session.set('__proto__', { polluted: 'yes' });
        ctx.session.set('constructor', { prototype: { polluted: 'yes' } });
      }
      const json = ctx.session.toJSON();
      ctx.body = {
        polluted: ({} as Record<string, unknown>).polluted ?? null,
        jsonProtoIsObject: Object.getPrototypeOf(json) === Object.prototype,
        jsonOwnProto: Object.prototype.hasOwnProperty.call(json, '__proto__'),
        jsonPolluted: (json as Record<string, unknown>).polluted ?? null,
      };
    });
    const jar = new Jar();
    const clean = { polluted: null, jsonProtoIsObject: true, jsonOwnProto: true, jsonPolluted: null };
    expect((await call(run, jar, 'post')).body).to.deep.equal(clean);
    expect((await call(run, jar, 'get')).body).to.deep.equal(clean);
    expect(({} as Record<string, unknown>).polluted).to.equal(undefined);
    expect(Object.getOwnPropertyNames(Object.prototype).sort()).to.deep.equal(protoNames);
  });

  it('a value holding a __proto__ key keeps it as data and pollutes nothing', async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      if (ctx.method === 'POST') ctx.session.set('v', JSON.parse('{"__proto__": {"polluted": 1}, "a": [{"__proto__": {"polluted": 2}}]}'));
      const v = ctx.session.get<Record<string, unknown>>('v') as Record<string, unknown>;
      ctx.body = {
        own: Object.prototype.hasOwnProperty.call(v, '__proto__'),
        inner: Object.getOwnPropertyDescriptor(v, '__proto__')?.value ?? null,
        protoIsObject: Object.getPrototypeOf(v) === Object.prototype,
        polluted: (v as { polluted?: unknown }).polluted ?? null,
        global: ({} as Record<string, unknown>).polluted ?? null,
      };
    });
    const jar = new Jar();
    const expected = { own: true, inner: { polluted: 1 }, protoIsObject: true, polluted: null, global: null };
    expect((await call(run, jar, 'post')).body).to.deep.equal(expected);
    expect((await call(run, jar, 'get')).body).to.deep.equal(expected);
  });

  it('no key is reserved: names a session library might keep for itself round-trip as data', async () => {
    const names = ['data', 'createdAt', 'touchedAt', 'expires', '_expire', '_maxAge', 'cookie', 'id', 'maxAge'];
    const run = await start({ store: memoryStore() }, (ctx) => {
      if (ctx.method === 'POST') names.forEach((key) => ctx.session.set(key, `user ${key}`));
      ctx.body = { values: names.map((key) => ctx.session.get(key) ?? null), keys: ctx.session.keys().sort() };
    });
    const jar = new Jar();
    const expected = { values: names.map((key) => `user ${key}`), keys: [...names].sort() };
    expect((await call(run, jar, 'post')).body).to.deep.equal(expected);
    expect((await call(run, jar, 'get')).body).to.deep.equal(expected);
    expect((await call(run, jar, 'get')).body).to.deep.equal(expected);
  });

  it('set() with a key that is not a string (plain JavaScript) throws a TypeError at once and stores nothing', async () => {
    // A number key would read back in the next request only as the string '42': set() what you cannot get().
    const run = await start({ store: memoryStore() }, (ctx) => {
      if (ctx.method === 'POST') {
        const refused: Record<string, string> = {};
        for (const [label, key] of [['a number', 42], ['null', null], ['an object', {}]] as const) {
          try {
            ctx.session.set(key as unknown as string, 'x');
            refused[label] = 'accepted';
          } catch (error) {
            refused[label] = error instanceof TypeError ? 'TypeError' : `other: ${String(error)}`;
          }
        }
        ctx.session.set('a', 1);
        ctx.body = { refused, keys: ctx.session.keys() };
        return;
      }
      ctx.body = { keys: ctx.session.keys(), value: ctx.session.get('42') ?? null };
    });
    const jar = new Jar();
    expect((await call(run, jar, 'post')).body).to.deep.equal({
      refused: { 'a number': 'TypeError', null: 'TypeError', 'an object': 'TypeError' },
      keys: ['a'],
    });
    expect((await call(run, jar, 'get')).body).to.deep.equal({ keys: ['a'], value: null });
  });
});

describe('Session: a change after the commit', () => {
  it('is lost, but the response and its cookie are unharmed, and the process is warned once (code after next() in an outer middleware)', async () => {
    const late = async (ctx: Context, next: () => Promise<unknown>) => {
      await next();
      if (ctx.path === '/login') ctx.session.set('lastSeen', 1);
    };
    const run = await start({ store: memoryStore() }, async (ctx) => {
      if (ctx.path === '/seed') ctx.session.set('cart', 1);
      if (ctx.path === '/login') {
        await ctx.session.regenerate();
        ctx.session.set('user', 'ann');
      }
      ctx.body = ctx.session.toJSON();
    }, { before: [late] });
    const jar = new Jar();
    await call(run, jar, 'post', '/seed');
    const oldId = jar.get('session_id');
    let login: Awaited<ReturnType<typeof call>> | undefined;
    const warnings = await warningsDuring('KOA_LOCKED_SESSION_LATE_CHANGE', async () => {
      login = await call(run, jar, 'post', '/login');
      await call(run, jar, 'post', '/login');
    });

    expect(login?.status).to.equal(200);
    expect(jar.get('session_id'), 'the new ID reached the browser').to.match(HEX64).and.not.equal(oldId);
    expect((await call(run, jar, 'get', '/me')).body).to.deep.equal({ cart: 1, user: 'ann' });
    expect(warnings).to.have.length(1);
    expect(warnings[0]).to.include('ctx.session.set()');
  });

  it('from a task the handler did not await does not crash the process: the change is lost with a warning', async () => {
    let done!: () => void;
    const finished = new Promise<void>((resolve) => (done = resolve));
    const failures: unknown[] = [];
    const onRejection = (reason: unknown) => failures.push(reason);
    process.on('unhandledRejection', onRejection);
    try {
      const run = await start({ store: memoryStore() }, (ctx) => {
        if (ctx.path === '/seed') ctx.session.set('a', 1);
        if (ctx.path === '/later') {
          const session = ctx.session;
          setTimeout(() => {
            void session.regenerate().then(done, done);
          }, 20);
        }
        ctx.body = ctx.session.toJSON();
      });
      const jar = new Jar();
      await call(run, jar, 'post', '/seed');
      const id = jar.get('session_id');
      const warnings = await warningsDuring('KOA_LOCKED_SESSION_LATE_CHANGE', async () => {
        expect((await call(run, jar, 'get', '/later')).status).to.equal(200);
        await finished;
      });
      expect(warnings).to.have.length(1);
      expect(failures).to.deep.equal([]);
      expect((await call(run, jar, 'get', '/me')).body).to.deep.equal({ a: 1 });
      expect(jar.get('session_id')).to.equal(id);
    } finally {
      process.off('unhandledRejection', onRejection);
    }
  });
});

describe("Session: express-session's and koa-session's callbacks", () => {
  for (const method of ['regenerate', 'destroy'] as const) {
    it(`${method}(callback), which would never call back, fails the request at once with a TypeError saying to await it, and changes nothing`, async () => {
      const store = memoryStore();
      const errors: Error[] = [];
      let calledBack = false;
      const run = await start({ store }, (ctx) => {
        if (ctx.path === '/login') ctx.session.set('user', 'ann');
        // Plain JavaScript, not awaited, as such code is written: the TypeError is thrown, not a rejection left unhandled.
        if (ctx.path === '/callback') void (ctx.session[method] as (callback: () => void) => Promise<void>)(() => (calledBack = true));
        ctx.body = ctx.session.toJSON();
      });
      run.app.on('error', (error: Error) => errors.push(error));
      const jar = new Jar();
      await call(run, jar, 'post', '/login');
      const id = jar.get('session_id');

      const res = await call(run, jar, 'post', '/callback');
      expect(res.status).to.equal(500);
      expect(errors[0]).to.be.instanceOf(TypeError);
      expect(errors[0]?.message).to.equal(`koa-locked-session: ctx.session.${method}() takes no callback; it returns a promise: await ctx.session.${method}(), then go on`);
      expect(calledBack).to.equal(false);
      expect(setCookies(res)).to.deep.equal([]);
      expect(await store.get(id as string)).to.deep.include({ data: { user: 'ann' } });
    });
  }
});

describe('Session: replacing ctx.session', () => {
  async function app() {
    const store = memoryStore();
    const run = await start({ store }, (ctx) => {
      const replaced = ctx as unknown as { session: unknown };
      if (ctx.path === '/login') ctx.session.set('user', 'ann');
      if (ctx.path === '/logout-koa-session-style') replaced.session = null;
      if (ctx.path === '/logout-undefined') replaced.session = undefined;
      if (ctx.path === '/replace') replaced.session = { views: 1 };
      if (ctx.path === '/property') (ctx.session as unknown as Record<string, unknown>).views = 1; // koa-session's way to set
      if (ctx.path === '/lifetime') Object.assign(ctx.session, { views: 2, maxAge: 1000 }); // and its lifetime per session
      ctx.body = ctx.path === '/me' ? ctx.session.toJSON() : 'ok';
    });
    const jar = new Jar();
    await call(run, jar, 'post', '/login');
    return { run, jar, store };
  }

  for (const [assigned, path] of [["null (koa-session's way to log out)", '/logout-koa-session-style'], ['undefined', '/logout-undefined']]) {
    it(`ctx.session = ${assigned} logs out as destroy() does: the session is gone and its cookie expired`, async () => {
      const { run, jar, store } = await app();
      const id = jar.get('session_id');
      const res = await call(run, jar, 'post', path);
      expect(res.status).to.equal(200);
      const cookie = cookieNamed(res, 'session_id');
      expect(cookie !== undefined && isExpired(cookie), 'the cookie is expired').to.equal(true);
      expect(store.size).to.equal(0);
      const me = await call(run, new Jar().set('session_id', id as string), 'get', '/me');
      expect(me.body).to.deep.equal({});
    });
  }

  it('ctx.session = null whose removal the store refuses fails the request with 503, and the code around the session middleware finds the session in ctx.session, as it was', async () => {
    const store = new RecordingStore();
    const seenAround: unknown[] = [];
    const run = await start({ store }, (ctx) => {
      if (ctx.path === '/login') ctx.session.set('user', 'ann');
      if (ctx.path === '/logout') (ctx as unknown as { session: unknown }).session = null;
      ctx.body = 'ok';
    }, {
      before: [async (ctx: Context, next: () => Promise<unknown>) => {
        try {
          await next();
        } finally {
          // An error page, an access log: what they read of ctx.session.
          seenAround.push(ctx.session instanceof Session ? ctx.session.get('user') : ctx.session);
        }
      }],
    });
    const jar = new Jar();
    await call(run, jar, 'post', '/login');

    store.fail.add('destroy');
    const res = await call(run, jar, 'post', '/logout');

    expect(res.status, 'a logout the store could not carry out').to.equal(503);
    expect(seenAround, 'ctx.session after the login, then after the failed logout').to.deep.equal(['ann', 'ann']);
    expect(store.map.get(jar.get('session_id') as string)).to.deep.include({ data: { user: 'ann' } });
  });

  it('any other value put in ctx.session is not stored: the session stays as it was, and the process is warned once', async () => {
    const { run, jar } = await app();
    const warnings = await warningsDuring('KOA_LOCKED_SESSION_REPLACED', async () => {
      expect((await call(run, jar, 'post', '/replace')).status).to.equal(200);
      await call(run, jar, 'post', '/replace');
    });
    expect(warnings).to.have.length(1);
    expect((await call(run, jar, 'get', '/me')).body).to.deep.equal({ user: 'ann' });
  });
  it("a property assigned on ctx.session (koa-session's way, ctx.session.views = 1) is not stored, and the process is warned once with the set() call to use", async () => {
    const { run, jar, store } = await app();
    const warnings = await warningsDuring('KOA_LOCKED_SESSION_PROPERTY', async () => {
      expect((await call(run, jar, 'post', '/property')).status).to.equal(200);
      await call(run, jar, 'post', '/property');
    });
    expect(warnings).to.have.length(1);
    expect(warnings[0]).to.include('ctx.session.views was assigned as a property').and.include('ctx.session.set("views", value)');
    expect((await call(run, jar, 'get', '/me')).body).to.deep.equal({ user: 'ann' });
    expect(store.size).to.equal(1);
  });

  it("ctx.session.maxAge assigned (koa-session's lifetime per session) changes nothing, and the warning says so instead of suggesting set()", async () => {
    const { run, jar } = await app();
    let property: string[] = [];
    const lifetime = await warningsDuring('KOA_LOCKED_SESSION_LIFETIME', async () => {
      // Assigned after another property in the same request: each is warned of.
      property = await warningsDuring('KOA_LOCKED_SESSION_PROPERTY', async () => {
        expect((await call(run, jar, 'post', '/lifetime')).status).to.equal(200);
      });
    });
    expect(lifetime).to.have.length(1);
    expect(lifetime[0]).to.include('ctx.session.maxAge was assigned').and.include('lifetime per session is not offered').and.include('maxAge option of session()');
    expect(lifetime[0], "koa-session's maxAge = 'session' has an option here").to.include('cookieExpires: false gives a cookie that ends with the browser session');
    expect(lifetime[0]).to.not.include('set(');
    expect(property).to.have.length(1);
    expect(property[0]).to.include('ctx.session.views');
    expect((await call(run, jar, 'get', '/me')).body).to.deep.equal({ user: 'ann' });
  });

  it('no property warning for a handler that uses get and set', async () => {
    const { run, jar } = await app();
    const warnings = await warningsDuring('KOA_LOCKED_SESSION_PROPERTY', async () => {
      await call(run, jar, 'post', '/login');
      await call(run, jar, 'get', '/me');
    });
    expect(warnings).to.deep.equal([]);
  });

  it("with koa-session's session(app) still called on the app (a migration half done), whose ctx.session never holds this one's session, each request is answered, getSession says why, and the process is warned to remove it", async () => {
    const koa = new Koa();
    koa.keys = ['a migration'];
    koa.use(session());
    koa.use((ctx) => {
      try {
        getSession(ctx);
      } catch (error) {
        ctx.body = (error as Error).message;
      }
    });
    koaSession(koa); // defines ctx.session on app.context, whether its middleware is used or not
    // Its accessor, counted: a middleware that kept putting its session back would write it for ever,
    // in a loop that leaves no turn of the event loop for a timeout. After 100 writes ctx.session keeps
    // what is written, so that such a loop ends, and the count shows it.
    const accessor = Object.getOwnPropertyDescriptor(koa.context, 'session')!;
    let writes = 0;
    Object.defineProperty(koa.context, 'session', {
      configurable: true,
      get: accessor.get,
      set(this: Context, value: unknown) {
        if (++writes > 100) Object.defineProperty(this, 'session', { value, writable: true, configurable: true });
        else accessor.set!.call(this, value);
      },
    });
    const server = koa.listen(0, '127.0.0.1');
    try {
      const warnings = await warningsDuring('KOA_LOCKED_SESSION_TAKEN_OVER', async () => {
        for (let i = 0; i < 2; i++) {
          const res = await supertest(server).get('/');
          expect(res.status).to.equal(200);
          expect(res.text).to.include("ctx.session does not hold this library's session: another middleware defines it (koa-session's session(app), called on this app too?)");
        }
      });
      expect(writes, 'writes to ctx.session in two requests').to.be.at.most(6);
      expect(warnings).to.have.length(1);
      expect(warnings[0]).to.include("another middleware defines it (koa-session's session(app), called on this app too?)").and.include('remove the other session middleware, and its session(app) call');
    } finally {
      server.close();
    }
  });

  it('with a ctx.session defined on app.context with a getter only, each request is answered, none waits for the lock of the one before, and the process is warned', async () => {
    const koa = new Koa();
    const store = memoryStore();
    koa.use(session({ store, lockTimeout: 2000 }));
    koa.use((ctx) => {
      ctx.body = String(ctx.session);
    });
    const server = koa.listen(0, '127.0.0.1');
    try {
      const id = hexId('f');
      await store.set(id, { data: { n: 1 }, createdAt: Date.now(), touchedAt: Date.now() }, 60_000);
      Object.defineProperty(koa.context, 'session', { configurable: true, get: () => 'legacy' });
      const warnings = await warningsDuring('KOA_LOCKED_SESSION_TAKEN_OVER', async () => {
        for (let i = 0; i < 3; i++) {
          const started = Date.now();
          const res = await supertest(server).post('/').set('Cookie', `session_id=${id}`);
          expect(res.status).to.equal(200);
          expect(res.text).to.equal('legacy');
          expect(Date.now() - started, 'answered without waiting out lockTimeout').to.be.below(1000);
        }
      });
      expect(warnings).to.have.length(1);
      expect(lockTableOf(store, false).size, 'no lock left held').to.equal(0);
    } finally {
      server.close();
    }
  });
});

describe('getSession and fromContext', () => {
  it('getSession(ctx) and fromContext(ctx) return ctx.session itself', async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      ctx.body = { get: getSession(ctx) === ctx.session, from: fromContext(ctx) === ctx.session };
    });
    expect((await call(run, new Jar())).body).to.deep.equal({ get: true, from: true });
  });

  it('a value set through getSession(ctx) is read back through ctx.session in the next request', async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      if (ctx.method === 'POST') getSession(ctx).set('via', 'getSession');
      ctx.body = { via: ctx.session.get('via') ?? null };
    });
    const jar = new Jar();
    await call(run, jar, 'post');
    expect((await call(run, jar, 'get')).body).to.deep.equal({ via: 'getSession' });
  });

  it('getSession(ctx) after the handler replaced ctx.session throws an Error saying so, not that the middleware is missing', async () => {
    const replacements: Record<string, unknown> = { null: null, undefined, object: { views: 1 } };
    const run = await start({ store: memoryStore() }, (ctx) => {
      if (ctx.method === 'POST') return void ctx.session.set('user', 'ann');
      (ctx as { session: unknown }).session = replacements[ctx.query.with as string];
      try {
        getSession(ctx);
        ctx.body = { threw: false };
      } catch (error) {
        ctx.body = { threw: error instanceof Error, message: (error as Error).message };
      }
    });
    const jar = new Jar();
    await call(run, jar, 'post');
    for (const replacement of ['null', 'undefined']) {
      const res = await call(run, jar, 'get', `/?with=${replacement}`);
      expect(res.body).to.deep.equal({
        threw: true,
        message: `koa-locked-session: ctx.session was replaced, to ${replacement}: a logout, done when the handler returns; to log out and go on using the session, call await ctx.session.destroy() instead`,
      });
      await call(run, jar, 'post'); // logged out: a new session for the next round
    }
    const res = await call(run, jar, 'get', '/?with=object');
    expect(res.body).to.deep.equal({
      threw: true,
      message: 'koa-locked-session: ctx.session was replaced with another value, which is not stored; ctx.session is read-only: change the session with ctx.session.set(key, value)',
    });
  });

  for (const [name, fn] of [['getSession', getSession], ['fromContext', fromContext]] as const) {
    it(`${name}(ctx) throws an Error mentioning the session middleware when it is not installed`, async () => {
      const run = await start(undefined, (ctx) => ctx.body = 'unused', {
        middleware: async (ctx: Context) => {
          try {
            fn(ctx);
            ctx.body = { threw: false };
          } catch (error) {
            ctx.body = { threw: error instanceof Error, message: (error as Error).message };
          }
        },
      });
      const res = await call(run, new Jar());
      expect(res.body.threw).to.equal(true);
      expect(res.body.message).to.match(/session middleware/i);
    });

    it(`${name}(ctx) throws the same Error when another session library, not this one, put its object in ctx.session`, async () => {
      const run = await start(undefined, (ctx) => ctx.body = 'unused', {
        middleware: async (ctx: Context) => {
          (ctx as { session: unknown }).session = { views: 1 }; // as koa-session leaves it
          try {
            const got = fn(ctx);
            ctx.body = { threw: false, isOurs: got instanceof Session };
          } catch (error) {
            ctx.body = { threw: error instanceof Error, message: (error as Error).message };
          }
        },
      });
      const res = await call(run, new Jar());
      expect(res.body.threw).to.equal(true);
      expect(res.body.message).to.match(/session middleware/i);
    });
  }
});
