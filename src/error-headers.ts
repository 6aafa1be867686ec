import type { Context } from 'koa';
import type { SessionCookie } from './cookie';
import { asError } from './errors';

/**
 * Koa's error handler drops every response header and sets those of the
 * error's `headers` instead. When the session cookie changed (a new
 * session, a regenerated ID, a logout), the client must still hear of it,
 * whatever fails after this point, so this request's error handler lends
 * the error the cookie's headers for the length of its call (Koa's handler
 * is synchronous). Only once the app's 'error' listeners have run, which
 * Koa's handler calls before it reads the headers: a logger must not
 * print a session ID, whichever of the error's properties it prints. Nothing
 * is left on the error: an app may throw one error object on many
 * requests, and one user's cookie must not ride along on another's.
 */
export function keepCookieOnError(ctx: Context, sessionCookie: SessionCookie): void {
  const handleError = ctx.onerror;
  ctx.onerror = function onerror(this: Context, thrown: unknown): void {
    const kept = thrown === null || thrown === undefined ? undefined : sessionCookie.errorHeaders(this);
    if (kept === undefined) return handleError.call(this, thrown as Error);
    // What Koa makes of a thrown non-Error, made here so that it can carry the headers.
    const error = asError(thrown);
    const own = Object.getOwnPropertyDescriptor(error, 'headers');
    // A frozen or sealed error cannot carry them (and Koa's handler fails on one with a status of its own).
    if (!Object.isExtensible(error) || own?.configurable === false) return handleError.call(this, error);
    // The error's own headers, read when asked: a session() of another cookie around this one lends its own the same way.
    let ownHeaders = (): Record<string, unknown> | undefined => (own?.get === undefined ? own?.value : own.get.call(error));
    let listenersRan = false;
    const afterListeners = (): void => {
      listenersRan = true;
    };
    Object.defineProperty(error, 'headers', {
      get: () => (listenersRan ? mergeHeaders(ownHeaders(), kept) : ownHeaders()),
      set: (value: Record<string, unknown> | undefined) => {
        ownHeaders = () => value;
      },
      enumerable: false,
      configurable: true,
    });
    this.app.on('error', afterListeners); // the last of them: listeners run in the order they were added
    try {
      handleError.call(this, error);
    } finally {
      this.app.removeListener('error', afterListeners);
      if (own === undefined) delete (error as { headers?: unknown }).headers;
      else Object.defineProperty(error, 'headers', own);
    }
  };
}

/** `added` on top of an error's own `headers`, a header both have holding both values (a list item once). */
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
    merged[name] = Array.isArray(value) ? [before, ...value].flat() : withListItem(String(before), value);
  }
  return merged;
}

/**
 * `item` added to the header list `list`, unless it is there already (as
 * the cache headers are on an error thrown on many responses), or the list
 * is `*` (Vary: every request header, Cookie included).
 */
function withListItem(list: string, item: string): string {
  const items = list.split(',').map((entry) => entry.trim().toLowerCase());
  return items.includes(item.toLowerCase()) || items.includes('*') ? list : `${list}, ${item}`;
}
