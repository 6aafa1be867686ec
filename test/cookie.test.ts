/**
 * SPEC "Options", cookie rows: cookieName, cookiePath, cookieDomain,
 * cookieSecure (with Koa's app.proxy), cookieHttpOnly, sameSite and
 * cookieExpires reach the Set-Cookie header; a Secure cookie that would go out on plain HTTP fails
 * the request and commits nothing.
 */
import { createHmac } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import Cookies from 'cookies';
import fc from 'fast-check';
import Keygrip from 'keygrip';
import type { Context } from 'koa';
import type { SessionOptions } from '../src';
import { cookieValue } from '../src/cookie';
import { HmacSha1, MAX_DATA_LENGTH, keygripSignature } from '../src/hmac-sha1';
import { SignatureMemo, sameInConstantTime } from '../src/signature';
import { Jar, RecordingStore, call, closeAll, cookieNamed, expect, setCookies, start } from './support/app';

afterEach(closeAll);

const HTTPS = { 'X-Forwarded-Proto': 'https' };

/** POST sets a=<query a or 1>, DELETE destroys; other responses report the session. */
async function handler(ctx: Context): Promise<void> {
  if (ctx.method === 'POST') ctx.session.set('a', Number(ctx.query.a ?? 1));
  if (ctx.method === 'DELETE') {
    await ctx.session.destroy();
    ctx.body = 'gone';
    return;
  }
  ctx.body = { id: ctx.session.id, isNew: ctx.session.isNew, a: ctx.session.get('a') ?? null };
}

async function firstCookie(opts: SessionOptions, startOpts: { proxy?: boolean; keys?: string[] } = {}, headers: Record<string, string> = {}) {
  const store = new RecordingStore();
  const run = await start({ store, ...opts }, handler, startOpts);
  const res = await call(run, new Jar(), 'post', '/app/page', headers);
  return { res, store, run };
}

