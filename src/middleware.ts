import { format } from 'node:util';
import type { Context, Middleware, Next } from 'koa';
import type { CommitPlan, CookieAction } from './commit';
import type { Eventually, HeldLock, LockMode } from './lock';
import type { SessionOptions } from './options';
import type { SessionState } from './session';
import type { Store, StoredSession } from './stores/store';
import { NO_COOKIE, commit, planCommit } from './commit';
import { SessionCookie } from './cookie';
import { SessionLockTimeoutError } from './errors';
import type { Reporter } from './events';
import { report, trace } from './events';
import { Expiry } from './expiry';
import { SessionLocks, lockTableOf } from './lock';
import { resolveOptions } from './options';
import { Session, newState, stateAfterRemoval } from './session';
import { Storage } from './storage';
import { MemoryStore } from './stores/memory';
import { RedisStore } from './stores/redis';

declare module 'koa' {
  interface ExtendableContext {
    /** This request's session, set by koa-locked-session's middleware (to log out, call its destroy()). */
    readonly session: Session;
  }
}

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
  // What this middleware is, for the nested ones to recognise (see Serving).
  const self: SessionMiddleware = {
    mark: table.servingMark(options.cookie.name),
    cookieName: options.cookie.name,
    store: options.store,
    hashIds: options.hashIds,
  };
  const sessionCookie = new SessionCookie(options.cookie, options.idPattern);

  interface Opened {
    state: SessionState;
    lock: HeldLock | undefined;
  }

  const fresh = (): Opened => ({ state: newState(options.genid()), lock: undefined });

  /**
   * Lock, then load. At once when both answer at once (a free lock, a
   * MemoryStore), as most requests find them: no promise round trip then.
   * A session not found goes through a promise (see notFound).
   */
  function open(ctx: Context, id: string): Eventually<Opened> {
    // When this request asked for the session: see notFound. Only a store that remembers removals needs it.
    const askedAt = storage.remembersRemovals ? Date.now() : 0;
    // Lock before load: a request must not read what a writer ahead of it is about to change.
    const granted = locks.acquire(id, lockModeOf(ctx));
    return granted instanceof Promise ? loadWhenLocked(ctx, id, granted, askedAt) : load(ctx, id, granted, askedAt);
  }

  async function loadWhenLocked(ctx: Context, id: string, granted: Promise<HeldLock>, askedAt: number): Promise<Opened> {
    let lock: HeldLock;
    try {
      lock = await granted;
    } catch (error) {
      throw reportIfTimedOut(ctx, id, error);
    }
    return load(ctx, id, lock, askedAt);
  }

  /**
   * Tells the app when `error` is the session's lock not coming within
   * lockTimeout. Returns the error to go on with: a listener's own when it
   * throws, as Node's emitter would have it.
   */
  function reportIfTimedOut(ctx: Context, id: string, error: unknown): unknown {
    if (!(error instanceof SessionLockTimeoutError)) return error;
    try {
      report(ctx, 'session:lock-timeout', id);
    } catch (listenerError) {
      return listenerError;
    }
    return error;
  }

  function load(ctx: Context, id: string, lock: HeldLock, askedAt: number): Eventually<Opened> {
    trace('locked', id, lock.mode);
    let read: Eventually<StoredSession | undefined>;
    try {
      read = storage.load(id, Date.now(), lock.inherited);
    } catch (error) {
      return releaseAndThrow(lock, error);
    }
    if (!(read instanceof Promise)) return opened(ctx, id, lock, read, askedAt); // a MemoryStore answers at once
    return read.then(
      (session) => opened(ctx, id, lock, session, askedAt),
      (error: unknown) => releaseAndThrow(lock, error),
    );
  }

  /**
   * A failed request answers at once, without waiting for a cross-process
   * lock to be handed back: with the store not answering, that would take
   * as long again (a lock left behind expires by itself, after lockTtl).
   */
  async function releaseAndThrow(lock: HeldLock, error: unknown): Promise<never> {
    void lock.release();
    throw error;
  }

  function opened(ctx: Context, id: string, lock: HeldLock, session: StoredSession | undefined, askedAt: number): Eventually<Opened> {
    if (session === undefined) return notFound(ctx, id, lock, askedAt);
    trace('loaded', id);
    return { state: newState(id, session), lock };
  }

  /**
   * Gone. Removed by a request ahead of this one (a logout, a login) after
   * this one asked for it (at `askedAt`): starting a session here would send
   * a cookie that replaces the one that request sent, so this one commits
   * nothing. Otherwise (expired, unknown, removed before this request came):
   * start afresh under a new ID, never the client's.
   */
  async function notFound(ctx: Context, id: string, lock: HeldLock, askedAt: number): Promise<Opened> {
    let removedAhead: boolean;
    try {
      // In this process the lock saw the removal; a RedisStore remembers when one was made, in any process.
      removedAhead = lock.removedAfterAsking || (await storage.removedSince(id, askedAt));
    } catch (error) {
      return releaseAndThrow(lock, error);
    }
    await lock.release();
    if (removedAhead) return { state: stateAfterRemoval(options.genid(), id), lock: undefined };
    report(ctx, 'session:missed', id);
    return fresh();
  }

  function lockModeOf(ctx: Context): LockMode {
    const mode = options.lockMode(ctx);
    if (mode !== 'read' && mode !== 'write') throw new TypeError("koa-locked-session: lockMode must return 'read' or 'write'");
    return mode;
  }

  function sendCookie(ctx: Context, action: CookieAction, signed: boolean): void {
    if (action.kind === 'send') sessionCookie.write(ctx, signed, action.id, action.expiresAt);
    else if (action.kind === 'expire') sessionCookie.expire(ctx, signed);
  }

  const warned = new Set<string>();
  /** A process warning with `code`, once per middleware: a mistake in the app, not in the request. */
  function warnOnce(code: string, message: string): void {
    if (warned.has(code)) return;
    warned.add(code);
    process.emitWarning(`koa-locked-session: ${message} (warned once)`, { code });
  }

  /**
   * The plan once the response headers are out (a body streamed after
   * ctx.flushHeaders(), ctx.respond = false), when no cookie can be sent any
   * more. Changes to a stored session are still written, its expiry left as
   * stored (see updateUnpushed in commit.ts). A push or a refresh waits for
   * a later request. A new session, or a new ID, that the client could
   * never learn is not stored: a regenerate() leaves the session as it was
   * (never its new data under the old ID), and the process is warned.
   */
  function withoutCookie(plan: CommitPlan): CommitPlan {
    switch (plan) {
      case 'update':
        return 'update-unpushed';
      case 'interrupted':
      case 'update-unpushed': // never planned by planCommit: listed for a complete switch
        return plan;
      case 'none':
      case 'expire':
      case 'push':
      case 'refresh':
        return 'none';
      case 'create':
      case 'regenerate':
        warnOnce(
          'KOA_LOCKED_SESSION_HEADERS_SENT',
          'the response headers were sent before the session was committed, so a new session or a regenerated ID, ' +
            'which needs its cookie sent, was not stored; change the session before the headers go out ' +
            '(before ctx.flushHeaders(), or before writing to ctx.res with ctx.respond = false)',
        );
        return 'none';
    }
  }

  /** See Session.#noteChange. */
  function changedTooLate(method: string): void {
    warnOnce(
      'KOA_LOCKED_SESSION_LATE_CHANGE',
      `ctx.session.${method}() was called after the session middleware committed the session, so the change is lost; ` +
        "change the session before the middleware's next() resolves (code after `await next()` in a middleware " +
        'added before app.use(session()), or a task the handler does not await, runs too late)',
    );
  }

  /**
   * The handler replaced ctx.session. `ctx.session = null` is how
   * koa-session logs out, so null (or undefined) is a destroy(); any other
   * value cannot be stored, and the process is warned. Either way
   * ctx.session is this request's session again.
   */
  async function takeBack(ctx: Context, session: Session): Promise<void> {
    const replacement: unknown = ctx.session;
    (ctx as { session: Session }).session = session;
    if (replacement === null || replacement === undefined) await session.destroy();
    else warnOnce('KOA_LOCKED_SESSION_REPLACED', 'ctx.session was replaced with another value, which is not stored; use ctx.session.set(key, value)');
  }

  /** takeBack, after the handler failed with `failure` or not: the failure to go on with (the app hears of a second one). */
  async function takeBackAfter(ctx: Context, session: Session, failure: Failure | undefined): Promise<Failure | undefined> {
    try {
      await takeBack(ctx, session);
    } catch (error) {
      if (failure === undefined) return { error };
      ctx.app.emit('error', error, ctx);
    }
    return failure;
  }

  /**
   * Nested in a middleware that already serves this request's session
   * (same store, same cookie): the outer one does the work. A session
   * middleware of another cookie or store in between has put its own
   * session in ctx.session, so `session` is put there for the handler, and
   * the one in between back after it.
   */
  async function passThrough(ctx: Context, next: Next, session: Session): Promise<void> {
    let between: unknown = ctx.session;
    if (!(between instanceof Session)) {
      // Not another middleware's session but a replacement of this one (ctx.session = null in between): taken back first, in order.
      const failed = await takeBackAfter(ctx, session, undefined);
      if (failed !== undefined) throw failed.error;
      between = session;
    }
    (ctx as { session: Session }).session = session;
    let failure: Failure | undefined;
    try {
      await next();
    } catch (error) {
      failure = { error };
    }
    if (ctx.session !== session) failure = await takeBackAfter(ctx, session, failure);
    (ctx as { session: unknown }).session = between;
    if (failure !== undefined) throw failure.error;
  }

  /** Nested in a session middleware of the same cookie that cannot serve the same session (see cannotShare). */
  function warnAboutSharedCookie(): void {
    warnOnce(
      'KOA_LOCKED_SESSION_COOKIE_SHARED',
      `this session() runs inside another session middleware with the same cookie (${options.cookie.name}) but another store object ` +
        'or hashIds setting, and the two cannot serve one session: they miss each other\'s sessions and replace each other\'s cookie ' +
        '(two MemoryStores, RedisStores of different prefixes, one store with and without hashIds), or wait for each other\'s ' +
        'Redis lock (two RedisStores with lock: true); pass both the same store object, or give one another cookieName',
    );
  }

  /** `ctx.session.views = 1`, as koa-session is used: a property of the object, never stored. */
  function warnAboutProperties(session: Session): void {
    const key = Object.keys(session)[0];
    warnOnce(
      'KOA_LOCKED_SESSION_PROPERTY',
      `ctx.session.${key} was assigned as a property, which is not stored; use ctx.session.set(${JSON.stringify(key)}, value) and ctx.session.get(${JSON.stringify(key)})`,
    );
  }

  return async function lockedSession(ctx: Context, next: Next): Promise<void> {
    // Nested in a middleware that already serves this request's session (same store, same cookie):
    // taking the lock again would wait for ever on the outer hold (see passThrough).
    const served = ctx as Served;
    const around = served[SERVED_BY];
    if (around !== undefined) {
      const outer = findServing(around, (other) => other.mark === self.mark);
      if (outer !== undefined) return outer.session === ctx.session ? next() : passThrough(ctx, next, outer.session);
      const rival = findServing(around, (other) => other.cookieName === self.cookieName && cannotShare(other, self));
      if (rival !== undefined) warnAboutSharedCookie();
    }
    // What a session middleware of another cookie or store around this one serves: put back once this one is done.
    const entered: unknown = ctx.session;

    // 1. Read the cookie; a malformed or badly signed one never reaches the store.
    const signed = sessionCookie.isSigned(ctx);
    const cookie = sessionCookie.read(ctx, signed);
    if (cookie.state === 'invalid') report(ctx, 'session:invalid');

    // 2. Lock and load.
    const opening = cookie.state === 'valid' ? open(ctx, cookie.id) : fresh();
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
        else ctx.app.emit('error', error, ctx);
      }
    };

    // 3. The handler.
    const session = new Session(state, {
      newId: options.genid,
      removeStored: async (id) => {
        // Marked first: a store may drop the session before it answers, and a request sharing
        // the lock that finds it gone meanwhile must already see why (see LockTable.removalStarted).
        lock?.markRemoved();
        await storage.remove(id);
        if (lock === undefined || lock.claimDestroyReport()) tell('session:destroyed', id);
      },
      changedTooLate,
    });
    (ctx as { session: Session }).session = session;
    served[SERVED_BY] = { by: self, session, outer: around }; // only while the handler runs
    let failure: Failure | undefined;
    try {
      await next();
    } catch (error) {
      failure = { error }; // committed all the same, like a statement already made
    }
    if (ctx.session !== session) failure = await takeBackAfter(ctx, session, failure);
    if (Object.keys(session).length > 0) warnAboutProperties(session);

    served[SERVED_BY] = around;
    try {
      // 4. Commit, then unlock.
      state.committing = true;
      const now = Date.now();
      const refreshCookie = options.rolling || (cookie.state === 'valid' && cookie.resign);
      const planned = planCommit(state, expiry, now, refreshCookie);
      const sentBeforeCommit = ctx.res.headersSent; // a streamed body, ctx.respond = false: see withoutCookie
      const plan = sentBeforeCommit ? withoutCookie(planned) : planned;
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
          if (failure !== undefined) ctx.app.emit('error', failure.error, ctx);
          if (listenerFailure !== undefined) ctx.app.emit('error', listenerFailure.error, ctx);
          throw error;
        }
        ctx.app.emit('error', error, ctx);
      } finally {
        // In this process, whoever asked for the session before this request let go of it was in line
        // behind its removal (see HeldLock.release); a RedisStore's mark tells other processes the same.
        if (lock?.removedTheSession === true) storage.removalDone(lock.id);
        const releasing = lock?.release();
        // A failed commit is not held up by handing back a cross-process lock either (see releaseAndThrow).
        if (releasing !== undefined && !commitFailed) await releasing;
      }

      // 5. The cookie.
      if (!ctx.res.headersSent) {
        sendCookie(ctx, action, signed);
        if (action.kind !== 'none') keepCookieOnError(ctx, sessionCookie);
      } else if (action.kind !== 'none') {
        // Sent during the commit, by a task the handler did not await: what was committed stays, without its cookie.
        warnOnce(
          'KOA_LOCKED_SESSION_HEADERS_SENT_IN_COMMIT',
          "the response headers were sent while the session was being committed (by a task the handler did not await), so the session's cookie could not follow; " +
            'send the response after the handler and the session middleware are done',
        );
      }
      if (listenerFailure !== undefined) {
        // The handler's own error goes first; with the headers out, failing would only cut the response short.
        if (failure === undefined && !ctx.res.headersSent) failure = listenerFailure;
        else ctx.app.emit('error', listenerFailure.error, ctx);
      }
      if (failure !== undefined) throw failure.error;
    } finally {
      finished = true;
      // Code after this middleware's next() in the one around it changes that one's session, still uncommitted.
      if (entered !== undefined) (ctx as { session: unknown }).session = entered;
    }
  };
}

