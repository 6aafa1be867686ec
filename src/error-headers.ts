import type { ServerResponse } from 'node:http';
import type { Context } from 'koa';
import type { SessionCookie } from './cookie';

/**
 * Koa's error handler drops every response header and sets those of the
 * error's `headers` instead. When the session cookie changed (a new
 * session, a regenerated ID, a logout), the client must still hear of it,
 * whatever fails after this point, so this request's error handler adds
 * the cookie's headers to the error response just before Koa's handler
 * ends it (it does so synchronously, after the app's 'error' listeners),
 * beside the error's own. Nothing is lent to the error: its listeners and
 * loggers never see a session ID there, and an error the app throws on
 * many requests never carries one user's cookie to another.
 */
export function keepCookieOnError(ctx: Context, sessionCookie: SessionCookie): void {
  const handleError = ctx.onerror;
  ctx.onerror = function onerror(this: Context, thrown: unknown): void {
    const kept = thrown === null || thrown === undefined ? undefined : sessionCookie.errorHeaders(this);
    if (kept === undefined) return handleError.call(this, thrown as Error);
    const res = this.res;
    const end = res.end;
    const putBack = Object.prototype.hasOwnProperty.call(res, 'end') ? () => void (res.end = end) : () => void delete (res as { end?: unknown }).end;
    // Put back by its own call, so that a session() of another cookie around this one, which does the same, adds its own too.
    const endWithCookie = function (this: ServerResponse, ...args: unknown[]): ServerResponse {
      putBack();
      // An error handler of the app's own may have sent the headers itself (writeHead).
      if (!res.headersSent) addHeaders(res, kept);
      return (end as (...endArgs: unknown[]) => ServerResponse).apply(this, args);
    };
    res.end = endWithCookie as ServerResponse['end'];
    try {
      handleError.call(this, thrown as Error);
    } finally {
      // Not called: the headers were out already, or the handler failed.
      if (res.end === endWithCookie) putBack();
    }
  };
}

/** `added` on top of the response's headers, a header both have holding both values (a list item once). */
function addHeaders(res: ServerResponse, added: Record<string, string | string[]>): void {
  for (const [name, value] of Object.entries(added)) {
    const before = res.getHeader(name);
    if (before === undefined) {
      res.setHeader(name, value);
    } else if (Array.isArray(value)) {
      // Lines the response has already (an error handler of the app's own that leaves the headers as they were) are not sent twice.
      const lines = Array.isArray(before) ? before : [String(before)];
      res.setHeader(name, [...lines, ...value.filter((line) => !lines.includes(line))]);
    } else {
      res.setHeader(name, withListItem(String(before), value));
    }
  }
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