describe('Cookie settings reach the Set-Cookie header', () => {
  it('cookieName names the cookie, and the session comes back under that name', async () => {
    const store = new RecordingStore();
    const run = await start({ store, cookieName: 'app_sid' }, handler);
    const jar = new Jar();
    const res = await call(run, jar, 'post');
    expect(setCookies(res).map((c) => c.name)).to.deep.equal(['app_sid']);
    expect(cookieNamed(res, 'app_sid')?.value).to.equal(res.body.id);
    expect((await call(run, jar, 'get')).body).to.deep.equal({ id: res.body.id, isNew: false, a: 1 });
  });

  it('with a custom cookieName, a session_id cookie is ignored', async () => {
    const store = new RecordingStore();
    const run = await start({ store, cookieName: 'app_sid' }, handler);
    const id = (await call(run, new Jar(), 'post')).body.id;
    const res = await call(run, new Jar().set('session_id', id), 'get');
    expect(res.body.isNew).to.equal(true);
  });

  it('with a custom cookieName and app.keys, the signature cookie is <name>.sig', async () => {
    const { res } = await firstCookie({ cookieName: 'app_sid' }, { keys: ['k'] });
    expect(setCookies(res).map((c) => c.name).sort()).to.deep.equal(['app_sid', 'app_sid.sig']);
  });

  it('cookiePath sets Path', async () => {
    const { res } = await firstCookie({ cookiePath: '/app' });
    expect(cookieNamed(res)?.attrs.path).to.equal('/app');
  });

  it("a cookiePath with '<' (RFC 6265 allows it; the cookies package's own check refuses it) is written as given", async () => {
    const { res } = await firstCookie({ cookiePath: '/a<b' }, { keys: ['k'] });
    expect(setCookies(res).map((c) => c.attrs.path)).to.deep.equal(['/a<b', '/a<b']);
  });

  it('cookiePath also goes on the signature cookie', async () => {
    const { res } = await firstCookie({ cookiePath: '/app' }, { keys: ['k'] });
    expect(cookieNamed(res, 'session_id.sig')?.attrs.path).to.equal('/app');
  });

  it('cookieDomain sets Domain', async () => {
    const { res } = await firstCookie({ cookieDomain: 'example.com' });
    expect(cookieNamed(res)?.attrs.domain).to.equal('example.com');
  });

  it('cookieHttpOnly: false leaves HttpOnly off', async () => {
    const { res } = await firstCookie({ cookieHttpOnly: false });
    const cookie = cookieNamed(res);
    expect(cookie?.value).to.match(/^[0-9a-f]{64}$/);
    expect(cookie?.attrs.httponly).to.equal(undefined);
  });

  it('sameSite: strict sends SameSite=Strict', async () => {
    const { res } = await firstCookie({ sameSite: 'strict' });
    expect(String(cookieNamed(res)?.attrs.samesite).toLowerCase()).to.equal('strict');
  });

  it('sameSite: false leaves SameSite off', async () => {
    const { res } = await firstCookie({ sameSite: false });
    const cookie = cookieNamed(res);
    expect(cookie?.value).to.match(/^[0-9a-f]{64}$/);
    expect(cookie?.attrs.samesite).to.equal(undefined);
  });

  it('sameSite: none with cookieSecure sends SameSite=None and Secure', async () => {
    const { res } = await firstCookie({ sameSite: 'none', cookieSecure: true }, { proxy: true }, HTTPS);
    expect(res.status).to.equal(200);
    const cookie = cookieNamed(res);
    expect(String(cookie?.attrs.samesite).toLowerCase()).to.equal('none');
    expect(cookie?.attrs.secure).to.equal(true);
  });

  it('a response carries exactly one Set-Cookie for the session however often the handler sets values, even when the app set that cookie itself', async () => {
    const run = await start({ store: new RecordingStore() }, (ctx) => {
      ctx.cookies.set('session_id', 'stale-value-from-the-app');
      ctx.cookies.set('flash', 'kept');
      for (let i = 0; i < 5; i++) ctx.session.set(`k${i}`, i);
      ctx.body = { id: ctx.session.id };
    });
    const res = await call(run, new Jar(), 'post');
    const session = setCookies(res).filter((c) => c.name === 'session_id');
    expect(session.map((c) => c.value), 'Set-Cookie lines for session_id').to.deep.equal([res.body.id]);
    expect(cookieNamed(res, 'flash')?.value, "the app's other cookie").to.equal('kept');
  });

  it('a Set-Cookie line the app set as a plain string (ctx.set) is kept beside the session cookie', async () => {
    const run = await start({ store: new RecordingStore() }, (ctx) => {
      ctx.set('Set-Cookie', 'theme=dark; path=/');
      ctx.session.set('a', 1);
      ctx.body = { id: ctx.session.id };
    });
    const res = await call(run, new Jar(), 'post');
    expect(setCookies(res).map((c) => `${c.name}=${c.value}`)).to.deep.equal(['theme=dark', `session_id=${res.body.id}`]);
  });

  it("an app cookie whose name begins with the session cookie's name is kept", async () => {
    const run = await start({ store: new RecordingStore() }, (ctx) => {
      ctx.cookies.set('session_idx', 'kept');
      ctx.cookies.set('session_id_theme', 'dark');
      ctx.session.set('a', 1);
      ctx.body = { id: ctx.session.id };
    });
    const res = await call(run, new Jar(), 'post');
    expect(setCookies(res).map((c) => `${c.name}=${c.value}`)).to.deep.equal(['session_idx=kept', 'session_id_theme=dark', `session_id=${res.body.id}`]);
  });

  it('signed, a response carries exactly one session cookie and one signature cookie, the one signing the ID, even when the app set both itself', async () => {
    const run = await start({ store: new RecordingStore() }, (ctx) => {
      ctx.cookies.set('session_id', 'stale-value-from-the-app', { signed: true });
      ctx.session.set('k', 1);
      ctx.body = { id: ctx.session.id };
    }, { keys: ['k1'] });
    const res = await call(run, new Jar(), 'post');
    const session = setCookies(res).filter((c) => c.name === 'session_id');
    const signature = setCookies(res).filter((c) => c.name === 'session_id.sig');
    expect(session.map((c) => c.value), 'Set-Cookie lines for session_id').to.deep.equal([res.body.id]);
    expect(signature.map((c) => c.value), 'Set-Cookie lines for session_id.sig').to.deep.equal([new Keygrip(['k1']).sign(`session_id=${res.body.id}`)]);
  });
});