/** The session middlewares a request is in, while their handlers run: see LockTable.servingMark. */
const SERVED_BY = Symbol('koa-locked-session: served by');

/** A session middleware, as the ones nested in it see it. */
interface SessionMiddleware {
  /** Shared by the middlewares of one lock table and cookie: see LockTable.servingMark. */
  readonly mark: object;
  readonly cookieName: string;
  readonly store: Store;
  readonly hashIds: boolean;
}

/** One of them, with the session it serves, and the one around it (of another cookie or store). */
interface Serving {
  readonly by: SessionMiddleware;
  readonly session: Session;
  readonly outer: Serving | undefined;
}

interface Served {
  [SERVED_BY]?: Serving;
}

/** The first middleware, from the innermost out, among those the request is in, that `matches`. */
function findServing(innermost: Serving, matches: (middleware: SessionMiddleware) => boolean): Serving | undefined {
  for (let serving: Serving | undefined = innermost; serving !== undefined; serving = serving.outer) {
    if (matches(serving.by)) return serving;
  }
  return undefined;
}

/**
 * Whether `other` (not of the same store and setting) certainly cannot
 * serve the same session as `self`: it
 * keeps its sessions apart (under other keys, in another MemoryStore, under
 * another RedisStore prefix), or holds their Redis lock apart (two
 * RedisStores, one with lock: true, each take it for themselves: the inner
 * one waits out lockTimeout). Two objects of another store may share one
 * backend, and may work together.
 */
