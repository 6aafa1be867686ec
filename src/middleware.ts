import type { Context, Middleware, Next } from 'koa';
import { markServing, servingOf, setSession } from './context';
import { SessionCookie } from './cookie';
import { report } from './events';
import { Expiry } from './expiry';
import { SessionLocks } from './hold';
import { lockTableOf } from './lock';
import type { SessionMiddleware } from './nesting';
import { cannotShare, findServing, passThrough, servingOptions, unusedOptions } from './nesting';
import { SessionOpener } from './opening';
import { checkOptionsObject, resolveOptions } from './options';
import type { SessionOptions } from './options';
import type { RequestParts } from './request';
import { SessionRequest } from './request';
import { Storage } from './storage';
import type { Store } from './stores/store';
import { Warnings } from './warnings';

/**
 * The session middleware. Each request: read the cookie → lock → load →
 * run the handler → commit → unlock → cookie.
 */
export function session(opts?: SessionOptions): Middleware {
  // A second argument only plain JavaScript can pass: koa-session's session(opts, app).
  const options = resolveOptions(opts, arguments[1]);
  const expiry = new Expiry(options.maxAge, options.absoluteTimeout);
  const storage = new Storage(options.store, expiry, options.hashIds);
  const table = lockTableOf(options.store, options.hashIds);
  const locks = new SessionLocks(options.lockTimeout, storage.writeLock, table);
  const opener = new SessionOpener(storage, locks, options);
  const sessionCookie = new SessionCookie(options.cookie, options.isValidId);
  const warnings = new Warnings();
  // One store for two cookies keeps their sessions under one set of IDs: either cookie would load the other's.
  const otherCookies = table.otherCookies(options.cookie.name);
  if (otherCookies.length > 0) warnings.storeShared(options.cookie.name, otherCookies[0]!);
  const parts: RequestParts = {
    options,
    expiry,
    storage,
    sessionCookie,
    warnings,
    changedTooLate: (method) => warnings.lateChange(method),
    lostCookie: () => warnings.headersSentBeforeCommit(),
  };
  // What this middleware is, for the nested ones to recognise (see nesting.ts).
  const self: SessionMiddleware = {
    mark: table.servingMark(options.cookie.name),
    cookieName: options.cookie.name,
    store: options.store,
    hashIds: options.hashIds,
    servesWith: servingOptions(options, opts?.genid),
  };
  // Nested in one that serves its session, this one's options go unused: told once per outer middleware.
  const checkedOuter = new WeakSet<SessionMiddleware>();
  const warnOfUnusedOptions = (outer: SessionMiddleware): void => {
    if (checkedOuter.has(outer)) return;
    checkedOuter.add(outer);
    const unused = unusedOptions(outer.servesWith, self.servesWith);
    if (unused.length > 0) warnings.unusedOptions(unused);
  };

  return async function lockedSession(ctx: Context, next: Next): Promise<void> {
    // Nested in a middleware that already serves this request's session (same store, same cookie):
    // taking the lock again would wait for ever on the outer hold (see passThrough).
    const around = servingOf(ctx);
    if (around !== undefined) {
      const outer = findServing(around, (other) => other.mark === self.mark);
      if (outer !== undefined) {
        warnOfUnusedOptions(outer.by);
        return outer.session === ctx.session ? next() : passThrough(ctx, next, outer.session, warnings);
      }
      const rival = findServing(around, (other) => other.cookieName === self.cookieName && cannotShare(other, self));
      if (rival !== undefined) warnings.sharedCookie(self.cookieName);
    }
    // What a session middleware of another cookie or store around this one serves: put back once this one is done.
    const entered: unknown = ctx.session;

    // 1. Read the cookie; a malformed or badly signed one never reaches the store.
    const signed = sessionCookie.isSigned(ctx);
    const cookie = sessionCookie.read(ctx, signed);
    if (cookie.state === 'invalid') report(ctx, 'session:invalid');

    // 2. Lock and load.
    const opening = cookie.state === 'valid' ? opener.open(ctx, cookie.id) : opener.fresh();
    const request = new SessionRequest(ctx, opening instanceof Promise ? await opening : opening, parts);

    // 3. The handler.
    setSession(ctx, request.session);
    markServing(ctx, { by: self, session: request.session, outer: around }); // only while the handler runs
    try {
      await next();
    } catch (error) {
      request.handlerFailed(error); // committed all the same, like a statement already made
    }
    // What the handler left under way is waited for; again while something is, as a task reacting to what was
    // waited for (a retry) may start more. Once nothing is, nothing is awaited up to the commit, so nothing can slip in between.
    for (let work = request.unfinishedWork(); work !== undefined; work = request.unfinishedWork()) await work;
    request.settle();
    markServing(ctx, around);
    try {
      // 4. Commit, then unlock.
      const committing = request.commitAndUnlock(cookie);
      const action = committing instanceof Promise ? await committing : committing;
      // 5. The cookie.
      request.sendCookie(action, signed);
      request.failIfFailed();
    } finally {
      request.finish();
      // Code after this middleware's next() in the one around it changes that one's session, still uncommitted.
      if (entered !== undefined) setSession(ctx, entered);
    }
  };
}

/** `session({ ...opts, store })`. */
export function withStore(store: Store, opts?: SessionOptions): Middleware {
  // Left out, the store option would fall back to a MemoryStore of this process: sessions that
  // silently do not reach the shared store the app meant (an unset configuration variable, say).
  if (store === undefined || store === null) {
    throw new TypeError('koa-locked-session: withStore(store) needs a store (for the default MemoryStore, use session())');
  }
  // Checked before the spread, which would turn an app into its own fields and a string into its characters;
  // a third argument only plain JavaScript can pass, as session(opts, app) would (koa-session's form).
  if (opts !== undefined || arguments[2] !== undefined) checkOptionsObject(opts === undefined ? {} : opts, 'withStore', arguments[2]);
  return session({ ...opts, store });
}
