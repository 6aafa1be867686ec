/**
 * Hostile input: random and crafted Cookie headers, sent as raw bytes over
 * a socket, never produce a 5xx, never put a malformed ID in front of the
 * store, never get a client-chosen ID adopted and never get echoed back;
 * keys and values of any shape round-trip exactly. Plus the security
 * checks around cookies: Keygrip verification, cookie defaults, fixation.
 *
 * PROPERTY_RUNS scales the number of random headers (default 40 → 200 headers per mode).
 */
import assert from 'node:assert/strict';
import { isDeepStrictEqual } from 'node:util';
import fc from 'fast-check';
import Keygrip from 'keygrip';
import Koa from 'koa';
import type { Context } from 'koa';
import Redis from 'ioredis';
import { MemoryStore, RedisStore, session } from '../src';
import type { SessionOptions, Store } from '../src';
import {
  HEX64,
  LoggedStore,
  agent as keepAliveAgent,
  rawRequest,
  request,
  requestNamer,
  serve,
  sessionCookie,
  storedData,
  PROPERTY_RUNS,
  propertyParams,
} from './support/hardening-harness';
import type { RawReply, Reply, Served } from './support/hardening-harness';
import { headerBytes, headerRecipe, showHeader } from './support/hardening-hostile';
import type { HeaderRecipe, Victim } from './support/hardening-hostile';
import { testRedis } from './support/redis-server';
import type { RedisServer } from './support/redis-server';

const RUNS = PROPERTY_RUNS;
const params = propertyParams;

const KEYS = ['current-secret', 'previous-secret'];

// ---------------------------------------------------------------- the app under attack

/** Values handed to /rt in process, so that nothing (-0, __proto__) is lost on the way in. */
const registry = new Map<string, { entries: [string, unknown][]; seen: { keys: string[]; values: unknown[]; json: Record<string, unknown> }[] }>();

function routes(ctx: Context): void | Promise<void> {
  const s = ctx.session;
  switch (`${ctx.method} ${ctx.path}`) {
    case 'POST /touch':
      s.set('touched', (s.get<number>('touched') ?? 0) + 1);
      ctx.body = 'ok';
      return;
    case 'GET /me':
      ctx.body = { user: s.get('user') ?? null, cart: s.get('cart') ?? null };
      return;
    case 'POST /cart':
      s.set('cart', ['attacker-planted item']);
      ctx.body = 'ok';
      return;
    case 'POST /login':
      s.set('user', ctx.get('x-user'));
      return s.regenerate().then(() => {
        ctx.body = 'welcome';
      });
    case 'POST /rt':
    case 'GET /rt': {
      const entry = registry.get(ctx.get('x-token'));
      if (entry === undefined) ctx.throw(400, 'unknown token');
      if (ctx.method === 'POST') for (const [key, value] of entry.entries) s.set(key, value);
      entry.seen.push({ keys: s.keys(), values: entry.entries.map(([key]) => s.get(key)), json: s.toJSON() });
      ctx.body = 'ok';
      return;
    }
    default:
      ctx.status = 404;
  }
}

interface Target {
  served: Served;
  store: LoggedStore;
  inner: MemoryStore;
  errors: unknown[];
  close(): Promise<void>;
}

async function target(options: { keys?: string[] | Keygrip; sessionOptions?: SessionOptions; store?: Store } = {}): Promise<Target> {
  const inner = new MemoryStore();
  const store = LoggedStore.atomic(inner);
  const app = new Koa();
  app.silent = true;
  if (options.keys !== undefined) app.keys = options.keys as string[];
  const errors: unknown[] = [];
  app.on('error', (error: unknown) => errors.push(error));
  app.use(requestNamer());
  app.use(session({ store: options.store ?? store, ...options.sessionOptions }));
  app.use(routes);
  const served = await serve(app);
  return {
    served,
    store,
    inner,
    errors,
    close: async () => {
      await served.close();
      inner.close();
    },
  };
}

const http = keepAliveAgent();
after(() => http.destroy());