function cannotShare(other: SessionMiddleware, self: SessionMiddleware): boolean {
  const { store, hashIds } = self;
  if (other.hashIds !== hashIds) return true;
  if (other.store === store) return false;
  if (other.store instanceof MemoryStore || store instanceof MemoryStore) return true;
  if (!(other.store instanceof RedisStore && store instanceof RedisStore)) return false;
  return other.store.prefix !== store.prefix || other.store.writeLock !== undefined || store.writeLock !== undefined;
}

/** What a handler threw, kept until the session is committed. */
interface Failure {
  readonly error: unknown;
}

/** `session({ ...opts, store })`. */
export function withStore(store: Store, opts?: SessionOptions): Middleware {
  return session({ ...opts, store });
}

/** The session of `ctx`; throws when the session middleware did not run for it. */
export function getSession(ctx: Context): Session {
  const current: unknown = (ctx as { session?: unknown }).session;
  if (current instanceof Session) return current;
  throw new Error('koa-locked-session: no session on this context; is the session middleware installed (app.use(session())) before this code?');
}

/** Alias of getSession. */
export const fromContext = getSession;

/**
 * Koa's error handler drops every response header and sets those of the
 * error's `headers` instead. When the session cookie changed (a new
 * session, a regenerated ID, a logout), the client must still hear of it,
 * whatever fails after this point, so this request's error handler lends
 * the error the cookie's headers for the length of its call (Koa's handler
 * is synchronous), as a property that is not enumerable: error loggers
 * that print an error's properties must not print a session ID. Nothing is
 * left on the error: an app may throw one error object on many requests,
 * and one user's cookie must not ride along on another's.
 */
