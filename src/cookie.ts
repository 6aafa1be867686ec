import { createHmac, createSecretKey, timingSafeEqual } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
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

/** Keygrip's signature format: HMAC-SHA1, base64 without padding, '+' and '/' as '-' and '_'. */
function keygripSignature(key: string | KeyObject, data: string): string {
  return createHmac('sha1', key).update(data).digest('base64url');
}

function sameInConstantTime(expected: string, given: string): boolean {
  const a = Buffer.from(expected);
  const b = Buffer.from(given);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Signatures kept per generation: two generations hold the sessions active on a busy process, about 3 MB at most. */
const GENERATION_SIZE = 10_000;

/**
 * The signing key's signatures of recently seen cookie values. A session's
 * cookie is the same on each of its requests, so its HMAC is computed once
 * rather than twice per request (verify, then sign again on a write). Only
 * what the key itself computed is kept, never what a client sent, and a
 * new signing key starts afresh. Old entries go a generation at a time: a
 * full generation becomes the previous one, and the one before is dropped.
 */
class SignatureMemo {
  private key: string | undefined;
  /** The key, imported once: an HMAC over a string key imports it on every call. */
  private keyObject: KeyObject | undefined;
  private current = new Map<string, string>();
  private previous = new Map<string, string>();

  /** The signature of `name=value` under `key`; `value` alone is the memo's key, the name being fixed. */
  of(key: string, name: string, value: string): string {
    if (key !== this.key) {
      this.current = new Map();
      this.previous = new Map();
      this.key = key;
      this.keyObject = createSecretKey(Buffer.from(key));
    }
    let signature = this.current.get(value);
    if (signature !== undefined) return signature;
    signature = this.previous.get(value) ?? keygripSignature(this.keyObject as KeyObject, `${name}=${value}`);
    if (this.current.size >= GENERATION_SIZE) {
      this.previous = this.current;
      this.current = new Map();
    }
    this.current.set(value, signature);
    return signature;
  }
}

/**
 * The session cookie of one middleware: reading it (format, then
 * signature), writing and expiring it through `ctx.cookies`, and the cache
 * headers that go with it. Signing follows Keygrip over `app.keys`, as
 * `ctx.cookies` does: the first key signs, every key verifies.
 */
export class SessionCookie {
  private readonly signatures = new SignatureMemo();

  constructor(
    private readonly settings: CookieSettings,
    private readonly pattern: RegExp,
  ) {}

  /**
   * Whether this request signs its cookie: the `signed` option, or by
   * default whether `app.keys` is set. Signing without keys is a
   * configuration mistake, reported before the handler runs.
   */
  isSigned(ctx: Context): boolean {
    const keys: unknown = ctx.app.keys;
    const hasKeys = Array.isArray(keys) ? keys.length > 0 : Boolean(keys);
    if (this.settings.signed === true && !hasKeys) {
      throw new SessionConfigError('the signed option needs app.keys to be set (app.keys = [secret, ...])');
    }
    return this.settings.signed ?? hasKeys;
  }

  /**
   * Reads the session cookie. The format is checked before anything else,
   * then the signature (constant-time, every key of `app.keys` tried), so a
   * value that fails either never names a session.
   */
  read(ctx: Context, signed: boolean): CookieRead {
    const name = this.settings.name;
    const value = ctx.cookies.get(name, { signed: false });
    if (value === undefined || value === '') return ABSENT;
    if (!this.pattern.test(value)) return INVALID;
    if (!signed) return { state: 'valid', id: value, resign: false };
    const signature = ctx.cookies.get(`${name}.sig`, { signed: false });
    if (signature === undefined) return INVALID;
    const keyIndex = this.signingKeyIndex(ctx, value, signature);
    if (keyIndex < 0) return INVALID;
    return { state: 'valid', id: value, resign: keyIndex > 0 };
  }

  /**
   * A Secure cookie cannot go out on plain HTTP. Checked before anything is
   * committed, so such a request changes nothing.
   */
  assertCanBeSent(ctx: Context): void {
    if (this.settings.secure && !ctx.secure) {
      throw new SessionConfigError(
        'cookieSecure is set but this request came over plain HTTP, so the session cookie cannot be sent; ' +
          'serve HTTPS, or behind a TLS-terminating proxy set app.proxy = true so X-Forwarded-Proto is trusted',
      );
    }
  }

  /** Sends the session cookie for `id` (and its `.sig` when signed), expiring at `expires`. */
  write(ctx: Context, signed: boolean, id: string, expires: Date): void {
    const attributes = this.attributes(false, expires);
    ctx.cookies.set(this.settings.name, id, attributes);
    // The signature cookie ctx.cookies would add, with the signature computed once per ID.
    if (signed) ctx.cookies.set(`${this.settings.name}.sig`, this.sign(ctx, id), attributes);
    markPrivate(ctx);
  }

  /** Sends an already-expired session cookie, so the browser drops it. */
  expire(ctx: Context, signed: boolean): void {
    ctx.cookies.set(this.settings.name, null, this.attributes(signed, new Date(0)));
    markPrivate(ctx);
  }

  private attributes(signed: boolean, expires: Date) {
    const settings = this.settings;
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

  /** The signature of the cookie `name=value`, as Keygrip makes it with the first key. */
  private sign(ctx: Context, value: string): string {
    const keys: unknown = ctx.app.keys;
    if (Array.isArray(keys)) return this.signatures.of(keys[0] as string, this.settings.name, value);
    return (ctx.cookies as unknown as { keys: Keygrip }).keys.sign(`${this.settings.name}=${value}`);
  }

  /**
   * Which of `app.keys` signed the cookie `name=value` (-1: none), compared
   * in constant time. For a plain array of keys this is Keygrip's check,
   * without its second round of HMACs per comparison (crypto.timingSafeEqual
   * does that job); an `app.keys` that is a Keygrip instance is asked itself.
   */
  private signingKeyIndex(ctx: Context, value: string, signature: string): number {
    const keys: unknown = ctx.app.keys;
    const name = this.settings.name;
    if (!Array.isArray(keys)) return (ctx.cookies as unknown as { keys: Keygrip }).keys.index(`${name}=${value}`, signature);
    if (keys.length > 0 && sameInConstantTime(this.signatures.of(keys[0] as string, name, value), signature)) return 0;
    for (let i = 1; i < keys.length; i++) {
      if (sameInConstantTime(keygripSignature(keys[i] as string, `${name}=${value}`), signature)) return i;
    }
    return -1;
  }
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
