/**
 * The example app in a real browser: headless Chromium clicks through every
 * page the way a person would, and leaves a screenshot of each in
 * test-output/.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { Middleware } from 'koa';
import type { Browser, BrowserContext, Cookie, Locator, Page } from 'playwright-core';
import type { Running } from './support/app';
import { closeAll, start } from './support/app';
import { gate, type Gate } from './support/concurrency';
import type { RunningExample } from './support/browser';
import { chromiumAvailable, keepToOrigin, launchChromium, screenshot, startExample } from './support/browser';

describe('the example app in a real browser', function () {
  this.timeout(120_000);

  let browser: Browser | undefined;
  let example: RunningExample | undefined;
  let origin = '';
  let context: BrowserContext;
  let page: Page;
  let foreignRequests: string[];

  before(async function () {
    if (!chromiumAvailable()) return this.skip();
    example = await startExample();
    origin = example.origin;
    browser = await launchChromium();
  });

  after(async () => {
    await browser?.close();
    await example?.close();
  });

  beforeEach(async () => {
    ({ context, page, foreignRequests } = await freshPage());
  });

  afterEach(async () => {
    await context?.close();
    assert.deepEqual(foreignRequests, [], 'pages must load nothing from other origins');
  });

  async function freshPage(cookies: Cookie[] = []): Promise<{ context: BrowserContext; page: Page; foreignRequests: string[] }> {
    const fresh = await browser!.newContext({ viewport: { width: 1000, height: 700 } });
    fresh.setDefaultTimeout(30_000);
    await fresh.addCookies(cookies);
    const foreign = await keepToOrigin(fresh, origin);
    return { context: fresh, page: await fresh.newPage(), foreignRequests: foreign };
  }

  const go = (path: string) => page.goto(origin + path);

  /**
   * Clicks a button that submits a form and waits until the page the server
   * answers with has loaded: click() waits only for the navigation to start,
   * and a reload that lands in the middle of it fails.
   */
  async function submit(button: Locator): Promise<void> {
    await button.click();
    await page.waitForLoadState();
  }

  async function signIn(username: string, password: string): Promise<void> {
    await go('/login');
    await page.getByLabel('Username').fill(username);
    await page.getByLabel('Password').fill(password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('#name, [role=alert]').waitFor(); // the profile, or the form again with an error
  }

  async function sessionCookie(from: BrowserContext = context): Promise<Cookie | undefined> {
    return (await from.cookies(origin)).find((cookie) => cookie.name === 'session_id');
  }

  it('signing in shows the user on the profile page', async () => {
    await go('/');
    await screenshot(page, 'home');
    await go('/login');
    await screenshot(page, 'login');
    await signIn('alice', 'wonderland');
    assert.equal(new URL(page.url()).pathname, '/profile');
    assert.equal(await page.locator('#name').textContent(), 'Alice Liddell');
    assert.match(await page.locator('header').innerText(), /Signed in as Alice Liddell/);
    await screenshot(page, 'profile');
  });

  it('a wrong password is refused and nobody is signed in', async () => {
    await signIn('alice', 'not-her-password');
    assert.match(await page.getByRole('alert').innerText(), /Wrong username or password/);
    await screenshot(page, 'login-refused');
    await go('/profile');
    assert.equal(new URL(page.url()).pathname, '/login');
  });

  it('the session cookie is HttpOnly and SameSite=Lax', async () => {
    await signIn('bob', 'builder');
    const cookie = await sessionCookie();
    assert.ok(cookie, 'a session_id cookie is set');
    assert.equal(cookie.httpOnly, true);
    assert.equal(cookie.sameSite, 'Lax');
    const visibleToScripts: string = await page.evaluate('document.cookie');
    assert.doesNotMatch(visibleToScripts, /session_id/);
  });

  it('signing in gives the session a new ID, and the old one stops working', async () => {
    await go('/login'); // the sign-in form's CSRF token already makes a session
    const before = await sessionCookie();
    assert.ok(before, 'the sign-in page starts a session');
    const beforeCookies = await context.cookies(origin);
    await signIn('alice', 'wonderland');
    const after = await sessionCookie();
    assert.ok(after);
    assert.notEqual(after.value, before.value);

    const planted = await freshPage(beforeCookies);
    try {
      await planted.page.goto(`${origin}/profile`);
      assert.equal(new URL(planted.page.url()).pathname, '/login', 'the pre-sign-in ID is not signed in');
    } finally {
      await planted.context.close();
    }
  });

  it('the cart survives a reload', async () => {
    await go('/cart');
    assert.match(await page.locator('#cart').innerText(), /empty/);
    await submit(page.getByRole('button', { name: 'Add Tea' }));
    await submit(page.getByRole('button', { name: 'Add Tea' }));
    await submit(page.getByRole('button', { name: 'Add Jam' }));
    await page.reload();
    let cart = await page.locator('#cart').innerText();
    assert.match(cart, /Tea × 2/);
    assert.match(cart, /Jam × 1/);

    await submit(page.locator('#cart li', { hasText: 'Tea' }).getByRole('button', { name: 'Remove one' }));
    await page.reload();
    cart = await page.locator('#cart').innerText();
    assert.match(cart, /Tea × 1/);
    assert.match(cart, /Jam × 1/);
    await screenshot(page, 'cart');
  });

  it('the wizard walks forward and back, sums up what was entered, and is cleared when done', async () => {
    const step = async () => Number(await page.locator('#wizard').getAttribute('data-step'));
    const click = (name: string) => submit(page.getByRole('button', { name, exact: true }));

    await go('/wizard');
    assert.equal(await step(), 1);
    // Markup in a value must come back as text, never as markup.
    await page.getByLabel('Team name').fill('<b>Rockets</b>');
    await screenshot(page, 'wizard-1');
    await click('Next');
    assert.equal(await step(), 2);
    await page.getByLabel('Team').check();
    await screenshot(page, 'wizard-2');
    await click('Back');
    assert.equal(await step(), 1);
    assert.equal(await page.getByLabel('Team name').inputValue(), '<b>Rockets</b>');
    await click('Next');
    assert.equal(await page.getByLabel('Team').isChecked(), true, 'the plan chosen before going back is kept');
    await click('Next');
    assert.equal(await step(), 3);
    await page.getByLabel('Invite a teammate').fill('carol@example.test');
    await screenshot(page, 'wizard-3');
    await click('Next');
    assert.equal(await step(), 4);

    await page.reload(); // the wizard lives in the session, not in the page
    const summary = await page.locator('#summary').innerText();
    assert.match(summary, /<b>Rockets<\/b>/);
    assert.match(summary, /Team/);
    assert.match(summary, /carol@example\.test/);
    assert.equal(await page.locator('#summary b').count(), 0, 'the team name is not rendered as markup');
    await screenshot(page, 'wizard-summary');
    await click('Back');
    assert.equal(await step(), 3);
    assert.equal(await page.getByLabel('Invite a teammate').inputValue(), 'carol@example.test');
    await click('Next');

    await click('Create team');
    assert.match(await page.getByRole('status').first().innerText(), /Team “<b>Rockets<\/b>” created on the Team plan/);
    assert.equal(await step(), 1);
    assert.equal(await page.getByLabel('Team name').inputValue(), '', 'a finished wizard starts afresh');
    await screenshot(page, 'wizard-done');
  });

  it('five requests at once on the concurrency page all count', async () => {
    await go('/concurrency');
    const counter = page.locator('#counter');
    assert.equal(await counter.textContent(), '0');
    for (const expected of [5, 10]) {
      await page.getByRole('button', { name: 'Send five requests at once' }).click();
      await page.locator('#result', { hasText: `→ ${expected}` }).waitFor();
      assert.equal(await counter.textContent(), String(expected));
      assert.match(await page.locator('#result').innerText(), /none lost/);
    }
    const stored = await page.request.get(`${origin}/concurrency/counter`);
    assert.deepEqual(await stored.json(), { counter: 10 });
    await page.reload();
    assert.equal(await counter.textContent(), '10');
    await page.getByRole('button', { name: 'Send five requests at once' }).click();
    await page.locator('#result', { hasText: '→ 15' }).waitFor();
    await screenshot(page, 'concurrency');
  });

  it('signing out ends the session, and its old cookie no longer works', async () => {
    await signIn('alice', 'wonderland');
    const signedIn = await context.cookies(origin);
    await Promise.all([page.waitForURL(`${origin}/`), page.getByRole('button', { name: 'Sign out' }).click()]);
    assert.match(await page.locator('header').innerText(), /Sign in/);
    assert.equal(await sessionCookie(), undefined, 'the cookie is expired');
    await screenshot(page, 'signed-out');

    // Someone who kept a copy of the cookie (signature included) gets nothing from it.
    const replayed = await freshPage(signedIn);
    try {
      await replayed.page.goto(`${origin}/profile`);
      assert.equal(new URL(replayed.page.url()).pathname, '/login');
      const response = await replayed.context.request.get(`${origin}/profile`, { maxRedirects: 0 });
      assert.equal(response.status(), 302);
    } finally {
      await replayed.context.close();
    }
  });

  for (const method of ['POST', 'PUT']) it(`a form whose body trickles in holds no lock: signing out meanwhile works at once (${method})`, async () => {
    await signIn('alice', 'wonderland');
    const cookies = (await context.cookies(origin)).map((cookie) => `${cookie.name}=${cookie.value}`).join('; ');
    // Another request of the same session (another tab, or someone with a copy of the cookie) sends its form a byte at a time.
    const body = 'item=tea&_csrf=' + 'x'.repeat(985);
    const slow = http.request(`${origin}/cart/add`, {
      method,
      headers: { cookie: cookies, 'content-type': 'application/x-www-form-urlencoded', 'content-length': String(body.length) },
    });
    const answered = new Promise<number | undefined>((resolve, reject) => {
      slow.on('response', (response) => {
        response.resume();
        resolve(response.statusCode);
      });
      slow.on('error', reject);
    });
    slow.write(body.slice(0, 1));
    await new Promise((resolve) => setTimeout(resolve, 200));
    await Promise.all([page.waitForURL(`${origin}/`), page.getByRole('button', { name: 'Sign out' }).click()]);
    assert.match(await page.locator('header').innerText(), /Sign in/);
    assert.equal(await sessionCookie(), undefined, 'signed out');
    slow.end(body.slice(1));
    assert.equal(await answered, 403, 'the slow form, whose session is gone, is refused (no CSRF token)');
  });

  it('a POST without the right CSRF token is refused with 403', async () => {
    await go('/cart'); // a session, with its token
    const post = (form: Record<string, string>, headers: Record<string, string> = {}) =>
      page.request.post(`${origin}/cart/add`, { form, headers, maxRedirects: 0 });

    assert.equal((await post({ item: 'tea' })).status(), 403);
    assert.equal((await post({ item: 'tea', _csrf: 'not-the-token' })).status(), 403);
    assert.equal((await post({ item: 'tea' }, { 'X-CSRF-Token': 'not-the-token' })).status(), 403);
    await page.reload();
    assert.match(await page.locator('#cart').innerText(), /empty/, 'nothing refused was added');

    const token = await page.locator('input[name="_csrf"]').first().inputValue();
    assert.equal((await post({ item: 'tea', _csrf: token })).status(), 302);

    // The same from a form whose token was taken out.
    await page.locator('form[action="/cart/add"] input[name="_csrf"]').first().evaluate((input) => input.remove());
    const [response] = await Promise.all([
      page.waitForResponse((r) => r.url() === `${origin}/cart/add`),
      page.getByRole('button', { name: 'Add Tea' }).click(),
    ]);
    await page.waitForLoadState();
    assert.equal(response.status(), 403);
    assert.match(await page.locator('main').innerText(), /did not come from this site/);
    await screenshot(page, 'csrf-refused');
    await go('/cart');
    assert.match(await page.locator('#cart').innerText(), /Tea × 1/);
  });
});