function post(t: Target, path: string, cookie?: string, headers: Record<string, string> = {}): Promise<Reply> {
  return request(t.served.port, { method: 'POST', path, headers: { ...headers, ...(cookie === undefined ? {} : { cookie }) }, agent: http });
}

function get(t: Target, path: string, cookie?: string, headers: Record<string, string> = {}): Promise<Reply> {
  return request(t.served.port, { method: 'GET', path, headers: { ...headers, ...(cookie === undefined ? {} : { cookie }) }, agent: http });
}

/** The Cookie header a browser would send back after `reply`. */
function jarOf(reply: Reply): string {
  return (reply.headers['set-cookie'] ?? []).map((line) => line.split(';')[0]).join('; ');
}

async function victim(t: Target): Promise<Victim> {
  const reply = await post(t, '/touch');
  const id = sessionCookie(reply)?.value ?? '';
  const sig = sessionCookie(reply, 'session_id.sig')?.value ?? '';
  assert.match(id, HEX64);
  return { id, sig };
}

function rawHead(path: string, rid: string, cookieLines: Buffer, method = 'POST'): Buffer {
  return Buffer.concat([
    Buffer.from(`${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Rid: ${rid}\r\nContent-Length: 0\r\n`, 'latin1'),
    cookieLines,
  ]);
}

function contains(raw: Buffer, value: string): boolean {
  return raw.includes(Buffer.from(value, 'utf8')) || raw.includes(Buffer.from(value, 'latin1'));
}

// ---------------------------------------------------------------- random hostile headers

