import type { Context } from 'koa';
import { Session } from './session';
import type { SessionMiddleware } from './nesting';
import type { Warnings } from './warnings';
import { TAKEN_OVER } from './warnings';

declare module 'koa' {
  interface ExtendableContext {
    /** This request's session, set by koa-locked-session's middleware (to log out, call its destroy()). */
    readonly session: Session;
  }
}

/** What a handler threw, kept until the session is committed. */
export interface Failure {
  readonly error: unknown;
}

/** A session middleware, with the session it serves, and the one around it (of another cookie or store). */
export interface Serving {
  readonly by: SessionMiddleware;
  readonly session: Session;
  readonly outer: Serving | undefined;
}

/** The session middlewares a request is in, while their handlers run: see LockTable.servingMark. */
const SERVED_BY = Symbol('koa-locked-session: served by');

interface Served {
  [SERVED_BY]?: Serving;
}

/** The innermost session middleware `ctx` is in, or undefined. */
export function servingOf(ctx: Context): Serving | undefined {
  return (ctx as Served)[SERVED_BY];
}

/** Marks `ctx` as in `serving` (undefined: in none), while its handler runs. */
export function markServing(ctx: Context, serving: Serving | undefined): void {
  (ctx as Served)[SERVED_BY] = serving;
}

/**
 * Puts `value` in `ctx.session`, which is read-only to the app. Never
 * throws, as it runs with the session's lock held: a ctx.session defined
 * elsewhere without a setter (or with one that throws) keeps its own
 * value, and takeBack warns of it.
 */
export function setSession(ctx: Context, value: unknown): void {
  try {
    (ctx as { session: unknown }).session = value;
  } catch {
    // See above.
  }
}

/**
 * The handler replaced ctx.session. `ctx.session = null` is how
 * koa-session logs out, so null (or undefined) is a destroy(); any other
 * value cannot be stored, and the process is warned. Either way
 * ctx.session is this request's session again, unless another middleware
 * defines ctx.session (koa-session's accessor), which the process is
 * warned of instead.
 */
export async function takeBack(ctx: Context, session: Session, warnings: Warnings): Promise<void> {
  const replacement: unknown = ctx.session;
  setSession(ctx, session);
  if (ctx.session !== session) return warnings.sessionTakenOver();
  if (replacement === null || replacement === undefined) await session.destroy();
  else warnings.replaced();
}

/**
 * takeBack, its failure left to the session middleware. Only its destroy() can fail, and that
 * failure is kept in SessionState.removalFailure, which the middleware takes up as for a destroy()
 * the handler did not await: it fails the request, or, when the handler's own failure goes on or
 * the headers went out, the app hears of it (once).
 */
export async function takeBackSession(ctx: Context, session: Session, warnings: Warnings): Promise<void> {
  try {
    await takeBack(ctx, session, warnings);
  } catch {
    // In SessionState.removalFailure (see above).
  }
}

/**
 * The session of `ctx`; throws when the session middleware did not run for
 * it, when the handler replaced ctx.session (see takeBack), or when another
 * middleware defines ctx.session, saying which.
 */
export function getSession(ctx: Context): Session {
  const current: unknown = (ctx as { session?: unknown }).session;
  if (current instanceof Session) return current;
  if (servingOf(ctx) === undefined) {
    throw new Error('koa-locked-session: no session on this context; is the session middleware installed (app.use(session())) before this code?');
  }
  if (isDefinedElsewhere(ctx)) {
    throw new Error(`koa-locked-session: ctx.session does not hold this library's session: ${TAKEN_OVER}; remove the other session middleware, and its session(app) call`);
  }
  if (current === null || current === undefined) {
    throw new Error(`koa-locked-session: ctx.session was replaced, to ${current}: a logout, done when the handler returns; to log out and go on using the session, call await ctx.session.destroy() instead`);
  }
  throw new Error('koa-locked-session: ctx.session was replaced with another value, which is not stored; ctx.session is read-only: change the session with ctx.session.set(key, value)');
}

/** Whether ctx.session is an accessor, which this library never makes: koa-session's session(app) defines one on app.context. */
function isDefinedElsewhere(ctx: Context): boolean {
  for (let holder: object | null = ctx; holder !== null; holder = Object.getPrototypeOf(holder) as object | null) {
    const property = Object.getOwnPropertyDescriptor(holder, 'session');
    if (property !== undefined) return property.get !== undefined || property.set !== undefined;
  }
  return false;
}

/** Alias of getSession. */
export const fromContext = getSession;
