import type { Context, Next } from 'koa';
import type { Failure, Serving } from './context';
import { setSession, takeBack, takeBackSession } from './context';
import type { LockMode } from './lock';
import type { ResolvedOptions, SameSite } from './options';
import { Session } from './session';
import type { Store } from './stores/store';
import { MemoryStore } from './stores/memory';
import { RedisStore } from './stores/redis';
import type { Warnings } from './warnings';

/**
 * Session middlewares nested in one another: one per router or mounted
 * app on the same store and cookie, or of another cookie or store in
 * between. While its handler runs, a request carries the chain of session
 * middlewares it is in, so that a nested one can tell whether an outer one
 * already serves its session.
 */

/** A session middleware, as the ones nested in it see it. */
export interface SessionMiddleware {
  /** Shared by the middlewares of one lock table and cookie: see LockTable.servingMark. */
  readonly mark: object;
  readonly cookieName: string;
  readonly store: Store;
  readonly hashIds: boolean;
  /** The options it serves a session with, as the outer of two that share a session. */
  readonly servesWith: ServingOptions;
}

/**
 * The options (besides the store, cookieName and hashIds that make two
 * middlewares share a session) of which a nested middleware's own go
 * unused: the outer one serves the session. `genid` as the app gave it.
 */
export interface ServingOptions {
  readonly cookiePath: string;
  readonly cookieDomain: string | undefined;
  readonly cookieSecure: boolean;
  readonly cookieHttpOnly: boolean;
  readonly sameSite: SameSite;
  readonly cookieExpires: boolean;
  /** Whether it may sign (signed unset signs when app.keys is set, as true does then). */
  readonly signed: boolean;
  readonly maxAge: number;
  readonly absoluteTimeout: number | undefined;
  readonly lockMode: (ctx: Context) => LockMode;
  readonly lockTimeout: number;
  readonly rolling: boolean;
  readonly genid: (() => string) | undefined;
}

export function servingOptions(options: ResolvedOptions, givenGenid: (() => string) | undefined): ServingOptions {
  const { cookie } = options;
  return {
    cookiePath: cookie.path,
    cookieDomain: cookie.domain,
    cookieSecure: cookie.secure,
    cookieHttpOnly: cookie.httpOnly,
    sameSite: cookie.sameSite,
    cookieExpires: cookie.expires,
    signed: cookie.signed !== false,
    maxAge: options.maxAge,
    absoluteTimeout: options.absoluteTimeout,
    lockMode: options.lockMode,
    lockTimeout: options.lockTimeout,
    rolling: options.rolling,
    genid: givenGenid,
  };
}

/** The names of the options `inner` sets otherwise than `outer`, which serves its requests. */
export function unusedOptions(outer: ServingOptions, inner: ServingOptions): string[] {
  return (Object.keys(inner) as (keyof ServingOptions)[]).filter((name) => !alike(outer[name], inner[name]));
}

/** Functions of the same code count as alike: two calls of one options factory make two of each. */
function alike(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  return typeof a === 'function' && typeof b === 'function' && String(a) === String(b);
}

/** The first middleware, from the innermost out, among those the request is in, that `matches`. */
export function findServing(innermost: Serving, matches: (middleware: SessionMiddleware) => boolean): Serving | undefined {
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
export function cannotShare(other: SessionMiddleware, self: SessionMiddleware): boolean {
  const { store, hashIds } = self;
  if (other.hashIds !== hashIds) return true;
  if (other.store === store) return false;
  if (other.store instanceof MemoryStore || store instanceof MemoryStore) return true;
  if (!(other.store instanceof RedisStore && store instanceof RedisStore)) return false;
  return other.store.prefix !== store.prefix || other.store.writeLock !== undefined || store.writeLock !== undefined;
}

/**
 * Nested in a middleware that already serves this request's session
 * (same store, same cookie): the outer one does the work. A session
 * middleware of another cookie or store in between has put its own
 * session in ctx.session, so `session` is put there for the handler, and
 * the one in between back after it.
 */
export async function passThrough(ctx: Context, next: Next, session: Session, warnings: Warnings): Promise<void> {
  let between: unknown = ctx.session;
  if (!(between instanceof Session)) {
    // Not another middleware's session but a replacement of this one (ctx.session = null in between): taken back first, in order.
    // A removal that fails fails the request here, before the handler runs (the outer middleware hears it once: the same error).
    await takeBack(ctx, session, warnings);
    between = session;
  }
  setSession(ctx, session);
  let failure: Failure | undefined;
  try {
    await next();
  } catch (error) {
    failure = { error };
  }
  if (ctx.session !== session) await takeBackSession(ctx, session, warnings);
  setSession(ctx, between);
  if (failure !== undefined) throw failure.error;
}
