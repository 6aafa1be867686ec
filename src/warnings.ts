/** Who holds ctx.session when it does not keep this library's session (see takeBack and getSession in context.ts). */
export const TAKEN_OVER = "another middleware defines it (koa-session's session(app), called on this app too?)";

/**
 * Process warnings about mistakes in the app, not in one request: each is
 * given once per middleware (`process.emitWarning`, with a code to filter
 * on). None of them throws: a throw would drop the response's cookie (a
 * login's new ID), or crash the process from a task nobody awaits.
 */
export class Warnings {
  private readonly given = new Set<string>();

  /** See Session's change log: a change once the middleware has begun committing. */
  lateChange(method: string): void {
    this.once(
      'KOA_LOCKED_SESSION_LATE_CHANGE',
      `ctx.session.${method}() was called after the session middleware committed the session, so the change is lost; ` +
        "change the session before the middleware's next() resolves (code after `await next()` in a middleware " +
        'added before app.use(session()), or a task the handler does not await, runs too late)',
    );
  }

  /** `ctx.session` assigned a value other than null or undefined. */
  replaced(): void {
    this.once('KOA_LOCKED_SESSION_REPLACED', 'ctx.session was replaced with another value, which is not stored; use ctx.session.set(key, value)');
  }

  /** `ctx.session` does not keep what this middleware puts in it: another middleware defines it (see takeBack). */
  sessionTakenOver(): void {
    this.once(
      'KOA_LOCKED_SESSION_TAKEN_OVER',
      `ctx.session does not keep the session this middleware puts in it: ${TAKEN_OVER}, so handlers see that one's session ` +
        "instead of this one's, and nothing they set is stored; remove the other session middleware, and its session(app) call",
    );
  }

  /** `ctx.session.views = 1`, as koa-session is used: a property of the object, never stored. */
  property(key: string): void {
    // koa-session's per-session lifetime: set() would store it as data, and change nothing.
    if (key === 'maxAge') {
      return this.once(
        'KOA_LOCKED_SESSION_LIFETIME',
        'ctx.session.maxAge was assigned, which changes nothing: a lifetime per session is not offered; ' +
          "the maxAge option of session() sets every session's idle lifetime, and cookieExpires: false gives " +
          'a cookie that ends with the browser session',
      );
    }
    this.once(
      'KOA_LOCKED_SESSION_PROPERTY',
      `ctx.session.${key} was assigned as a property, which is not stored; use ctx.session.set(${JSON.stringify(key)}, value) and ctx.session.get(${JSON.stringify(key)})`,
    );
  }

  /** Nested in a session middleware of the same cookie that cannot serve the same session (see cannotShare in nesting.ts). */
  sharedCookie(cookieName: string): void {
    this.once(
      'KOA_LOCKED_SESSION_COOKIE_SHARED',
      `this session() runs inside another session middleware with the same cookie (${cookieName}) but another store object ` +
        'or hashIds setting, and the two cannot serve one session: they miss each other\'s sessions and replace each other\'s cookie ' +
        '(two MemoryStores, RedisStores of different prefixes, one store with and without hashIds), or wait for each other\'s ' +
        'Redis lock (two RedisStores with lock: true); pass both the same store object, or give one another cookieName',
    );
  }

  /** Made on a store object that a session middleware of another cookie uses too (see LockTable.otherCookies). */
  storeShared(cookieName: string, otherCookie: string): void {
    this.once(
      'KOA_LOCKED_SESSION_STORE_SHARED',
      `this session() of the cookie ${cookieName} has the same store object as a session() of the cookie ${otherCookie}, so the IDs of ` +
        `either are taken under the other's name: a client can present its ${otherCookie} session as its ${cookieName} one, whose handlers ` +
        'then read its values (a user ID, a signed-in flag) as their own; give each cookie a store of its own (a RedisStore of ' +
        'another prefix, or session() without a store for a MemoryStore of its own)',
    );
  }

  /** Nested in a session middleware of the same store and cookie, which serves the request with its own options (see passThrough in nesting.ts). */
  unusedOptions(names: readonly string[]): void {
    this.once(
      'KOA_LOCKED_SESSION_NESTED_OPTIONS',
      `this session() runs inside another session middleware of the same store and cookie, which serves the request with its own options, ` +
        `so this one's ${names.join(', ')} ${names.length === 1 ? 'is' : 'are'} not used; give both the same options, ` +
        'or give this one another cookieName and store for a session of its own',
    );
  }

  /** A new session or a new ID left unstored, its cookie being impossible to send (see withoutCookie in commit.ts). */
  headersSentBeforeCommit(): void {
    this.once(
      'KOA_LOCKED_SESSION_HEADERS_SENT',
      'the response headers were sent before the session was committed, so a new session or a regenerated ID, ' +
        'which needs its cookie sent, was not stored; change the session before the headers go out ' +
        '(before ctx.flushHeaders(), or before writing to ctx.res with ctx.respond = false)',
    );
  }

  /** Headers sent while the commit ran: what was committed stays, without its cookie. */
  headersSentInCommit(): void {
    this.once(
      'KOA_LOCKED_SESSION_HEADERS_SENT_IN_COMMIT',
      "the response headers were sent while the session was being committed (by a task the handler did not await), so the session's cookie could not follow; " +
        'send the response after the handler and the session middleware are done',
    );
  }

  private once(code: string, message: string): void {
    if (this.given.has(code)) return;
    this.given.add(code);
    process.emitWarning(`koa-locked-session: ${message} (warned once)`, { code });
  }
}