function keepCookieOnError(ctx: Context, sessionCookie: SessionCookie): void {
  const handleError = ctx.onerror;
  ctx.onerror = function onerror(this: Context, thrown: unknown): void {
    const kept = thrown === null || thrown === undefined ? undefined : sessionCookie.errorHeaders(this);
    if (kept === undefined) return handleError.call(this, thrown as Error);
    // What Koa makes of a thrown non-Error, made here so that it can carry the headers.
    const error: Error = isError(thrown) ? thrown : new Error(format('non-error thrown: %j', thrown));
    const own = Object.getOwnPropertyDescriptor(error, 'headers');
    // A frozen or sealed error cannot carry them (and Koa's handler fails on one with a status of its own).
    if (!Object.isExtensible(error) || own?.configurable === false) return handleError.call(this, error);
    const headers = mergeHeaders((error as { headers?: Record<string, unknown> }).headers, kept);
    Object.defineProperty(error, 'headers', { value: headers, writable: true, enumerable: false, configurable: true });
    try {
      handleError.call(this, error);
    } finally {
      if (own === undefined) delete (error as { headers?: unknown }).headers;
      else Object.defineProperty(error, 'headers', own);
    }
  };
}

/** `added` on top of an error's own `headers`, a header both have holding both values. */
function mergeHeaders(own: Record<string, unknown> | undefined, added: Record<string, string | string[]>): Record<string, unknown> {
  const merged: Record<string, unknown> = { ...own };
  for (const [name, value] of Object.entries(added)) {
    const same = Object.keys(merged).find((key) => key.toLowerCase() === name.toLowerCase());
    if (same === undefined) {
      merged[name] = value;
      continue;
    }
    const before = merged[same];
    delete merged[same];
    merged[name] = Array.isArray(value) ? [before, ...value].flat() : `${String(before)}, ${value}`;
  }
  return merged;
}

/** Koa's own test for an Error (errors from another realm fail `instanceof`). */
function isError(value: unknown): value is Error {
  return value instanceof Error || Object.prototype.toString.call(value) === '[object Error]';
}