for (const signed of [false, true]) {
  describe(`hostile Cookie headers (${signed ? 'signed with app.keys' : 'unsigned'})`, function () {
    this.timeout(300_000);
    let t: Target;
    let victims: Victim[];
    const foreign = new Keygrip(['an attacker key']);
    const signer = new Keygrip(KEYS);
    let counter = 0;

    before(async () => {
      t = await target(signed ? { keys: KEYS } : {});
      victims = [await victim(t), await victim(t), await victim(t)];
    });
    after(() => t.close());

    /** Sends one hostile header and lists every broken promise. */
    async function attack(recipe: HeaderRecipe): Promise<{ problems: string[]; reply: RawReply }> {
      const rid = `h${++counter}`;
      const { lines, text, values } = headerBytes(recipe, victims, foreign);
      const before = await Promise.all(victims.map((v) => storedData(t.inner, v.id)));
      const reply = await rawRequest(t.served.port, rawHead('/touch', rid, lines));
      const problems: string[] = [];
      if (reply.status === 0) problems.push('the server closed the connection without answering');
      if (reply.status >= 500) problems.push(`answered ${reply.status}`);

      // What reached the store.
      const calls = t.store.log.filter((e) => e.rid === rid);
      for (const call of calls) {
        if (!HEX64.test(call.id)) problems.push(`the store was asked to ${call.op} a malformed ID ${JSON.stringify(call.id)}`);
        if (call.op !== 'get') continue;
        if (!text.includes(call.id)) problems.push(`the store was asked for ${call.id}, which the client never sent as such (a decoded or normalised value)`);
        if (signed) {
          const own = victims.find((v) => v.id === call.id);
          const genuine = own !== undefined && text.includes(`session_id.sig=${signer.sign(`session_id=${own.id}`)}`);
          if (!genuine) problems.push(`signed mode: the store was asked for ${call.id} although no valid signature for it was sent`);
        }
      }

      // What came back.
      const cookie = reply.status === 200 ? sessionCookie(reply) : undefined;
      const loaded = calls.find((c) => c.op === 'get' && c.record !== undefined)?.id;
      if (reply.status === 200) {
        if (cookie === undefined || cookie.expired) problems.push('POST /touch sets a value, yet no session cookie came back');
        else if (cookie.value !== loaded) {
          if (!HEX64.test(cookie.value)) problems.push(`the new session's ID ${JSON.stringify(cookie.value)} is not 64 lowercase hex`);
          if (text.includes(cookie.value)) problems.push('adopted a client-chosen ID: the new cookie carries a value the client sent');
          if (victims.some((v) => v.id === cookie.value)) problems.push("handed out a victim's ID");
        }
      }
      for (const value of values.flatMap((v) => [v, v.replace(/^"|"$/g, ''), v.trim()])) {
        if (value.length < 12 || value === loaded || value === cookie?.value) continue;
        // A piece of the ID the request legitimately presented comes back inside that ID.
        if (loaded !== undefined && loaded.includes(value)) continue;
        if (signed && victims.some((v) => v.id === loaded && v.sig.includes(value))) continue;
        if (contains(reply.raw, value)) problems.push(`echoed a sent cookie value back: ${JSON.stringify(value.slice(0, 40))}`);
      }
      for (const v of victims) {
        if (v.id === loaded) continue;
        if (contains(reply.raw, v.id)) problems.push("the response names a victim's ID that this request did not legitimately load");
      }

      // The victims' sessions are untouched unless this request legitimately loaded one.
      const afterwards = await Promise.all(victims.map((v) => storedData(t.inner, v.id)));
      victims.forEach((v, i) => {
        const expected = v.id === loaded && reply.status === 200 ? { touched: Number(before[i]?.touched) + 1 } : before[i];
        if (!isDeepStrictEqual(afterwards[i], expected)) problems.push(`victim ${i}'s session changed: ${JSON.stringify(before[i])} → ${JSON.stringify(afterwards[i])}`);
      });
      return { problems, reply };
    }

    it('random headers: no 5xx, no malformed ID reaches the store, no adopted or echoed ID, victims untouched', async () => {
      await fc.assert(
        fc.asyncProperty(headerRecipe(3, signed).map((r) => Object.assign(r, { toString: () => showHeader(r) })), async (recipe) => {
          const { problems, reply } = await attack(recipe);
          assert.deepEqual(problems, [], `${showHeader(recipe)}\n→ ${reply.status}\n  - ${problems.join('\n  - ')}`);
        }),
        params(RUNS * 5),
      );
      assert.deepEqual(t.errors.filter((e) => Number((e as { status?: number }).status ?? 500) >= 500), [], 'no request failed with a server error');
      for (const id of t.store.seenIds) assert.match(id, HEX64, 'every ID the store ever saw is 64 lowercase hex');
    });

    const crafted: [string, HeaderRecipe][] = [
      ['an ~8 KB value', { cookies: [{ name: 'session_id', bare: false, value: { kind: 'huge', size: 8192, fill: 'f0' } }], separator: '; ', split: false }],
      ['50 cookies of the same name, the real ID last', {
        cookies: [
          ...Array.from({ length: 49 }, (_, i) => ({ name: 'session_id', bare: false, value: { kind: 'hex' as const, length: 64, upper: false, digits: `${i % 10}` } })),
          { name: 'session_id', bare: false, value: { kind: 'victim', victim: 0, tweak: 'exact' } },
        ],
        separator: '; ',
        split: false,
      }],
      ['non-ASCII (UTF-8) bytes', { cookies: [{ name: 'session_id', bare: false, value: { kind: 'text', text: 'ü🙂é€\u00ff' } }], separator: '; ', split: false }],
      ['a percent-encoded real ID', { cookies: [{ name: 'session_id', bare: false, value: { kind: 'victim', victim: 0, tweak: 'percent' } }], separator: '; ', split: false }],
      ['a quoted real ID with no closing quote', { cookies: [{ name: 'session_id', bare: false, value: { kind: 'victim', victim: 0, tweak: 'quoted-open' } }], separator: '; ', split: false }],
      ['a real ID in upper-case hex', { cookies: [{ name: 'session_id', bare: false, value: { kind: 'victim', victim: 0, tweak: 'upper' } }], separator: '; ', split: false }],
      ['a real ID with one letter upper-cased', { cookies: [{ name: 'session_id', bare: false, value: { kind: 'victim', victim: 1, tweak: 'mixed' } }], separator: '; ', split: false }],
      ['a real ID cut to 63 characters', { cookies: [{ name: 'session_id', bare: false, value: { kind: 'victim', victim: 0, tweak: 'truncate' } }], separator: '; ', split: false }],
      ['a real ID grown to 65 characters', { cookies: [{ name: 'session_id', bare: false, value: { kind: 'victim', victim: 0, tweak: 'extend' } }], separator: '; ', split: false }],
      ['a real ID followed by %00', { cookies: [{ name: 'session_id', bare: false, value: { kind: 'victim', victim: 0, tweak: 'nul' } }], separator: '; ', split: false }],
      ['a real ID padded with spaces', { cookies: [{ name: 'session_id', bare: false, value: { kind: 'victim', victim: 2, tweak: 'padded' } }], separator: '; ', split: false }],
      ['a made-up, well-formed ID', { cookies: [{ name: 'session_id', bare: false, value: { kind: 'hex', length: 64, upper: false, digits: 'deadbeef' } }], separator: '; ', split: false }],
      ['several Cookie header lines', { cookies: [{ name: 'session_id', bare: false, value: { kind: 'text', text: 'x' } }, { name: 'session_id', bare: false, value: { kind: 'victim', victim: 0, tweak: 'flip' } }], separator: '; ', split: true }],
    ];
    if (signed) {
      crafted.push(
        ['a real ID without its signature', { cookies: [{ name: 'session_id', bare: false, value: { kind: 'victim', victim: 0, tweak: 'exact' } }], separator: '; ', split: false }],
        ['a real ID with its signature cut short', { cookies: [{ name: 'session_id', bare: false, value: { kind: 'victim', victim: 0, tweak: 'exact' } }, { name: 'session_id.sig', bare: false, value: { kind: 'sig', victim: 0, of: 0, tweak: 'truncate' } }], separator: '; ', split: false }],
        ['a real ID with a tampered signature of the same length', { cookies: [{ name: 'session_id', bare: false, value: { kind: 'victim', victim: 0, tweak: 'exact' } }, { name: 'session_id.sig', bare: false, value: { kind: 'sig', victim: 0, of: 0, tweak: 'flip' } }], separator: '; ', split: false }],
        ["a real ID with another session's signature", { cookies: [{ name: 'session_id', bare: false, value: { kind: 'victim', victim: 0, tweak: 'exact' } }, { name: 'session_id.sig', bare: false, value: { kind: 'sig', victim: 0, of: 1, tweak: 'other' } }], separator: '; ', split: false }],
        ['a real ID signed with a key the app does not have', { cookies: [{ name: 'session_id', bare: false, value: { kind: 'victim', victim: 0, tweak: 'exact' } }, { name: 'session_id.sig', bare: false, value: { kind: 'sig', victim: 0, of: 0, tweak: 'foreign-key' } }], separator: '; ', split: false }],
        ['a real ID with its signature in upper case', { cookies: [{ name: 'session_id', bare: false, value: { kind: 'victim', victim: 0, tweak: 'exact' } }, { name: 'session_id.sig', bare: false, value: { kind: 'sig', victim: 0, of: 0, tweak: 'upper' } }], separator: '; ', split: false }],
        ['an upper-cased real ID with its genuine signature', { cookies: [{ name: 'session_id', bare: false, value: { kind: 'victim', victim: 0, tweak: 'upper' } }, { name: 'session_id.sig', bare: false, value: { kind: 'sig', victim: 0, of: 0, tweak: 'own' } }], separator: '; ', split: false }],
      );
    }
    for (const [what, recipe] of crafted) {
      it(`${what}: no 5xx, the store never sees it, a fresh ID that is not echoed`, async () => {
        const { problems, reply } = await attack(recipe);
        assert.deepEqual(problems, [], `${showHeader(recipe)}\n→ ${reply.status}`);
        if (reply.status === 200) {
          const calls = t.store.log.filter((e) => e.rid === `h${counter}` && e.op === 'get');
          assert.deepEqual(calls.filter((c) => victims.some((v) => v.id === c.id)), [], "the store was asked for a victim's session");
        }
      });
    }

    it('a header over the server limit (20 KB) is refused with a 4xx, not a 5xx', async () => {
      const recipe: HeaderRecipe = { cookies: [{ name: 'session_id', bare: false, value: { kind: 'huge', size: 20_000, fill: 'a' } }], separator: '; ', split: false };
      const { reply } = await attack(recipe);
      assert.ok(reply.status >= 400 && reply.status < 500, `status ${reply.status}`);
    });
  });
}

