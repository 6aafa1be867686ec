import type { Context, Middleware, Next } from 'koa';
import type { Failure } from './context';
import { markServing, servingOf, setSession, takeBackSession } from './context';
import { NO_COOKIE, commit, planCommit, withoutCookie } from './commit';
import { SessionCookie } from './cookie';
import { keepCookieOnError } from './error-headers';
import type { Reporter } from './events';
import { report, reportIfTimedOut, tellAppOf } from './events';
import { Expiry } from './expiry';
import { SessionLocks } from './hold';
import { generateId } from './ids';
import { lockTableOf } from './lock';
import type { SessionMiddleware } from './nesting';
import { cannotShare, findServing, passThrough, servingOptions, unusedOptions } from './nesting';
import { SessionOpener } from './opening';
import { checkOptionsObject, resolveOptions } from './options';
import type { SessionOptions } from './options';
import { Session, undoChangesSinceFailedRemoval } from './session';
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
  const changedTooLate = (method: string): void => warnings.lateChange(method);
  const lostCookie = (): void => warnings.headersSentBeforeCommit();
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
    const { state, lock } = opening instanceof Promise ? await opening : opening;

    // A listener that throws once the store has changed (a session created, regenerated,
    // destroyed) must not keep the client from the cookie that goes with the change:
    // its error fails the request only once that cookie is on the response (step 5).
    let listenerFailure: Failure | undefined;
    let finished = false;
    const tell: Reporter = (event, id, oldId) => {
      // Once this middleware is done there is no cookie left to keep: the error goes to the caller, as emit throws it.
      if (finished) return report(ctx, event, id, oldId);
      try {
        report(ctx, event, id, oldId);
      } catch (error) {
        if (listenerFailure === undefined) listenerFailure = { error };
        else tellAppOf(ctx, error);
      }
    };

    // 3. The handler.
    // The token of the removals this request made while holding the lock, which it says it is done with when it
    // lets go (see removalDone below).
    let removalToken: string | undefined;
    const session = new Session(state, {
      newId: options.genid,
      removeStored: async (id) => {
        // Marked first: a store may drop the session before it answers, and a request sharing
        // the lock that finds it gone meanwhile must already see why (see LockTable.removalStarted).
        lock?.markRemoved();
        // Holding the lock, it says when it is done (see removalDone below): other processes wait for that.
        if (lock?.removedTheSession === true) removalToken ??= generateId();
        await storage.remove(id, removalToken);
        if (lock === undefined || lock.claimDestroyReport()) tell('session:destroyed', id);
      },
      changedTooLate,
    });
    setSession(ctx, session);
    markServing(ctx, { by: self, session, outer: around }); // only while the handler runs
    let failure: Failure | undefined;
    try {
      await next();
    } catch (error) {
      failure = { error }; // committed all the same, like a statement already made
    }
    if (ctx.session !== session) await takeBackSession(ctx, session, warnings);
    // A destroy() the handler did not await is waited for, so the commit sees the session gone. Again
    // while one is under way: a task reacting to the one waited for (a retry) may start another before
    // this resumes. Once none is, nothing is awaited up to the commit, so none can slip in between.
    while (state.destroying !== undefined) await state.destroying.catch(() => undefined);
    // The store failed to remove the session: the request fails (SPEC: a store failure is a 503), whether
    // the handler awaited destroy() or not, caught its error or not. The session is committed as the first
    // failed destroy() found it (see RemovalFailure).
    // With the headers out, failing would only keep Koa from sending the body (a stream would hang): the app hears of it.
    // Else the app hears of it with the commit's outcome, where the lock is let go of whatever an 'error' listener throws.
    const removalFailure = state.removalFailure;
    let unheardRemovalFailure: Failure | undefined;
    undoChangesSinceFailedRemoval(state);
    if (removalFailure !== undefined && removalFailure.error !== failure?.error) {
      if (failure === undefined && !ctx.res.headersSent) failure = removalFailure;
      else unheardRemovalFailure = removalFailure;
    }
    for (const assigned of Object.keys(session)) warnings.property(assigned); // ctx.session.views = 1, as koa-session is used
    markServing(ctx, around);
    try {
      // 4. Commit, then unlock.
      state.committing = true;
      const now = Date.now();
      const refreshCookie = options.rolling || (cookie.state === 'valid' && cookie.resign);
      const planned = planCommit(state, expiry, now, refreshCookie);
      const sentBeforeCommit = ctx.res.headersSent; // a streamed body, ctx.respond = false: see withoutCookie
      const plan = sentBeforeCommit ? withoutCookie(planned, lostCookie) : planned;
      let action = NO_COOKIE;
      let commitFailed = false;
      try {
        if (plan !== 'none') {
          // Refuse before writing anything when the cookie could not be sent (an interrupted commit sends none).
          if (!sentBeforeCommit && plan !== 'interrupted') sessionCookie.assertCanBeSent(ctx);
          const committing = commit({ state, lock, storage, expiry, report: tell }, plan, now);
          action = committing instanceof Promise ? await committing : committing;
        }
      } catch (caught) {
        commitFailed = true;
        const error = reportIfTimedOut(ctx, state.loadedId ?? state.id, caught);
        // With the headers out, failing the request would only keep Koa from sending its body
        // (a stream would hang): the response stands, and the app hears of the failure.
        if (!sentBeforeCommit) {
          // The request fails with the commit's error; the app still hears of the others.
          for (const other of [unheardRemovalFailure, failure, listenerFailure]) if (other !== undefined) tellAppOf(ctx, other.error);
          throw error;
        }
        tellAppOf(ctx, error);
      } finally {
        // In this process, whoever asked for the session before this request let go of it was in line
        // behind its removal (see HeldLock.release in hold.ts); a RedisStore's mark tells other processes the same.
        if (lock !== undefined && (removalToken !== undefined || lock.removedTheSession)) storage.removalDone(lock.id, removalToken);
        const releasing = lock?.release();
        // A failed commit is not held up by handing back a cross-process lock either (see releaseAndThrow in opening.ts).
        if (releasing !== undefined && !commitFailed) await releasing;
      }

      // 5. The cookie.
      if (!ctx.res.headersSent) {
        sessionCookie.send(ctx, action, signed);
        if (action.kind !== 'none') keepCookieOnError(ctx, sessionCookie);
      } else if (action.kind !== 'none') {
        // Sent during the commit, by a task the handler did not await: what was committed stays, without its cookie.
        warnings.headersSentInCommit();
      }
      if (unheardRemovalFailure !== undefined) tellAppOf(ctx, unheardRemovalFailure.error);
      if (listenerFailure !== undefined) {
        // The handler's own error goes first; with the headers out, failing would only cut the response short.
        if (failure === undefined && !ctx.res.headersSent) failure = listenerFailure;
        else tellAppOf(ctx, listenerFailure.error);
      }
      if (failure !== undefined) throw failure.error;
    } finally {
      finished = true;
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