describe('Signed cookies on error responses', () => {
  it('signed, an error response after a change still carries the signature cookie, so the session comes back', async () => {
    const run = await start({ store: new RecordingStore() }, async (ctx) => {
      if (ctx.method === 'POST') {
        ctx.session.set('a', 1);
        ctx.throw(409, 'saved, then refused');
      }
      ctx.body = { id: ctx.session.id, isNew: ctx.session.isNew, a: ctx.session.get('a') ?? null };
    }, { keys: ['k1'] });
    const jar = new Jar();
    const failed = await call(run, jar, 'post');
    expect(failed.status).to.equal(409);
    const id = cookieNamed(failed)?.value as string;
    expect(cookieNamed(failed, 'session_id.sig')?.value, 'the signature cookie').to.equal(new Keygrip(['k1']).sign(`session_id=${id}`));
    expect((await call(run, jar, 'get')).body).to.deep.equal({ id, isNew: false, a: 1 });
  });
});

describe('app.keys that cannot sign', () => {
  it('an empty Buffer in app.keys fails the request with a SessionConfigError naming app.keys[1], before the handler runs, storing nothing', async () => {
    const store = new RecordingStore();
    let ran = false;
    const run = await start({ store }, (ctx) => {
      ran = true;
      ctx.session.set('a', 1);
      ctx.body = 'ok';
    });
    (run.app as { keys: unknown }).keys = [Buffer.from('a real secret'), Buffer.alloc(0)];
    const res = await call(run, new Jar(), 'post');
    expect(res.status).to.equal(500);
    expect(ran, 'handler ran').to.equal(false);
    expect(setCookies(res)).to.deep.equal([]);
    expect(store.calls).to.deep.equal([]);
    const error = run.errors[0] as { name: string; message: string };
    expect(error.name).to.equal('SessionConfigError');
    expect(error.message).to.include('app.keys[1] is an empty Buffer');
  });
});

describe('cookieSecure', () => {
  it('behind a proxy (app.proxy and X-Forwarded-Proto: https) the cookie is Secure and the session works', async () => {
    const store = new RecordingStore();
    const run = await start({ store, cookieSecure: true }, handler, { proxy: true });
    const jar = new Jar();
    const res = await call(run, jar, 'post', '/', HTTPS);
    expect(res.status).to.equal(200);
    expect(cookieNamed(res)?.attrs.secure).to.equal(true);
    expect((await call(run, jar, 'get', '/', HTTPS)).body).to.deep.equal({ id: res.body.id, isNew: false, a: 1 });
  });

  it('on plain HTTP a request that must send the cookie fails with an error naming cookieSecure and app.proxy, and stores nothing', async () => {
    const store = new RecordingStore();
    const run = await start({ store, cookieSecure: true }, handler);
    const res = await call(run, new Jar(), 'post');
    expect(res.status).to.be.at.least(500);
    expect(setCookies(res)).to.deep.equal([]);
    expect(store.callsOf('set')).to.deep.equal([]);
    expect(store.map.size).to.equal(0);
    expect(run.errors).to.have.length(1);
    const message = (run.errors[0] as Error).message;
    expect(message).to.include('cookieSecure');
    expect(message).to.include('app.proxy');
  });

  it('on plain HTTP a change to a stored session fails and is not committed', async () => {
    const store = new RecordingStore();
    const run = await start({ store, cookieSecure: true }, handler, { proxy: true });
    const jar = new Jar();
    await call(run, jar, 'post', '/?a=1', HTTPS);
    const writes = store.callsOf('set').length;
    const res = await call(run, jar, 'post', '/?a=2');
    expect(res.status).to.be.at.least(500);
    expect(store.callsOf('set').length).to.equal(writes);
    expect((await call(run, jar, 'get', '/', HTTPS)).body.a).to.equal(1);
  });

  it('on plain HTTP a request that needs no cookie is not failed', async () => {
    const store = new RecordingStore();
    const run = await start({ store, cookieSecure: true }, handler, { proxy: true });
    const fresh = await call(run, new Jar(), 'get');
    expect(fresh.status).to.equal(200);
    expect(fresh.body.isNew).to.equal(true);
    const jar = new Jar();
    await call(run, jar, 'post', '/?a=7', HTTPS);
    const read = await call(run, jar, 'get');
    expect(read.status).to.equal(200);
    expect(read.body.a).to.equal(7);
  });

  it('on plain HTTP a change dropped because a logout went ahead of it needs no cookie, and is not failed', async () => {
    const store = new RecordingStore();
    const signal = () => {
      let fire!: () => void;
      const fired = new Promise<void>((resolve) => (fire = resolve));
      return { fire, fired };
    };
    const logoutHolds = signal();
    const logoutIn = signal();
    const changeAsked = signal();
    const lockMode = (ctx: { path: string }) => {
      if (ctx.path === '/change') changeAsked.fire();
      return 'write' as const;
    };
    const run = await start({ store, cookieSecure: true, lockMode }, async (ctx) => {
      if (ctx.path === '/logout') {
        await ctx.session.destroy();
        logoutIn.fire();
        await logoutHolds.fired;
      } else {
        ctx.session.set('a', 2);
      }
      ctx.body = 'ok';
    }, { proxy: true });
    const id = cookieNamed(await call(run, new Jar(), 'post', '/login', HTTPS))?.value as string;

    const logout = call(run, new Jar().set('session_id', id), 'post', '/logout', HTTPS);
    await logoutIn.fired;
    const change = call(run, new Jar().set('session_id', id), 'post', '/change'); // plain HTTP, in line behind the logout
    await changeAsked.fired;
    logoutHolds.fire();

    expect((await logout).status).to.equal(200);
    const res = await change;
    expect(res.status, 'the plain-HTTP change').to.equal(200);
    expect(setCookies(res)).to.deep.equal([]);
    expect(store.map.size, 'sessions stored').to.equal(0);
    expect(run.errors).to.deep.equal([]);
  });

  it('without app.proxy an X-Forwarded-Proto: https header is not trusted, and the request fails', async () => {
    const store = new RecordingStore();
    const run = await start({ store, cookieSecure: true }, handler, { proxy: false });
    const res = await call(run, new Jar(), 'post', '/', HTTPS);
    expect(res.status).to.be.at.least(500);
    expect(setCookies(res)).to.deep.equal([]);
    expect(store.callsOf('set')).to.deep.equal([]);
  });

  it('on plain HTTP a destroy() still removes the session, and the request fails', async () => {
    const store = new RecordingStore();
    const run = await start({ store, cookieSecure: true }, handler, { proxy: true });
    const jar = new Jar();
    const id = (await call(run, jar, 'post', '/', HTTPS)).body.id;
    const res = await call(run, new Jar().set('session_id', id), 'delete');
    expect(res.status).to.be.at.least(500);
    expect(store.map.has(id)).to.equal(false);
    expect((await call(run, jar, 'get', '/', HTTPS)).body.isNew).to.equal(true);
  });
});