// ---------------------------------------------------------------- keys and values round-trip

const key = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 12 }),
  fc.constantFrom('__proto__', 'constructor', 'prototype', 'hasOwnProperty', 'toString', '', '0', '-0', '1e3', 'data', 'createdAt', 'touchedAt'),
);
const jsonValue = fc.oneof(
  { weight: 6, arbitrary: fc.jsonValue({ maxDepth: 3, stringUnit: 'binary' }) },
  // JSON's own corner cases, more often than chance would bring them.
  { weight: 1, arbitrary: fc.constantFrom<unknown>(-0, [-0, 0], { x: -0 }, JSON.parse('{"__proto__": {"polluted": true}}'), JSON.parse('{"constructor": {"prototype": {"polluted": true}}}'), '\u2028\u2029', '\ud83d\ude00', Number.MAX_VALUE, Number.MIN_VALUE, -Number.MAX_SAFE_INTEGER, 1e-7) },
);
const entries = fc.uniqueArray(fc.tuple(key, jsonValue), { selector: ([k]) => k, minLength: 1, maxLength: 6 });

/** What JSON carries back for `value`: -0 becomes 0, __proto__ stays an own key. */
const asJson = (value: unknown): unknown => JSON.parse(JSON.stringify(value));

async function roundTrip(t: Target, list: [string, unknown][], token: string): Promise<string[]> {
  const problems: string[] = [];
  registry.set(token, { entries: list, seen: [] });
  const protoBefore = Object.getOwnPropertyNames(Object.prototype).join();
  const first = await post(t, '/rt', undefined, { 'x-token': token });
  const second = await get(t, '/rt', jarOf(first), { 'x-token': token });
  const seen = registry.get(token)?.seen ?? [];
  registry.delete(token);
  if (first.status !== 200 || second.status !== 200) return [`statuses ${first.status}, ${second.status}`];
  const expectedKeys = list.map(([k]) => k).sort();
  const expectedValues = list.map(([, v]) => asJson(v));
  const expectedJson: Record<string, unknown> = {};
  for (const [k, v] of list) Object.defineProperty(expectedJson, k, { value: asJson(v), enumerable: true, writable: true, configurable: true });
  seen.forEach((s, i) => {
    const when = i === 0 ? 'in the request that set them' : 'in the next request';
    if (!isDeepStrictEqual([...s.keys].sort(), expectedKeys)) problems.push(`${when}: keys() ${JSON.stringify(s.keys)}, expected ${JSON.stringify(expectedKeys)}`);
    s.values.forEach((v, j) => {
      if (!isDeepStrictEqual(v, expectedValues[j])) problems.push(`${when}: get(${JSON.stringify(list[j][0])}) gave ${JSON.stringify(v)}${Object.is(v, -0) ? ' (-0)' : ''}, expected ${JSON.stringify(expectedValues[j])}`);
    });
    if (!isDeepStrictEqual(s.json, expectedJson)) problems.push(`${when}: toJSON() differs`);
  });
  if (seen.length !== 2) problems.push(`the handler ran ${seen.length} time(s)`);
  if (Object.getOwnPropertyNames(Object.prototype).join() !== protoBefore) problems.push('Object.prototype changed');
  if (({} as Record<string, unknown>).polluted !== undefined) problems.push('a prototype was polluted');
  return problems;
}

