import { debuglog } from 'node:util';
import type { Context } from 'koa';
import { SessionLockTimeoutError, asError } from './errors';
import { idHash } from './ids';

/** Events emitted on `app`, each with `{ ctx, idHash }` (`session:invalid` has no `idHash`). */
export type SessionEventName =
  | 'session:created'
  | 'session:regenerated'
  | 'session:destroyed'
  | 'session:missed'
  | 'session:invalid'
  | 'session:interrupted'
  | 'session:lock-timeout';

export interface SessionEvent {
  ctx: Context;
  /** First 16 hex characters of SHA-256(ID): never the raw ID. */
  idHash?: string;
  /** On `session:regenerated`: the hash of the ID it replaced. */
  oldIdHash?: string;
}

const debug = debuglog('koa-locked-session');
/** Node reads NODE_DEBUG once, at start-up: asked once here instead of through a getter on every request. */
const debugging = debug.enabled;

/**
 * Tells the app (events) and the developer (NODE_DEBUG=koa-locked-session)
 * what happened to a session, naming it only by `idHash`. Hashing is done
 * only when someone listens, so the default set-up pays nothing.
 */
export function report(ctx: Context, event: SessionEventName, id?: string, oldId?: string): void {
  const listening = ctx.app.listenerCount(event) > 0;
  if (!listening && !debugging) return;
  const payload: SessionEvent = { ctx };
  if (id !== undefined) payload.idHash = idHash(id);
  if (oldId !== undefined) payload.oldIdHash = idHash(oldId);
  if (debugging) trace(event.slice('session:'.length), id, oldId === undefined ? '' : `old=${payload.oldIdHash}`);
  if (listening) ctx.app.emit(event, payload);
}

/**
 * Tells the app when `error` is the session's lock not coming within
 * lockTimeout. Returns the error to go on with: a listener's own when it
 * throws, as Node's emitter would have it.
 */
export function reportIfTimedOut(ctx: Context, id: string, error: unknown): unknown {
  if (!(error instanceof SessionLockTimeoutError)) return error;
  try {
    report(ctx, 'session:lock-timeout', id);
  } catch (listenerError) {
    return listenerError;
  }
  return error;
}

/**
 * Tells the app of an error that does not fail the request (another one
 * does, or the response is already out), as Koa's ctx.onerror tells it of
 * the one that does: a thrown value that is not an Error is wrapped in one
 * first, so that Koa's own listener logs it instead of throwing, and a
 * thrown null or undefined is not told.
 */
export function tellAppOf(ctx: Context, error: unknown): void {
  if (error === null || error === undefined) return; // as Koa's ctx.onerror has it
  ctx.app.emit('error', asError(error), ctx);
}

/** How the commit tells the app what it did (see report); the middleware decides what a throwing listener does. */
export type Reporter = (event: SessionEventName, id?: string, oldId?: string) => void;

/** A debug line about session `id`, named by its hash. */
export function trace(what: string, id?: string, detail = ''): void {
  if (!debugging) return;
  const named = id === undefined ? '-' : idHash(id);
  if (detail === '') debug('%s %s', what, named);
  else debug('%s %s %s', what, named, detail);
}