/**
 * Journeys through small apps written as the README shows, in tabs of one
 * browser: what a user of a site built on the library would see.
 */
describe('journeys through small apps in a real browser', function () {
  this.timeout(120_000);

  let browser: Browser | undefined;
  let context: BrowserContext;

  before(async function () {
    if (!chromiumAvailable()) return this.skip();
    browser = await launchChromium();
  });

  after(async () => {
    await browser?.close();
  });

  beforeEach(async () => {
    context = await browser!.newContext();
    context.setDefaultTimeout(30_000);
  });

  afterEach(async () => {
    await context?.close();
    await closeAll();
  });

  /**
   * An app whose /ping (another tab's background request: a "last seen"
   * stamp) reaches the server while /login or /logout is under way, and
   * the session middleware only once that response is out: a request the
   * browser sent with the old cookie, still on its way when the login or
   * logout happened.
   */
  async function appWithPingInFlight(): Promise<{ run: Running; pingHeld: Promise<void>; loggedInAs: () => string | undefined }> {
    const pingArrived = gate();
    let switched: Gate | undefined;
    let loginId: string | undefined;
    const holdPing: Middleware = async (ctx, next) => {
      if (ctx.path === '/ping') {
        switched = gate();
        pingArrived.open();
        await switched.promise;
      }
      // The ping goes on once the login or logout that came after it has sent its response.
      if ((ctx.path === '/login' || ctx.path === '/logout') && switched !== undefined) ctx.res.once('finish', switched.open);
      await next();
    };
    const run = await start(
      undefined,
      async (ctx) => {
        if (ctx.path === '/login') {
          await ctx.session.regenerate();
          ctx.session.set('user', 'alice');
          loginId = ctx.session.id;
        } else if (ctx.path === '/logout') {
          await ctx.session.destroy();
        } else if (ctx.path === '/ping') {
          ctx.session.set('lastSeen', Date.now());
        } else if (ctx.path === '/start') {
          ctx.session.set('visits', 1);
        }
        ctx.body = { user: ctx.session.get('user') ?? null };
      },
      { keys: ['journey-key'], before: [holdPing] },
    );
    return { run, pingHeld: pingArrived.promise, loggedInAs: () => loginId };
  }

  async function sessionCookies(origin: string): Promise<Cookie[]> {
    return (await context.cookies(origin)).filter((cookie) => cookie.name === 'session_id');
  }

  it('with cookieExpires: false the browser keeps the session cookie until it ends its session; by default, until the session expires', async () => {
    const handler: Middleware = async (ctx) => {
      if (ctx.path !== '/') return; // a favicon request, say, which must not set a cookie of its own
      ctx.session.set('visits', 1);
      ctx.body = 'ok';
    };
    const maxAge = 3_600_000;
    const persistent = await start({ maxAge }, handler, { keys: ['journey-key'] });
    const browserSession = await start({ maxAge, cookieExpires: false }, handler, { keys: ['journey-key'] });
    /** The session cookies a browser context keeps after visiting `url`, twice. Each app its own context: cookies do not tell ports apart. */
    const keptBy = async (url: string): Promise<Cookie[]> => {
      const own = await browser!.newContext();
      try {
        const page = await own.newPage();
        await page.goto(`${url}/`);
        const first = (await own.cookies(url)).filter((cookie) => cookie.name.startsWith('session_id'));
        await page.goto(`${url}/`);
        const id = (await own.cookies(url)).find((cookie) => cookie.name === 'session_id')?.value;
        assert.equal(id, first.find((cookie) => cookie.name === 'session_id')?.value, 'the next page keeps the same session');
        return first;
      } finally {
        await own.close();
      }
    };

    const before = Date.now();
    const kept = await keptBy(persistent.url);
    assert.deepEqual(kept.map((cookie) => cookie.name).sort(), ['session_id', 'session_id.sig']);
    for (const cookie of kept) {
      // Playwright gives expiry in seconds since the epoch; -1 for a cookie that ends with the browser session.
      assert.ok(cookie.expires * 1000 >= before + maxAge - 2_000 && cookie.expires * 1000 <= Date.now() + maxAge, `${cookie.name} expires with the session`);
    }

    const sessionOnly = await keptBy(browserSession.url);
    assert.deepEqual(sessionOnly.map((cookie) => [cookie.name, cookie.expires]).sort(), [['session_id', -1], ['session_id.sig', -1]]);
  });

  it('a login in one tab survives a request another tab sent just before it with the old cookie', async () => {
    const { run, pingHeld, loggedInAs } = await appWithPingInFlight();
    const tabA = await context.newPage();
    const tabB = await context.newPage();
    await tabA.goto(`${run.url}/start`); // an anonymous session, as a site's first page makes one
    await tabB.goto(`${run.url}/`);
    const ping = tabB.evaluate(async () => (await fetch('/ping', { method: 'POST' })).status);
    await pingHeld;
    const login = await tabA.evaluate(async () => (await fetch('/login', { method: 'POST' })).json());
    assert.deepEqual(login, { user: 'alice' });
    assert.equal(await ping, 200);

    const cookies = await sessionCookies(run.url);
    assert.equal(cookies.length, 1);
    assert.equal(cookies[0].value, loggedInAs(), "the login's cookie is the one the browser keeps");
    await tabB.reload();
    assert.deepEqual(JSON.parse(await tabB.locator('body').innerText()), { user: 'alice' }, 'still signed in, in every tab');
  });

  it('a logout in one tab is not followed by a new session from a request another tab sent just before it', async () => {
    const { run, pingHeld } = await appWithPingInFlight();
    const tabA = await context.newPage();
    const tabB = await context.newPage();
    await tabA.goto(`${run.url}/start`);
    await tabA.evaluate(async () => (await fetch('/login', { method: 'POST' })).status);
    await tabB.goto(`${run.url}/`);
    assert.deepEqual(JSON.parse(await tabB.locator('body').innerText()), { user: 'alice' });
    const ping = tabB.evaluate(async () => (await fetch('/ping', { method: 'POST' })).status);
    await pingHeld;
    await tabA.evaluate(async () => (await fetch('/logout', { method: 'POST' })).status);
    assert.equal(await ping, 200);

    assert.deepEqual(await sessionCookies(run.url), [], 'the cookie is gone, and no new one came after it');
    await tabB.reload();
    assert.deepEqual(JSON.parse(await tabB.locator('body').innerText()), { user: null });
  });
});
