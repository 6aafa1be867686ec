/**
 * A logout whose destroy() the handler forgot to await.
 *
 * `ctx.session.regenerate()` changes the ID at once, so a handler that does
 * not await it still gets the new cookie. `destroy()` does not: it marks the
 * session destroyed only once the store's removal has resolved, which is
 * after the middleware committed. The session is removed from the store, but
 * the response does not expire the cookie, nothing warns, and the browser's
 * next request (the redirect after the logout, say) comes back with the dead
 * ID within half a second, so its set() is silently dropped (no cookie,
 * `session:interrupted`). SPEC, Session: "destroy(): removes the session
 * ..., empties the data, and the response expires the cookie".
 */
import { HEX64, Jar, call, closeAll, cookieNamed, expect, isExpired, memoryStore, start } from './support/app';

afterEach(closeAll);

describe('destroy() not awaited by the handler', () => {
  it('still expires the cookie, and the next request can start a session', async () => {
    const run = await start({ store: memoryStore() }, (ctx) => {
      if (ctx.path === '/login') ctx.session.set('user', 'ada');
      if (ctx.path === '/logout') void ctx.session.destroy(); // the missing `await`
      if (ctx.path === '/cart') ctx.session.set('cart', ['pen']);
      ctx.body = { user: ctx.session.get('user') ?? null, cart: ctx.session.get('cart') ?? null };
    });
    const jar = new Jar();
    await call(run, jar, 'post', '/login');
    expect(jar.get()).to.match(HEX64);

    const logout = await call(run, jar, 'post', '/logout');
    const cookie = cookieNamed(logout, 'session_id');
    expect(cookie, 'the logout response sets the session cookie').to.not.equal(undefined);
    expect(isExpired(cookie!), 'the logout response expires the session cookie').to.equal(true);

    // The browser's next request, straight after the logout.
    const next = await call(run, jar, 'post', '/cart');
    expect(next.body).to.deep.equal({ user: null, cart: ['pen'] });
    expect(jar.get(), 'the new session has a cookie').to.match(HEX64);
    const back = await call(run, jar, 'get', '/');
    expect(back.body).to.deep.equal({ user: null, cart: ['pen'] });
  });
});