describe('cookieExpires: false leaves Expires off every live cookie line, whatever sends it', () => {
  const KEYS = ['new key', 'old key'];

  /** POST /set stores a value, POST /regen regenerates, POST /fail stores a value and throws; anything else reads. */
  async function app(opts: SessionOptions) {
    return start(
      { store: new RecordingStore(), cookieExpires: false, ...opts },
      async (ctx: Context) => {
        if (ctx.path === '/set' || ctx.path === '/fail') ctx.session.set('a', 1);
        if (ctx.path === '/regen') await ctx.session.regenerate();
        if (ctx.path === '/fail') ctx.throw(409, 'refused after the change');
        ctx.body = { id: ctx.session.id };
      },
      { keys: KEYS },
    );
  }

  /** The session cookie's and its signature's lines: both there, for `id`, neither with Expires. */
  function expectBrowserSessionLines(res: { headers: Record<string, unknown> }, id: string | undefined, what: string): void {
    const lines = setCookies(res).filter((c) => c.name === 'session_id' || c.name === 'session_id.sig');
    expect(lines.map((c) => c.name).sort(), `${what}: both lines`).to.deep.equal(['session_id', 'session_id.sig']);
    if (id !== undefined) expect(cookieNamed(res)?.value, `${what}: the session's ID`).to.equal(id);
    for (const line of lines) expect(line.attrs, `${what}: ${line.name} without Expires`).to.not.have.property('expires');
  }

  it('a rolling re-send', async () => {
    const run = await app({ rolling: true });
    const jar = new Jar();
    const id = (await call(run, jar, 'post', '/set')).body.id as string;
    expectBrowserSessionLines(await call(run, jar, 'get', '/read'), id, 'rolling');
  });

  it('a re-sign of a cookie signed with an older key', async () => {
    const run = await app({});
    const id = (await call(run, new Jar(), 'post', '/set')).body.id as string;
    const oldSignature = createHmac('sha1', KEYS[1]).update(`session_id=${id}`).digest('base64url');
    const res = await call(run, new Jar().set('session_id', id).set('session_id.sig', oldSignature), 'get', '/read');
    expectBrowserSessionLines(res, id, 're-signed');
    expect(cookieNamed(res, 'session_id.sig')?.value, 'signed with the first key now').to.equal(createHmac('sha1', KEYS[0]).update(`session_id=${id}`).digest('base64url'));
  });

  it('a regenerate', async () => {
    const run = await app({});
    const jar = new Jar();
    const id = (await call(run, jar, 'post', '/set')).body.id as string;
    const res = await call(run, jar, 'post', '/regen');
    expect(res.body.id).to.not.equal(id);
    expectBrowserSessionLines(res, res.body.id as string, 'regenerated');
  });

  it("an error response from Koa's error handler", async () => {
    const run = await app({});
    const res = await call(run, new Jar(), 'post', '/fail');
    expect(res.status).to.equal(409);
    expectBrowserSessionLines(res, undefined, 'error response');
  });
});

