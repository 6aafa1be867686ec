import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { Context, Next } from 'koa';
import { readForm } from './form';

/**
 * CSRF protection with a synchronizer token: a random token lives in the
 * session, every form carries it in a hidden `_csrf` field (fetch calls send
 * it in an `X-CSRF-Token` header), and every state-changing request must
 * present it. Another site can make the browser send our cookie, but it
 * cannot read our pages, so it cannot know the token.
 */

const KEY = 'csrf';
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** Whether a request of `method` changes nothing, and so needs no token (nor carries a form). */
export function isSafeMethod(method: string): boolean {
  return SAFE_METHODS.has(method);
}

/** This session's token, made on first use. Call it when rendering a form. */
export function csrfToken(ctx: Context): string {
  return ctx.session.get<string>(KEY) ?? rotateCsrfToken(ctx);
}

/** A new token for the session: after sign-in, like the session ID itself. */
export function rotateCsrfToken(ctx: Context): string {
  const token = randomBytes(32).toString('base64url');
  ctx.session.set(KEY, token);
  return token;
}

/** Middleware: refuses (403) a state-changing request without the session's token. */
export async function csrfProtection(ctx: Context, next: Next): Promise<void> {
  if (!isSafeMethod(ctx.method)) {
    const sent = (await readForm(ctx))._csrf ?? ctx.get('X-CSRF-Token');
    const expected = ctx.session.get<string>(KEY);
    if (expected === undefined || !sameToken(sent, expected)) {
      ctx.throw(403, 'This form has expired or did not come from this site. Go back, reload the page and try again.');
    }
  }
  await next();
}

function sameToken(sent: string, expected: string): boolean {
  const a = Buffer.from(sent);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}