describe('keys and values of any shape round-trip exactly across two requests', function () {
  this.timeout(300_000);
  let counter = 0;

  /** Runs the round-trip property `runs` times on `t`, then closes it; `tag` starts each run's session name. */
  async function roundTripProperty(t: Target, tag: string, runs: number): Promise<void> {
    try {
      await fc.assert(
        fc.asyncProperty(entries, async (list) => {
          const problems = await roundTrip(t, list, `${tag}${++counter}`);
          assert.deepEqual(problems, [], problems.join('\n'));
        }),
        params(runs),
      );
    } finally {
      await t.close();
    }
  }

  it('through MemoryStore (any string key, __proto__ included; nested JSON, unicode, -0)', async () => {
    await roundTripProperty(await target(), 'm', RUNS * 3);
  });

  describe('through RedisStore', () => {
    let redis: { url: string; server: RedisServer | undefined } | undefined;
    let client: Redis | undefined;
    before(async function () {
      redis = await testRedis(this, 'the round-trip property needs a Redis to run on RedisStore');
      client = new Redis(redis.url, { maxRetriesPerRequest: 1 });
    });
    after(async () => {
      await client?.quit().catch(() => undefined);
      await redis?.server?.stop();
    });

    it('with any keys and JSON values, exactly as through MemoryStore', async () => {
      const store = new RedisStore({ client: client!, prefix: `hardening:${process.pid}:${Date.now()}:` });
      await roundTripProperty(await target({ store }), 'r', RUNS * 2);
    });
  });
});