describe('Set-Cookie lines are exactly what ctx.cookies.set writes', () => {
  /** The Set-Cookie lines the cookies package writes for `value` with these attributes. */
  function cookiesWouldWrite(name: string, value: string | null, attributes: Cookies.SetOption, keys: string[] | undefined): string[] {
    const headers = new Map<string, string | string[]>();
    const res = {
      getHeader: (header: string) => headers.get(header.toLowerCase()),
      setHeader: (header: string, v: string | string[]) => headers.set(header.toLowerCase(), v),
    };
    const req = { headers: {}, socket: { encrypted: true } };
    new Cookies(req as unknown as IncomingMessage, res as unknown as ServerResponse, { keys, secure: true }).set(name, value, attributes);
    return headers.get('set-cookie') as string[];
  }

  function linesOf(res: { headers: Record<string, unknown> }): string[] {
    const header = res.headers['set-cookie'];
    return header === undefined ? [] : ([] as string[]).concat(header as string | string[]);
  }

  const settings: { label: string; opts: SessionOptions }[] = [
    { label: 'the defaults', opts: {} },
    { label: 'name, path, domain, SameSite=Strict', opts: { cookieName: 'sid', cookiePath: '/app', cookieDomain: 'example.test', sameSite: 'strict' } },
    { label: 'Secure, SameSite=None, not HttpOnly', opts: { cookieSecure: true, sameSite: 'none', cookieHttpOnly: false } },
    { label: 'no SameSite', opts: { sameSite: false } },
    { label: 'no Expires (cookieExpires: false)', opts: { cookieExpires: false } },
  ];
  for (const { label, opts } of settings) {
    for (const keys of [undefined, ['first key', 'older key']]) {
      it(`${label}, ${keys === undefined ? 'unsigned' : 'signed'}: the cookie sent, then the cookie expired`, async () => {
        const name = opts.cookieName ?? 'session_id';
        const attributes = {
          path: opts.cookiePath ?? '/',
          domain: opts.cookieDomain,
          secure: opts.cookieSecure ?? false,
          httpOnly: opts.cookieHttpOnly ?? true,
          sameSite: opts.sameSite ?? 'lax',
          signed: keys !== undefined,
          overwrite: true,
        } as const;
        const run = await start({ store: new RecordingStore(), ...opts }, handler, { keys, proxy: true });
        const jar = new Jar();
        const sent = await call(run, jar, 'post', '/app/x', HTTPS);
        const id = sent.body.id as string;
        // Without an expires option the cookies package writes a cookie that ends with the browser session.
        const expiresAttr = cookieNamed(sent, name)?.attrs.expires;
        const sentAttributes = opts.cookieExpires === false ? attributes : { ...attributes, expires: new Date(String(expiresAttr)) };
        expect(linesOf(sent)).to.deep.equal(cookiesWouldWrite(name, id, sentAttributes, keys));
        expect(expiresAttr === undefined, 'no Expires exactly when cookieExpires is false').to.equal(opts.cookieExpires === false);

        const expired = await call(run, jar, 'delete', '/app/x', HTTPS);
        expect(linesOf(expired)).to.deep.equal(cookiesWouldWrite(name, null, attributes, keys));
      });
    }
  }
});

