import { createHmac, timingSafeEqual } from 'node:crypto';
import type { Context } from 'koa';
import type Keygrip from 'keygrip';
import type { CookieSettings } from './options';
import { SessionConfigError } from './errors';

/** What the request's session cookie says. */
export type CookieRead =
  | { readonly state: 'absent' }
  /** Malformed, or unsigned / wrongly signed where signing is on: never reaches the store. */
  | { readonly state: 'invalid' }
  /** Well formed and, when signed, verified. `resign`: signed with an older key. */
  | { readonly state: 'valid'; readonly id: string; readonly resign: boolean };

const ABSENT: CookieRead = { state: 'absent' };
const INVALID: CookieRead = { state: 'invalid' };

/**
 * Whether this request signs its cookie: the `signed` option, or by default
 * whether `app.keys` is set. Signing without keys is a configuration
 * mistake, reported before the handler runs.
 */
export function isSigned(ctx: Context, settings: CookieSettings): boolean {
  const hasKeys = Array.isArray(ctx.app.keys) ? ctx.app.keys.length > 0 : Boolean(ctx.app.keys);
  if (settings.signed === true && !hasKeys) {
    throw new SessionConfigError('the signed option needs app.keys to be set (app.keys = [secret, ...])');
  }
  return settings.signed ?? hasKeys;
}

/**
 * Which of `app.keys` signed `data` (-1: none), comparing in constant time.
 * For a plain array of keys this is Keygrip's check without its second
 * round of HMACs per comparison (crypto.timingSafeEqual does the same job);
 * an `app.keys` that is a Keygrip instance is asked itself.
 */
function signingKeyIndex(ctx: Context, data: string, signature: string): number {
  const keys: unknown = ctx.app.keys;
  if (!Array.isArray(keys)) return (ctx.cookies as unknown as { keys: Keygrip }).keys.index(data, signature);
  const given = Buffer.from(signature);
  for (let i = 0; i < keys.length; i++) {
    // Keygrip's format: HMAC-SHA1, base64 without padding, '+' and '/' as '-' and '_'.
    const expected = Buffer.from(createHmac('sha1', keys[i] as string).update(data).digest('base64url'));
    if (expected.length === given.length && timingSafeEqual(expected, given)) return i;
  }
  return -1;
}

/**
 * Reads the session cookie. The format is checked before anything else,
 * then the signature (constant-time, every key of `app.keys` tried), so a
 * value that fails either never names a session.
 */
export function readSessionCookie(ctx: Context, settings: CookieSettings, pattern: RegExp, signed: boolean): CookieRead {
  const value = ctx.cookies.get(settings.name, { signed: false });
  if (value === undefined || value === '') return ABSENT;
  if (!pattern.test(value)) return INVALID;
  if (!signed) return { state: 'valid', id: value, resign: false };
  const signature = ctx.cookies.get(`${settings.name}.sig`, { signed: false });
  if (signature === undefined) return INVALID;
  const keyIndex = signingKeyIndex(ctx, `${settings.name}=${value}`, signature);
  if (keyIndex < 0) return INVALID;
  return { state: 'valid', id: value, resign: keyIndex > 0 };
}

/**
 * A Secure cookie cannot go out on plain HTTP. Checked before anything is
 * committed, so such a request changes nothing.
 */
export function assertCookieCanBeSent(ctx: Context, settings: CookieSettings): void {
  if (settings.secure && !ctx.secure) {
    throw new SessionConfigError(
      'cookieSecure is set but this request came over plain HTTP, so the session cookie cannot be sent; ' +
        'serve HTTPS, or behind a TLS-terminating proxy set app.proxy = true so X-Forwarded-Proto is trusted',
    );
  }
}

/** Sends the session cookie for `id`, expiring at `expires`. */
export function writeSessionCookie(ctx: Context, settings: CookieSettings, signed: boolean, id: string, expires: Date): void {
  ctx.cookies.set(settings.name, id, cookieAttributes(settings, signed, expires));
  markPrivate(ctx);
}

/** Sends an already-expired session cookie, so the browser drops it. */
export function expireSessionCookie(ctx: Context, settings: CookieSettings, signed: boolean): void {
  ctx.cookies.set(settings.name, null, cookieAttributes(settings, signed, new Date(0)));
  markPrivate(ctx);
}

function cookieAttributes(settings: CookieSettings, signed: boolean, expires: Date) {
  return {
    path: settings.path,
    domain: settings.domain,
    secure: settings.secure,
    httpOnly: settings.httpOnly,
    sameSite: settings.sameSite,
    signed,
    expires,
    overwrite: true,
  };
}

const NO_CACHE_COOKIE = 'no-cache="Set-Cookie"';

/**
 * A response carrying one user's cookie must never be stored or replayed
 * by a shared cache.
 */
function markPrivate(ctx: Context): void {
  ctx.vary('Cookie');
  const current: unknown = ctx.response.get('Cache-Control');
  const cacheControl = current === undefined ? '' : String(current);
  if (cacheControl === '') ctx.set('Cache-Control', NO_CACHE_COOKIE);
  else if (!cacheControl.includes(NO_CACHE_COOKIE)) ctx.set('Cache-Control', `${cacheControl}, ${NO_CACHE_COOKIE}`);
}