// ---------------------------------------------------------------- security checks around cookies

describe('security: signatures, cookie defaults, session fixation', function () {
  this.timeout(60_000);

  it('when app.keys is a Keygrip instance, signatures are verified through its index()', async () => {
    const keygrip = new Keygrip(KEYS);
    const calls: [string, string][] = [];
    const index = keygrip.index.bind(keygrip);
    keygrip.index = (data: string, digest: string) => {
      calls.push([data, digest]);
      return index(data, digest);
    };
    const t = await target({ keys: keygrip });
    try {
      const created = await post(t, '/touch');
      const id = sessionCookie(created)?.value as string;
      const sig = sessionCookie(created, 'session_id.sig')?.value as string;
      assert.equal(sig, keygrip.sign(`session_id=${id}`), 'the first key signs');
      const again = await post(t, '/touch', jarOf(created));
      assert.equal(again.status, 200);
      assert.deepEqual(calls.at(-1), [`session_id=${id}`, sig], 'the cookie was checked by Keygrip.index(name=value, signature)');
      assert.deepEqual(await storedData(t.inner, id), { touched: 2 }, 'the verified session was used');
    } finally {
      await t.close();
    }
  });

  it('a tampered signature of the same length is rejected and the store is never asked', async () => {
    const t = await target({ keys: KEYS });
    try {
      const created = await post(t, '/touch');
      const id = sessionCookie(created)?.value as string;
      const sig = sessionCookie(created, 'session_id.sig')?.value as string;
      for (let at = 0; at < sig.length; at += 3) {
        const tampered = sig.slice(0, at) + (sig[at] === 'A' ? 'B' : 'A') + sig.slice(at + 1);
        assert.equal(tampered.length, sig.length);
        const before = t.store.log.length;
        const reply = await post(t, '/touch', `session_id=${id}; session_id.sig=${tampered}`);
        assert.equal(reply.status, 200);
        assert.notEqual(sessionCookie(reply)?.value, id, 'a fresh session, not the signed one');
        assert.ok(!t.store.log.slice(before).some((e) => e.id === id), 'the store never saw the ID');
      }
      assert.deepEqual(await storedData(t.inner, id), { touched: 1 }, 'the real session is untouched');
    } finally {
      await t.close();
    }
  });

  it('a cookie signed with an older key of app.keys is accepted and re-signed with the first key', async () => {
    const old = new Keygrip([KEYS[1]]);
    const t = await target({ keys: KEYS });
    try {
      const created = await post(t, '/touch');
      const id = sessionCookie(created)?.value as string;
      const reply = await post(t, '/touch', `session_id=${id}; session_id.sig=${old.sign(`session_id=${id}`)}`);
      assert.equal(reply.status, 200);
      assert.equal(sessionCookie(reply)?.value, id);
      assert.equal(sessionCookie(reply, 'session_id.sig')?.value, new Keygrip(KEYS).sign(`session_id=${id}`));
    } finally {
      await t.close();
    }
  });

  it('cookie defaults: HttpOnly, SameSite=Lax, Path=/, not Secure, expiring in 24 h; the signature cookie alike', async () => {
    const t = await target({ keys: KEYS });
    try {
      const reply = await post(t, '/touch');
      for (const name of ['session_id', 'session_id.sig']) {
        const c = sessionCookie(reply, name);
        assert.ok(c !== undefined, `${name} is set`);
        assert.equal(c.attributes.httponly, true, `${name}: HttpOnly`);
        assert.equal(String(c.attributes.samesite).toLowerCase(), 'lax', `${name}: SameSite=Lax`);
        assert.equal(c.attributes.path, '/', `${name}: Path=/`);
        assert.equal(c.attributes.secure, undefined, `${name}: not Secure by default`);
        const expires = Date.parse(String(c.attributes.expires));
        assert.ok(Math.abs(expires - (Date.now() + 86_400_000)) < 120_000, `${name}: expires in about 24 h`);
      }
    } finally {
      await t.close();
    }
  });

  for (const signed of [false, true]) {
    describe(`session fixation (${signed ? 'signed' : 'unsigned'} cookies)`, () => {
      let t: Target;
      before(async () => {
        t = await target(signed ? { keys: KEYS } : {});
      });
      after(() => t.close());

      it("an attacker who plants their own valid session in the victim's browser gets nothing once the victim logs in", async () => {
        // The attacker gets a genuine session of their own, with something in it.
        const attacker = jarOf(await post(t, '/cart'));
        const attackerId = /session_id=([0-9a-f]{64})/.exec(attacker)?.[1] as string;
        // The victim's browser is made to carry the attacker's cookie(s); the victim logs in.
        const login = await post(t, '/login', attacker, { 'x-user': 'victim' });
        assert.equal(login.status, 200);
        const victimCookie = jarOf(login);
        assert.ok(!victimCookie.includes(attackerId), 'login moved the victim to a new ID');
        // The victim is logged in (and keeps what the session held, as regenerate() promises).
        assert.deepEqual(JSON.parse((await get(t, '/me', victimCookie)).body), { user: 'victim', cart: ['attacker-planted item'] });
        // The attacker's ID now gives nothing: not logged in, no data, no session in the store.
        const probe = await get(t, '/me', attacker);
        assert.deepEqual(JSON.parse(probe.body), { user: null, cart: null });
        assert.equal(await storedData(t.inner, attackerId), undefined, "the attacker's ID is gone from the store");
        assert.equal(sessionCookie(probe)?.value, undefined, 'and it is not revived');
      });

      it('an attacker who plants a made-up ID gets nothing: the victim never gets that ID', async () => {
        const madeUp = 'ab'.repeat(32);
        const planted = signed ? `session_id=${madeUp}; session_id.sig=${new Keygrip(['guess']).sign(`session_id=${madeUp}`)}` : `session_id=${madeUp}`;
        const login = await post(t, '/login', planted, { 'x-user': 'victim' });
        assert.equal(login.status, 200);
        const issued = sessionCookie(login)?.value as string;
        assert.match(issued, HEX64);
        assert.notEqual(issued, madeUp);
        assert.deepEqual(JSON.parse((await get(t, '/me', planted)).body), { user: null, cart: null });
        assert.equal(await storedData(t.inner, madeUp), undefined);
        assert.deepEqual(JSON.parse((await get(t, '/me', jarOf(login))).body).user, 'victim');
      });
    });
  }
});