describe('The session cookie is read where ctx.cookies.get finds it', () => {
  /** What the cookies package (ctx.cookies) reads as the cookie `name` of this Cookie header. */
  function cookiesWouldRead(header: string, name: string): string | undefined {
    const req = { headers: { cookie: header } } as unknown as IncomingMessage;
    return new Cookies(req, {} as ServerResponse).get(name, { signed: false });
  }

  it('cookieValue answers as the cookies package for any header built of names, spaces, quotes, = and ;', () => {
    const piece = fc.constantFrom('session_id', 'session_id.sig', 'xsession_id', 'session_i', 'sid', '=', ';', ',', ' ', '  ', '"', 'ab', '\t', '');
    const header = fc.array(piece, { maxLength: 12 }).map((parts) => parts.join(''));
    fc.assert(
      fc.property(header, fc.constantFrom('session_id', 'session_id.sig', 'sid'), (h, name) => {
        expect(cookieValue(h, name), JSON.stringify(h)).to.equal(cookiesWouldRead(h, name));
      }),
      { numRuns: 20_000 },
    );
    expect(cookieValue(undefined, 'session_id')).to.equal(undefined);
  });

  for (const keys of [undefined, ['first key', 'older key']]) {
    it(`${keys === undefined ? 'unsigned' : 'signed'}: a request loads the session exactly when ctx.cookies.get reads its ID (and signature) from the header`, async () => {
      const run = await start({ store: new RecordingStore() }, async (ctx) => {
        if (ctx.method === 'POST') ctx.session.set('a', 1);
        ctx.body = {
          loaded: ctx.session.isNew ? null : ctx.session.id,
          value: ctx.cookies.get('session_id', { signed: false }) ?? null,
          signature: ctx.cookies.get('session_id.sig', { signed: false }) ?? null,
        };
      }, { keys });
      const created = await call(run, new Jar(), 'post', '/');
      const id = created.body.loaded === null ? String(cookieNamed(created)?.value) : String(created.body.loaded);
      const sig = keys === undefined ? 'none' : String(cookieNamed(created, 'session_id.sig')?.value);
      const cookie = fc.constantFrom(
        `session_id=${id}`, `session_id="${id}"`, `session_id= ${id}`, `session_id =${id}`, `xsession_id=${id}`, `session_id=${id}x`,
        `session_id=${'b'.repeat(64)}`, 'session_id=', `session_id.sig=${sig}`, `session_id.sig="${sig}"`, 'session_id.sig=AAAA', 'other=1',
      );
      const separator = fc.constantFrom(';', '; ', ';  ', ' ;', ';;');
      const header = fc.tuple(fc.constantFrom('', ' ', '  '), fc.array(fc.tuple(cookie, separator), { minLength: 1, maxLength: 4 }))
        .map(([lead, pairs]) => lead + pairs.map(([c, sep], i) => (i === 0 ? c : sep + c)).join(''));
      await fc.assert(
        fc.asyncProperty(header, async (h) => {
          const res = await run.http.get('/').set('Cookie', h);
          expect(res.status).to.equal(200);
          const { value, signature } = res.body as { value: string | null; signature: string | null };
          const verified = value === id && (keys === undefined || signature === sig);
          expect(res.body.loaded, `${h} (ctx.cookies read ${value} / ${signature})`).to.equal(verified ? id : null);
        }),
        { numRuns: 150 },
      );
    });
  }
});

describe('sameInConstantTime, the signature check', () => {
  it('accepts only the very signature, whatever was compared before', () => {
    const right = keygripSignature('k1', 'session_id=abc');
    const other = keygripSignature('k1', 'session_id=abd');
    const oneOff = right.slice(0, -1) + (right.endsWith('A') ? 'B' : 'A');
    // Each character of the right signature swapped for one that is the same in its low byte, or not ASCII at all.
    const lookalikes = [...right].flatMap((c, i) => [String.fromCharCode(c.charCodeAt(0) + 0x100), '\u00e9', '\u{1F600}'].map((s) => right.slice(0, i) + s + right.slice(i + 1)));
    const results: string[] = [];
    for (const given of [right, other, oneOff, right.slice(1), `${right}A`, '', ...lookalikes, right]) {
      sameInConstantTime(right, right); // the buffers now hold the right signature
      if (sameInConstantTime(right, given)) results.push(given);
    }
    expect(results).to.deep.equal([right, right]);
  });
});

