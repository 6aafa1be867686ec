/**
 * SPEC "Options": validation when session() is called, the defaults of the
 * table, and that each option takes effect. Cookie attributes are in
 * cookie.test.ts, custom stores in custom-store.test.ts.
 */
import Koa from 'koa';
import type { Context, Middleware } from 'koa';
import { session, withStore } from '../src';
import type { SessionOptions, Store } from '../src';
import {
  HEX64, Jar, RecordingStore, call, closeAll, cookieNamed, expect, memoryStore, setCookies, sleep, start,
} from './support/app';
import { gate } from './support/concurrency';

afterEach(closeAll);

const okStore = (): Store => new RecordingStore();

/** The longest maxAge / absoluteTimeout: 100 years of 365.25 days. */
const HUNDRED_YEARS = 100 * 365.25 * 24 * 60 * 60 * 1000;
const YEAR = 365.25 * 24 * 60 * 60 * 1000;

describe('Options: an invalid option throws a TypeError naming it when session() is called', () => {
  const INVALID: Array<[string, string, Record<string, unknown>]> = [
    ['a negative maxAge', 'maxAge', { maxAge: -1 }],
    ['a zero maxAge', 'maxAge', { maxAge: 0 }],
    ['a NaN maxAge', 'maxAge', { maxAge: NaN }],
    ['an infinite maxAge', 'maxAge', { maxAge: Infinity }],
    ['a string maxAge', 'maxAge', { maxAge: '1000' }],
    ['a negative absoluteTimeout', 'absoluteTimeout', { absoluteTimeout: -5 }],
    ['a NaN absoluteTimeout', 'absoluteTimeout', { absoluteTimeout: NaN }],
    ['a cookieName with a space', 'cookieName', { cookieName: 'a b' }],
    ['a cookieName with a semicolon', 'cookieName', { cookieName: 'a;b' }],
    ['a cookieName with an equals sign', 'cookieName', { cookieName: 'a=b' }],
    ['a cookieName with a comma', 'cookieName', { cookieName: 'a,b' }],
    ['a cookieName with a non-ASCII letter', 'cookieName', { cookieName: 'sessión' }],
    ['an empty cookieName', 'cookieName', { cookieName: '' }],
    ['a number as cookieName', 'cookieName', { cookieName: 42 }],
    ['sameSite none without cookieSecure', 'sameSite', { sameSite: 'none' }],
    ['sameSite none with cookieSecure false', 'sameSite', { sameSite: 'none', cookieSecure: false }],
    ['an unknown sameSite value', 'sameSite', { sameSite: 'sometimes' }],
    ['sameSite true', 'sameSite', { sameSite: true }],
    ['a store without get', 'store', { store: { set: async () => {}, destroy: async () => {} } }],
    ['a store without set', 'store', { store: { get: async () => undefined, destroy: async () => {} } }],
    ['a store without destroy', 'store', { store: { get: async () => undefined, set: async () => {} } }],
    ['a store whose get is not a function', 'store', { store: { get: 1, set: async () => {}, destroy: async () => {} } }],
    ['a store whose touch is there but not a function', 'store', { store: { get: async () => undefined, set: async () => {}, destroy: async () => {}, touch: 60 } }],
    ['a null store', 'store', { store: null }],
    ['a negative lockTimeout', 'lockTimeout', { lockTimeout: -1 }],
    ['a NaN lockTimeout', 'lockTimeout', { lockTimeout: NaN }],
    ['a string lockTimeout', 'lockTimeout', { lockTimeout: '5000' }],
    ['a lockTimeout of 2^31 ms, over Node\'s largest timer delay', 'lockTimeout', { lockTimeout: 2 ** 31 }],
    ['a lockTimeout of Number.MAX_SAFE_INTEGER', 'lockTimeout', { lockTimeout: Number.MAX_SAFE_INTEGER }],
    ['a lockTimeout of Number.MAX_VALUE', 'lockTimeout', { lockTimeout: Number.MAX_VALUE }],
    ['a maxAge of Number.MAX_SAFE_INTEGER', 'maxAge', { maxAge: Number.MAX_SAFE_INTEGER }],
    ['a maxAge 1 ms over 100 years', 'maxAge', { maxAge: HUNDRED_YEARS + 1 }],
    ['an absoluteTimeout of Number.MAX_SAFE_INTEGER', 'absoluteTimeout', { absoluteTimeout: Number.MAX_SAFE_INTEGER }],
    ['an absoluteTimeout 1 ms over 100 years', 'absoluteTimeout', { absoluteTimeout: HUNDRED_YEARS + 1 }],
    ['a cookieSecure that is not a boolean', 'cookieSecure', { cookieSecure: 'yes' }],
    ['a cookieHttpOnly that is not a boolean', 'cookieHttpOnly', { cookieHttpOnly: 0 }],
    ['a cookieExpires that is not a boolean', 'cookieExpires', { cookieExpires: 'session' }],
    ['a rolling that is not a boolean', 'rolling', { rolling: 'true' }],
    ['a signed that is not a boolean', 'signed', { signed: 1 }],
    ['a hashIds that is not a boolean', 'hashIds', { hashIds: 'no' }],
    ['a lockMode that is not a function', 'lockMode', { lockMode: 'write' }],
    ['a genid that is not a function', 'genid', { genid: 'abc' }],
    ['a cookiePath with a semicolon', 'cookiePath', { cookiePath: '/a;b' }],
    ["a cookiePath not starting with '/' (browsers would ignore it)", 'cookiePath', { cookiePath: 'app' }],
    ['a cookieDomain with a space', 'cookieDomain', { cookieDomain: 'exa mple.com' }],
    ['a __Secure- cookieName without cookieSecure (browsers would drop it)', 'cookieName', { cookieName: '__Secure-sid' }],
    ['a __Host- cookieName without cookieSecure', 'cookieName', { cookieName: '__Host-sid' }],
    ["a __Host- cookieName on a path other than '/'", 'cookieName', { cookieName: '__Host-sid', cookieSecure: true, cookiePath: '/app' }],
    ['a __Host- cookieName with a cookieDomain', 'cookieName', { cookieName: '__Host-sid', cookieSecure: true, cookieDomain: 'example.com' }],
    ['a __host- cookieName in lower case without cookieSecure (browsers match the prefix in any case)', 'cookieName', { cookieName: '__host-sid' }],
    ['a __SECURE- cookieName in upper case without cookieSecure (browsers match the prefix in any case)', 'cookieName', { cookieName: '__SECURE-sid' }],
    ['an unknown option (a typo of maxAge)', 'maxage', { maxage: 1000 }],
    ['an unknown option (secret)', 'secret', { secret: 'x' }],
  ];

  for (const [label, option, opts] of INVALID) {
    it(`${label} throws a TypeError naming ${option}`, () => {
      expect(() => session(opts as SessionOptions)).to.throw(TypeError, option);
    });
  }

  it('withStore() with a store missing get throws a TypeError naming store', () => {
    const bad = { set: async () => {}, destroy: async () => {} } as unknown as Store;
    expect(() => withStore(bad)).to.throw(TypeError, 'store');
  });

  it('withStore() without a store (an unset variable, say) throws instead of falling back to a MemoryStore of this process', () => {
    const withoutStore = withStore as unknown as (store?: unknown, opts?: SessionOptions) => unknown;
    expect(() => withoutStore()).to.throw(TypeError, /withStore\(store\) needs a store \(for the default MemoryStore, use session\(\)\)/);
    expect(() => withoutStore(undefined, { maxAge: 1000 })).to.throw(TypeError, /needs a store/);
    expect(() => withoutStore(null)).to.throw(TypeError, /needs a store/);
  });

  it('an array given as the options is refused as not an object', () => {
    expect(() => session([] as unknown as SessionOptions)).to.throw(TypeError, 'options must be an object');
  });

  it('a maxAge that is not positive is refused without the too-large message (no valid cookie expiry date)', () => {
    for (const maxAge of [0, -1, NaN, '1d']) {
      expect(() => session({ maxAge } as unknown as SessionOptions)).to.throw(TypeError, /^koa-locked-session: option maxAge must be a positive number of milliseconds up to 100 years \(3155760000000\)$/);
    }
  });

  it("a cookiePath with a semicolon is refused with a message that names what is wrong, not a missing '/'", () => {
    expect(() => session({ cookiePath: '/a;b' })).to.throw(TypeError, /cookiePath must be a cookie path: '\/' followed by printable ASCII other than ';'/);
  });

  it('withStore(store, app) and withStore(store, a non-object) are refused as session() refuses them, not as unknown options', () => {
    const app = new Koa();
    expect(() => withStore(okStore(), app as unknown as SessionOptions)).to.throw(
      TypeError,
      /^koa-locked-session: withStore\(\) takes an options object, not the app: write app\.use\(withStore\(store\)\) or app\.use\(withStore\(store, \{ \.\.\. \}\)\)$/,
    );
    for (const opts of ['x', [], 5, null]) {
      expect(() => withStore(okStore(), opts as unknown as SessionOptions)).to.throw(TypeError, /^koa-locked-session: options must be an object$/);
    }
    // koa-session's session(opts, app) form, carried over from plain JavaScript:
    const withApp = withStore as unknown as (store: Store, opts: SessionOptions | undefined, app: Koa) => unknown;
    for (const opts of [{}, { maxAge: 1000 }, undefined]) {
      expect(() => withApp(okStore(), opts, app)).to.throw(TypeError, /^koa-locked-session: withStore\(\) takes an options object, not the app/);
    }
  });

  it('withStore() checks the other options too', () => {
    expect(() => withStore(okStore(), { maxAge: -1 })).to.throw(TypeError, 'maxAge');
  });

  it('a too large lockTimeout is refused with a message giving the limit and that Infinity waits for ever', () => {
    expect(() => session({ lockTimeout: Number.MAX_SAFE_INTEGER })).to.throw(TypeError, /lockTimeout.*2147483647.*Infinity to wait for ever/);
  });

  it("koa-session's session(app) and session(opts, app) forms are refused with a message saying what to write instead", () => {
    const app = new Koa();
    expect(() => session(app as unknown as SessionOptions)).to.throw(TypeError, /takes an options object, not the app: write app\.use\(session\(\)\)/);
    // koa-session's other form, session(opts, app), from plain JavaScript:
    const withApp = session as unknown as (opts: SessionOptions, app: Koa) => unknown;
    expect(() => withApp({ maxAge: 1000 }, app)).to.throw(TypeError, /takes an options object, not the app/);
    // Anything else after the options is ignored: options.map(session) passes each one's index.
    expect(() => [{ cookieName: 'a' }, { cookieName: 'b' }].map(session)).to.not.throw();
  });

  const FROM_PEERS: Array<[string, Record<string, unknown>, RegExp]> = [
    ["koa-session's key", { key: 'sid' }, /unknown option key \(the cookie name is cookieName\)/],
    ["express-session's name", { name: 'sid' }, /unknown option name \(the cookie name is cookieName\)/],
    ["express-session's secret", { secret: 's' }, /unknown option secret \(set app\.keys = \[secret\]/],
    ["koa-session's httpOnly", { httpOnly: false }, /unknown option httpOnly \(it is cookieHttpOnly\)/],
    ["koa-session's renew", { renew: true }, /unknown option renew \(not needed/],
    ["express-session's cookie", { cookie: { httpOnly: true, maxAge: 1000 } }, /unknown option cookie \(express-session's cookie: \{ httpOnly, secure, path, domain, sameSite, maxAge \} is cookieHttpOnly, cookieSecure, cookiePath, cookieDomain, sameSite, maxAge\)/],
    ["express-session's proxy", { proxy: true }, /unknown option proxy \(set app\.proxy = true/],
    ["koa-session's overwrite", { overwrite: true }, /unknown option overwrite \(not needed/],
    ["the cookies package's expires", { expires: new Date() }, /unknown option expires \(the cookie expires with the session \(maxAge\); for a cookie that ends with the browser session, set cookieExpires: false\)/],
    ['a cookie-prefixed sameSite', { cookieSameSite: 'strict' }, /unknown option cookieSameSite \(it is sameSite\)/],
    ['a cookie-prefixed maxAge', { cookieMaxAge: 1000 }, /unknown option cookieMaxAge \(it is maxAge; for a cookie that ends with the browser session, set cookieExpires: false\)/],
    ["koa-session's encode", { encode: String }, /unknown option encode \(not needed: the cookie holds only the session ID/],
    ["koa-session's decode", { decode: String }, /unknown option decode \(not needed: the cookie holds only the session ID/],
    ["koa-session's valid", { valid: () => true }, /unknown option valid \(not offered: check the session in a middleware after session\(\)\)/],
    ["koa-session's beforeSave", { beforeSave: () => undefined }, /unknown option beforeSave \(not offered: change the session in the handler/],
    ["koa-session's ContextStore", { ContextStore: class {} }, /unknown option ContextStore \(not offered: pass the store object as store\)/],
    ["koa-session's externalKey", { externalKey: {} }, /unknown option externalKey \(not offered: the session ID is read from the cookie cookieName\)/],
    ["koa-session's and koa-generic-session's prefix", { prefix: 'sess:' }, /unknown option prefix \(the key prefix is an option of the store \(RedisStore's prefix\)\)/],
    ["koa-generic-session's ttl", { ttl: 1000 }, /unknown option ttl \(it is maxAge, in milliseconds\)/],
    ["koa-generic-session's genSid", { genSid: () => 'x' }, /unknown option genSid \(it is genid\)/],
    ["koa-generic-session's errorHandler", { errorHandler: () => undefined }, /unknown option errorHandler \(not offered: a store failure fails the request with SessionStoreError \(503\)/],
    ["express-session's unset", { unset: 'destroy' }, /unknown option unset \(not needed: ctx\.session = null or ctx\.session\.destroy\(\) removes the session\)/],
  ];
  for (const [label, opts, message] of FROM_PEERS) {
    it(`${label} option is refused with the name it has here`, () => {
      expect(() => session(opts as SessionOptions)).to.throw(TypeError, message);
    });
  }

  it('an unknown option named like a method every object has (toString, constructor) is refused with its name and no hint', () => {
    expect(() => session({ toString: () => 'x' } as unknown as SessionOptions)).to.throw(TypeError, /unknown option toString$/);
    expect(() => session({ constructor: Object } as unknown as SessionOptions)).to.throw(TypeError, /unknown option constructor$/);
  });

  it("koa-session's maxAge: 'session' is refused with a message pointing to cookieExpires: false", () => {
    expect(() => session({ maxAge: 'session' } as unknown as SessionOptions)).to.throw(TypeError, /maxAge must be .*; for a cookie that ends with the browser session, set cookieExpires: false$/);
  });

  it('a too large maxAge or absoluteTimeout is refused with a message giving the 100-year limit', () => {
    expect(() => session({ maxAge: Number.MAX_SAFE_INTEGER })).to.throw(TypeError, /maxAge must be at most 100 years \(3155760000000 ms\): a longer lifetime gives no valid cookie expiry date$/);
    expect(() => session({ absoluteTimeout: HUNDRED_YEARS + 1 })).to.throw(TypeError, /absoluteTimeout must be at most 100 years \(3155760000000 ms\): a longer lifetime gives no valid cookie expiry date$/);
  });
});

describe('Options: valid options are accepted', () => {
  const VALID: Array<[string, SessionOptions]> = [
    ['no options at all', {}],
    ['sameSite none with cookieSecure', { sameSite: 'none', cookieSecure: true }],
    ['sameSite false', { sameSite: false }],
    ['sameSite strict', { sameSite: 'strict' }],
    ['a cookieName with dots, dashes and underscores', { cookieName: 'my.app-sid_v2' }],
    ['a __Host- prefixed cookieName, Secure, on path / and no domain', { cookieName: '__Host-sid', cookieSecure: true }],
    ['a __Secure- prefixed cookieName, Secure, on any path and domain', { cookieName: '__Secure-sid', cookieSecure: true, cookiePath: '/app', cookieDomain: 'example.com' }],
    ['a fractional maxAge', { maxAge: 1500.5 }],
    ['lockTimeout 0', { lockTimeout: 0 }],
    ['a fractional lockTimeout', { lockTimeout: 0.5 }],
    ['lockTimeout 2^31-1 ms (Node\'s largest timer delay)', { lockTimeout: 2 ** 31 - 1 }],
    ['lockTimeout Infinity (wait for ever)', { lockTimeout: Infinity }],
    ['a one-year maxAge', { maxAge: YEAR }],
    ['a ten-year maxAge', { maxAge: 10 * YEAR }],
    ['a maxAge of exactly 100 years', { maxAge: HUNDRED_YEARS }],
    ['an absoluteTimeout of exactly 100 years', { absoluteTimeout: HUNDRED_YEARS }],
    ['a store with get, set and destroy only', { store: { get: async () => undefined, set: async () => {}, destroy: async () => {} } }],
  ];
  for (const [label, opts] of VALID) {
    it(`${label} is accepted`, () => {
      expect(session(opts)).to.be.a('function');
    });
  }

  it('session() with no argument gives a middleware', () => {
    expect(session()).to.be.a('function');
  });
});

describe('Options: defaults', () => {
  const setter = (ctx: Context) => {
    ctx.session.set('a', 1);
    ctx.body = { id: ctx.session.id };
  };

  it('by default the cookie is session_id with Path=/, HttpOnly, SameSite=Lax, no Secure and no Domain', async () => {
    const run = await start(undefined, setter);
    const res = await call(run, new Jar(), 'post');
    const cookies = setCookies(res);
    expect(cookies.map((c) => c.name)).to.deep.equal(['session_id']);
    const cookie = cookies[0];
    expect(cookie.value).to.equal(res.body.id);
    expect(cookie.attrs.path).to.equal('/');
    expect(cookie.attrs.httponly).to.equal(true);
    expect(String(cookie.attrs.samesite).toLowerCase()).to.equal('lax');
    expect(cookie.attrs.secure).to.equal(undefined);
    expect(cookie.attrs.domain).to.equal(undefined);
  });

  it('by default the cookie expires 24 hours from now', async () => {
    const run = await start(undefined, setter);
    const before = Date.now();
    const res = await call(run, new Jar(), 'post');
    const expires = Date.parse(String(cookieNamed(res)?.attrs.expires));
    expect(expires).to.be.closeTo(before + 86_400_000, 60_000);
  });

  it('by default the store is told a 24-hour lifetime', async () => {
    const store = new RecordingStore();
    const run = await start({ store }, setter);
    await call(run, new Jar(), 'post');
    const [write] = store.callsOf('set');
    expect(write.args[1]).to.be.a('number');
    expect(write.args[1] as number).to.be.closeTo(86_400_000, 60_000);
  });

  it('by default the session is kept in memory: a value set is found by the next request', async () => {
    const run = await start(undefined, (ctx) => {
      if (ctx.method === 'POST') ctx.session.set('a', 'kept');
      ctx.body = { a: ctx.session.get('a') ?? null };
    });
    const jar = new Jar();
    await call(run, jar, 'post');
    expect((await call(run, jar, 'get')).body).to.deep.equal({ a: 'kept' });
  });

  for (const method of ['get', 'head', 'options'] as const) {
    it(`by default two ${method.toUpperCase()} requests of one session run at the same time (read lock)`, async () => {
      const { run, jar, maxActive } = await overlapApp(undefined);
      await Promise.all([call(run, jar, method, '/wait'), call(run, jar, method, '/wait')]);
      expect(maxActive()).to.equal(2);
    });
  }

  it('by default two POSTs of one session run one after the other (write lock)', async () => {
    const { run, jar, maxActive } = await overlapApp(undefined);
    const results = await Promise.all([call(run, jar, 'post', '/wait'), call(run, jar, 'post', '/wait')]);
    expect(results.map((r) => r.status)).to.deep.equal([200, 200]);
    expect(maxActive()).to.equal(1);
  });

  it('by default a request waits 5 seconds for a held lock, then gets 503 without running its handler', async function () {
    this.timeout(20_000);
    let release: (() => void) | undefined;
    let handled = 0;
    const run = await start(undefined, async (ctx) => {
      if (ctx.path === '/hold') await new Promise<void>((resolve) => (release = resolve));
      else if (ctx.path === '/late') handled++;
      ctx.session.set('a', 1);
      ctx.body = 'ok';
    });
    const jar = new Jar();
    await call(run, jar, 'post');
    const holding = call(run, jar, 'post', '/hold');
    while (release === undefined) await sleep(5);
    const before = Date.now();
    const late = await call(run, jar, 'post', '/late');
    const waited = Date.now() - before;
    release();
    expect((await holding).status).to.equal(200);
    expect(late.status).to.equal(503);
    expect(handled).to.equal(0);
    expect(waited, 'ms waited: 5 s, not another default such as 10 s').to.be.within(4_800, 9_000);
  });

  it('by default a plain read of a live session sends no cookie (rolling is off)', async () => {
    const run = await start(undefined, (ctx) => {
      if (ctx.method === 'POST') ctx.session.set('a', 1);
      ctx.body = 'ok';
    });
    const jar = new Jar();
    await call(run, jar, 'post');
    expect(setCookies(await call(run, jar, 'get'))).to.deep.equal([]);
  });
});

/**
 * An app where /wait holds the request until a second request of the same
 * session is inside a handler too (or 600 ms pass after that second request
 * reached the server: a lock keeps it out), recording how many ran at once.
 * POST / and GET / (no wait) create and read the session.
 */
async function overlapApp(opts: SessionOptions | undefined) {
  let active = 0;
  let max = 0;
  let wake: (() => void) | undefined;
  // Counted ahead of the session middleware: the 600 ms start only once the second /wait is in the server,
  // not when the first is (two requests sent together can reach it far apart on a loaded machine).
  let arrived = 0;
  const bothArrived = gate();
  const countArrivals: Middleware = (ctx, next) => {
    if (ctx.path === '/wait' && ++arrived === 2) bothArrived.open();
    return next();
  };
  const run = await start({ store: memoryStore(), ...opts }, async (ctx) => {
    if (ctx.path === '/wait') {
      active++;
      max = Math.max(max, active);
      if (active >= 2) {
        wake?.();
      } else {
        await new Promise<void>((resolve) => {
          wake = resolve;
          void bothArrived.promise.then(() => setTimeout(resolve, 600).unref());
        });
      }
      active--;
      ctx.body = 'done';
      return;
    }
    ctx.session.set('a', 1);
    ctx.body = 'ok';
  }, { before: [countArrivals] });
  const jar = new Jar();
  await call(run, jar, 'put', '/');
  return { run, jar, maxActive: () => max };
}

describe('Options: each option takes effect', () => {
  it('maxAge sets the cookie expiry and the lifetime the store is told', async () => {
    const store = new RecordingStore();
    const run = await start({ store, maxAge: 3_600_000 }, (ctx) => {
      ctx.session.set('a', 1);
      ctx.body = 'ok';
    });
    const before = Date.now();
    const res = await call(run, new Jar(), 'post');
    expect(Date.parse(String(cookieNamed(res)?.attrs.expires))).to.be.closeTo(before + 3_600_000, 60_000);
    expect(store.callsOf('set')[0].args[1] as number).to.be.closeTo(3_600_000, 60_000);
  });

  const LONG_LIFETIMES: Array<[string, SessionOptions, number]> = [
    ['a one-year maxAge', { maxAge: YEAR }, YEAR],
    ['a ten-year maxAge', { maxAge: 10 * YEAR }, 10 * YEAR],
    ['a 100-year maxAge', { maxAge: HUNDRED_YEARS }, HUNDRED_YEARS],
    ['a ten-year maxAge with a ten-year absoluteTimeout', { maxAge: 10 * YEAR, absoluteTimeout: 10 * YEAR }, 10 * YEAR],
  ];
  for (const [label, opts, lifetime] of LONG_LIFETIMES) {
    it(`${label} gives a Set-Cookie with a valid expires date that far ahead, signed cookie too`, async () => {
      const store = new RecordingStore();
      const run = await start({ store, ...opts }, (ctx) => {
        ctx.session.set('a', 1);
        ctx.body = 'ok';
      }, { keys: ['k1'] });
      const before = Date.now();
      const res = await call(run, new Jar(), 'post');
      const cookies = setCookies(res);
      expect(cookies.map((c) => c.name)).to.deep.equal(['session_id', 'session_id.sig']);
      for (const cookie of cookies) {
        const expires = String(cookie.attrs.expires);
        expect(expires, cookie.raw).to.match(/^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/);
        expect(Date.parse(expires), cookie.raw).to.be.closeTo(before + lifetime, 60_000);
      }
      expect(store.callsOf('set')[0].args[1] as number).to.be.closeTo(lifetime, 60_000);
    });
  }

  it('a session unused for longer than maxAge is gone', async () => {
    const run = await start({ store: memoryStore(), maxAge: 400 }, (ctx) => {
      if (ctx.method === 'POST') ctx.session.set('a', 1);
      ctx.body = { a: ctx.session.get('a') ?? null, isNew: ctx.session.isNew };
    });
    // From the Set-Cookie itself: its expires, in whole seconds cut down, may already have passed.
    const cookie = cookieNamed(await call(run, new Jar(), 'post'))?.value as string;
    expect(cookie).to.match(HEX64);
    await sleep(900);
    const res = await call(run, new Jar().set('session_id', cookie), 'get');
    expect(res.body).to.deep.equal({ a: null, isNew: true });
  });

  it('absoluteTimeout shorter than maxAge caps the cookie expiry', async () => {
    const run = await start({ store: memoryStore(), absoluteTimeout: 60_000 }, (ctx) => {
      ctx.session.set('a', 1);
      ctx.body = 'ok';
    });
    const before = Date.now();
    const res = await call(run, new Jar(), 'post');
    expect(Date.parse(String(cookieNamed(res)?.attrs.expires))).to.be.closeTo(before + 60_000, 5_000);
  });

  it('a custom lockMode is asked with the request\'s ctx and its answer is used: read for POSTs lets them overlap', async () => {
    const asked: string[] = [];
    const { run, jar, maxActive } = await overlapApp({
      lockMode: (ctx) => {
        asked.push(`${ctx.method} ${ctx.path}`);
        return 'read';
      },
    });
    await Promise.all([call(run, jar, 'post', '/wait'), call(run, jar, 'post', '/wait')]);
    expect(maxActive()).to.equal(2);
    expect(asked).to.include('POST /wait');
  });

  it("a custom lockMode is called as a method of the middleware's resolved options, as before the split into opening.ts, never of an internal object", async () => {
    const seen: unknown[] = [];
    const lockMode = function (this: unknown): 'read' {
      seen.push(this);
      return 'read';
    };
    const run = await start({ store: memoryStore(), lockMode, lockTimeout: 1234 }, (ctx) => {
      if (ctx.method === 'POST') ctx.session.set('a', 1); // no cookie yet: no lock, lockMode is not asked
      ctx.body = 'ok';
    });
    const jar = new Jar();
    await call(run, jar, 'post');
    await call(run, jar, 'get');
    expect(seen).to.have.length(1);
    const self = seen[0] as Record<string, unknown>;
    expect(self.lockMode).to.equal(lockMode);
    expect(self.lockTimeout).to.equal(1234);
    expect(self).to.not.have.any.keys('storage', 'locks');
  });

  it('a custom lockMode answering write makes GETs of one session run one after the other', async () => {
    const { run, jar, maxActive } = await overlapApp({ lockMode: () => 'write' });
    await Promise.all([call(run, jar, 'get', '/wait'), call(run, jar, 'get', '/wait')]);
    expect(maxActive()).to.equal(1);
  });

  it("a lockMode answering neither 'read' nor 'write' fails the request with a TypeError naming lockMode, before the handler runs", async () => {
    const upperCase: string = 'READ'; // as a plain JavaScript lockMode might answer
    let runs = 0;
    const run = await start({ store: memoryStore(), lockMode: () => upperCase as 'read' }, (ctx) => {
      if (ctx.method === 'POST') ctx.session.set('a', 1); // no cookie yet: no lock, lockMode is not asked
      else runs++;
      ctx.body = 'ok';
    });
    const jar = new Jar();
    await call(run, jar, 'post');
    const res = await call(run, jar, 'get');
    expect(res.status).to.equal(500);
    expect(runs, 'handler runs').to.equal(0);
    expect(run.errors).to.have.length(1);
    expect(run.errors[0]).to.be.an.instanceOf(TypeError);
    expect((run.errors[0] as Error).message).to.include('lockMode');
  });

  /** An app on `lockTimeout` where, once this resolves, POST /hold holds its session's lock until `release()`. */
  async function heldLock(lockTimeout: number) {
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
      setTimeout(resolve, 10_000).unref();
    });
    let entered: () => void = () => {};
    const holding = new Promise<void>((resolve) => (entered = resolve));
    const ran: string[] = [];
    const run = await start({ store: memoryStore(), lockTimeout }, async (ctx) => {
      ran.push(ctx.path);
      if (ctx.path === '/hold') {
        entered();
        await gate;
      }
      ctx.session.set(ctx.path, true);
      ctx.body = 'ok';
    });
    const jar = new Jar();
    await call(run, jar, 'post', '/seed');
    const held = call(run, jar, 'post', '/hold');
    await holding;
    return { run, jar, held, release, ran };
  }

  it('a request waiting longer than lockTimeout for its session gets 503 and its handler does not run', async () => {
    const { run, jar, held, release, ran } = await heldLock(100);
    const waited = await call(run, jar, 'post', '/late');
    release();
    expect(waited.status).to.equal(503);
    expect((await held).status).to.equal(200);
    expect(ran).to.deep.equal(['/seed', '/hold']);
  });

  for (const [label, lockTimeout] of [['2^31-1 ms', 2 ** 31 - 1], ['Infinity', Infinity]] as const) {
    it(`with lockTimeout ${label} a request waits for a held lock instead of failing at once, and no timer warning is printed`, async () => {
      const warnings: Error[] = [];
      const onWarning = (warning: Error) => warnings.push(warning);
      process.on('warning', onWarning);
      try {
        const { run, jar, held, release } = await heldLock(lockTimeout);
        const late = call(run, jar, 'post', '/late');
        await sleep(200);
        release();
        expect((await late).status).to.equal(200);
        expect((await held).status).to.equal(200);
        await new Promise((resolve) => setImmediate(resolve));
        expect(warnings.map((w) => w.name)).to.not.include('TimeoutOverflowWarning');
      } finally {
        process.off('warning', onWarning);
      }
    });
  }

  it('rolling re-sends the cookie, with the same ID, on every response of a live session', async () => {
    const run = await start({ store: memoryStore(), rolling: true }, (ctx) => {
      if (ctx.method === 'POST') ctx.session.set('a', 1);
      ctx.body = { id: ctx.session.id };
    });
    const jar = new Jar();
    const id = (await call(run, jar, 'post')).body.id;
    for (let i = 0; i < 3; i++) {
      const res = await call(run, jar, 'get');
      expect(cookieNamed(res)?.value, `read ${i}`).to.equal(id);
    }
  });

  it('rolling sends no cookie for a new session that was never changed', async () => {
    const run = await start({ store: memoryStore(), rolling: true }, (ctx) => {
      ctx.body = 'ok';
    });
    expect(setCookies(await call(run, new Jar(), 'get'))).to.deep.equal([]);
  });
});

describe('Options: genid', () => {
  const custom = (() => {
    let n = 0;
    return () => `user_${String(++n).padStart(20, '0')}`;
  });

  it('a custom genid names new sessions, and its IDs bring the session back', async () => {
    const run = await start({ store: memoryStore(), genid: custom() }, (ctx) => {
      if (ctx.method === 'POST') ctx.session.set('a', 1);
      ctx.body = { id: ctx.session.id, a: ctx.session.get('a') ?? null };
    });
    const jar = new Jar();
    const first = await call(run, jar, 'post');
    expect(first.body.id).to.match(/^user_\d{20}$/);
    expect(jar.get()).to.equal(first.body.id);
    expect((await call(run, jar, 'get')).body).to.deep.equal({ id: first.body.id, a: 1 });
  });

  it('with a custom genid, a cookie outside 22–256 characters of [A-Za-z0-9_-] never reaches the store', async () => {
    const store = new RecordingStore();
    const run = await start({ store, genid: custom() }, (ctx) => {
      ctx.body = { isNew: ctx.session.isNew };
    });
    const bad = ['a'.repeat(21), 'a'.repeat(257), `${'a'.repeat(30)}.x`, `${'a'.repeat(30)}+`, `${'a'.repeat(30)}=`];
    for (const value of bad) {
      const res = await call(run, new Jar().set('session_id', value), 'get');
      expect(res.body.isNew, value).to.equal(true);
    }
    for (const value of bad) expect(store.ids).to.not.include(value);
  });

  it('with a custom genid, a well-formed cookie of 22 or 256 characters is looked up in the store', async () => {
    const store = new RecordingStore();
    const run = await start({ store, genid: custom() }, (ctx) => {
      ctx.body = { isNew: ctx.session.isNew };
    });
    const good = ['A'.repeat(22), `${'b-_'.repeat(85)}z`];
    for (const value of good) await call(run, new Jar().set('session_id', value), 'get');
    expect(store.callsOf('get').map((c) => c.id)).to.deep.equal(good);
  });

  const BAD_IDS: Array<[string, string]> = [
    ['a 21-character ID', 'a'.repeat(21)],
    ['a 257-character ID', 'a'.repeat(257)],
    ['an ID with a dot', `${'a'.repeat(30)}.b`],
    ['an ID with a slash', `${'a'.repeat(30)}/b`],
  ];
  for (const [label, id] of BAD_IDS) {
    it(`a genid returning ${label} fails the request with a TypeError and stores nothing`, async () => {
      const store = new RecordingStore();
      const run = await start({ store, genid: () => id }, (ctx) => {
        ctx.session.set('a', 1);
        ctx.body = 'ok';
      });
      const res = await call(run, new Jar(), 'post');
      expect(res.status).to.be.at.least(500);
      expect(setCookies(res)).to.deep.equal([]);
      expect(store.callsOf('set')).to.deep.equal([]);
      expect(run.errors.some((e) => e instanceof TypeError), 'a TypeError reached the app').to.equal(true);
    });
  }

  it('a genid is checked on each call: a later bad ID fails that request only', async () => {
    const ids = ['g'.repeat(22), 'bad id', 'h'.repeat(22)];
    const store = new RecordingStore();
    const run = await start({ store, genid: () => ids.shift() ?? 'x' }, (ctx) => {
      ctx.session.set('a', 1);
      ctx.body = { id: ctx.session.id };
    });
    const statuses = [];
    for (let i = 0; i < 3; i++) statuses.push((await call(run, new Jar(), 'post')).status);
    expect(statuses[0]).to.equal(200);
    expect(statuses[1]).to.be.at.least(500);
    expect(statuses[2]).to.equal(200);
    expect(store.callsOf('set').map((c) => c.id)).to.deep.equal(['g'.repeat(22), 'h'.repeat(22)]);
  });

  it('without genid the IDs are 64 lowercase hex', async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      ctx.session.set('a', 1);
      ctx.body = { id: ctx.session.id };
    });
    expect((await call(run, new Jar(), 'post')).body.id).to.match(HEX64);
  });
});