describe('HmacSha1, the signing HMAC with its key hashed once', () => {
  const expected = (key: string | Uint8Array, data: string) => createHmac('sha1', key).update(data).digest('base64url');

  it('equals crypto.createHmac on messages of every length around the block boundaries, under keys of every length around a block', () => {
    const wrong: string[] = [];
    // Messages of 0..200 characters of 1 to 4 UTF-8 bytes each (55/56 and 119/120 bytes change how many blocks the
    // padding takes; 3-byte ones fill the scratch buffer as far as it goes), keys of 0..130 bytes (over 64 it is hashed first).
    const texts = ['abcdefghijklmnopqrstuvwxyz0123456789'.repeat(6), 'é'.repeat(200), '€'.repeat(200), '😀'.repeat(100)];
    for (const keyLength of [0, 1, 20, 63, 64, 65, 100, 130]) {
      const key = 'k'.repeat(keyLength);
      const hmac = new HmacSha1(key);
      for (let length = 0; length <= 200; length++) {
        for (const text of texts) {
          const data = text.slice(0, length);
          if (hmac.base64url(data) !== expected(key, data)) wrong.push(`key of ${keyLength}, message of ${length} of ${text[0]}`);
        }
      }
    }
    expect(wrong).to.deep.equal([]);
  });

  it('equals crypto.createHmac around its longest message, which fills its scratch space with 3-byte characters, and on longer ones, which it hands to createHmac', () => {
    const hmac = new HmacSha1('key');
    const wrong: string[] = [];
    for (const length of [MAX_DATA_LENGTH - 1, MAX_DATA_LENGTH, MAX_DATA_LENGTH + 1, 3 * MAX_DATA_LENGTH]) {
      for (const text of ['a', 'é', '€', '😀']) {
        const data = text.repeat(length).slice(0, length);
        if (hmac.base64url(data) !== expected('key', data)) wrong.push(`${length} units of ${text}`);
      }
      // The same instance still signs short messages right after a long one.
      if (hmac.base64url('session_id=abc') !== expected('key', 'session_id=abc')) wrong.push(`a short message after ${length} units`);
    }
    expect(wrong).to.deep.equal([]);
  });

  it('equals crypto.createHmac for any key and any message, non-ASCII, lone surrogates and long ones included, however the calls interleave', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.string({ unit: 'binary', maxLength: 100 }), fc.uint8Array({ maxLength: 100 })),
        fc.array(fc.oneof(fc.string({ unit: 'binary', maxLength: 80 }), fc.string({ unit: 'grapheme', minLength: 100, maxLength: 2000 })), { minLength: 1, maxLength: 4 }),
        (key, messages) => {
          const hmac = new HmacSha1(key);
          const other = new HmacSha1('another key');
          for (const data of messages) {
            expect(hmac.base64url(data), JSON.stringify(data)).to.equal(expected(key, data));
            expect(other.base64url(data)).to.equal(expected('another key', data));
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it("signs the session cookie as Keygrip does (session_id=<64 hex>)", () => {
    const id = 'a5b508d877e7084fe8eccb6a4031a935cd26b5a4718e58d781df997507da82e3';
    const keys = ['bench key one, long enough to be a real secret', 'k1'];
    for (const key of keys) expect(new HmacSha1(key).base64url(`session_id=${id}`)).to.equal(new Keygrip([key]).sign(`session_id=${id}`));
  });
});

describe('SignatureMemo, the remembered HMACs of cookie values', () => {
  it("gives Keygrip's signature for every value, before and after its generations turn over, and starts afresh for a new key", () => {
    const memo = new SignatureMemo();
    const sign = (key: string, value: string) => new Keygrip([key]).sign(`session_id=${value}`);
    const values = Array.from({ length: 25_000 }, (_, i) => `v${i}`);
    const wrong = (key: string, list: string[], remember = true) =>
      list.filter((value) => memo.of(key, 'session_id', value, remember) !== sign(key, value));
    expect(wrong('first', values.slice(0, 100), false), 'signed without being remembered').to.deep.equal([]);
    expect(wrong('first', values), 'first pass: 2.5 generations').to.deep.equal([]);
    expect(wrong('first', values.slice(0, 100)), 'values dropped with an old generation').to.deep.equal([]);
    expect(wrong('first', values.slice(-100)), 'values still remembered').to.deep.equal([]);
    expect(wrong('second', values.slice(-100)), 'a new first key').to.deep.equal([]);
    expect(wrong('first', values.slice(-100)), 'back to the old key').to.deep.equal([]);
    expect(wrong('first', values.slice(-100), false), 'remembered, asked without remembering').to.deep.equal([]);
  });
});
