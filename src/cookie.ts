import type { Context } from 'koa';
import type Keygrip from 'keygrip';
import type { CookieAction } from './commit';
import type { CookieSettings } from './options';
import { SessionConfigError } from './errors';
import { keygripSignature } from './hmac-sha1';
import { SignatureMemo, sameInConstantTime } from './signature';

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
 * `Set-Cookie` lines for the session cookie, written as the `cookies`
 * package writes them (same attributes, same order, lower case), so a
 * browser gets exactly what `ctx.cookies.set` would send. Only the value and
 * `expires` change from one response to the next; the rest is built once.
 * A line without `expiresAt` has no `expires`: a cookie that ends with the
 * browser session (cookieExpires: false).
 */
class SetCookieLines {
  private readonly path: string;
  private readonly rest: string;
  private lastSecond = Number.NaN;
  private lastDate = '';

  constructor(settings: CookieSettings) {
    this.path = settings.path === '' ? '' : `; path=${settings.path}`;
    let rest = settings.domain === undefined || settings.domain === '' ? '' : `; domain=${settings.domain}`;
    if (settings.sameSite !== false) rest += `; samesite=${settings.sameSite}`;
    if (settings.secure) rest += '; secure';
    if (settings.httpOnly) rest += '; httponly';
    this.rest = rest;
  }

  line(name: string, value: string, expiresAt: number | undefined): string {
    if (expiresAt === undefined) return `${name}=${value}${this.path}${this.rest}`;
    return `${name}=${value}${this.path}; expires=${this.httpDate(expiresAt)}${this.rest}`;
  }

  /** The HTTP date of `ms`, formatted once per second. */
  private httpDate(ms: number): string {
    const second = Math.floor(ms / 1000);
    if (second !== this.lastSecond) {
      this.lastSecond = second;
      this.lastDate = new Date(ms).toUTCString();
    }
    return this.lastDate;
  }
}

/**
 * The session cookie of one middleware: reading it as `ctx.cookies` reads
 * it (format, then signature), writing and expiring it in the format
 * `ctx.cookies` writes, and the cache headers that go with it. Signing
 * follows Keygrip over `app.keys`, as `ctx.cookies` does: the first key
 * signs, every key verifies.
 */
export class SessionCookie {
  private readonly signatures = new SignatureMemo();
  private readonly lines: SetCookieLines;
  private readonly signatureName: string;
  /** Starts of the Set-Cookie lines a new cookie replaces: its own, and when signed its signature's. */
  private readonly replacedUnsigned: readonly string[];
  private readonly replacedSigned: readonly string[];

  constructor(
    private readonly settings: CookieSettings,
    private readonly isValidId: (value: string) => boolean,
  ) {
    this.lines = new SetCookieLines(settings);
    this.signatureName = `${settings.name}.sig`;
    this.replacedUnsigned = [`${settings.name}=`];
    this.replacedSigned = [`${settings.name}=`, `${this.signatureName}=`];
  }

  /**
   * Whether this request signs its cookie: the `signed` option, or by
   * default whether `app.keys` is set. Signing without keys is a
   * configuration mistake, reported before the handler runs.
   */
  isSigned(ctx: Context): boolean {
    const keys: unknown = ctx.app.keys;
    const hasKeys = Boolean(keys); // as the cookies package decides
    if (this.settings.signed === true && !hasKeys) {
      throw new SessionConfigError('the signed option needs app.keys to be set (app.keys = [secret, ...])');
    }
    const signed = this.settings.signed ?? hasKeys;
    // Unsigned, app.keys is not used, except that ctx.cookies cannot be made at all with an empty array.
    if (signed || (Array.isArray(keys) && keys.length === 0)) checkKeys(keys);
    return signed;
  }

  /**
   * Reads the session cookie. The format is checked before anything else,
   * then the signature (constant-time, every key of `app.keys` tried), so a
   * value that fails either never names a session.
   */
  read(ctx: Context, signed: boolean): CookieRead {
    const header = ctx.req.headers.cookie;
    const value = cookieValue(header, this.settings.name);
    if (value === undefined || value === '') return ABSENT;
    if (!this.isValidId(value)) return INVALID;
    if (!signed) return { state: 'valid', id: value, resign: false };
    const signature = cookieValue(header, this.signatureName);
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

  /** Does what the commit says the response must do with the cookie: send it, expire it, or nothing. */
  send(ctx: Context, action: CookieAction, signed: boolean): void {
    if (action.kind === 'send') this.write(ctx, signed, action.id, this.settings.expires ? action.expiresAt : undefined);
    else if (action.kind === 'expire') this.expire(ctx, signed);
  }

  /**
   * Sends the session cookie with `value` (and its `.sig` when signed),
   * expiring at `expiresAt` (ms): the session's ID, or '' and 0 to expire it.
   * Without `expiresAt`, a cookie that ends with the browser session.
   */
  write(ctx: Context, signed: boolean, value: string, expiresAt: number | undefined): void {
    const lines = [this.lines.line(this.settings.name, value, expiresAt)];
    // The signature cookie ctx.cookies would add (for an expired cookie too), the signature computed once per ID.
    if (signed) lines.push(this.lines.line(this.signatureName, this.sign(ctx, value), expiresAt));
    replaceSetCookies(ctx, signed ? this.replacedSigned : this.replacedUnsigned, lines);
    markPrivate(ctx);
  }

  /**
   * What an error response must carry of what write() put on this
   * response: the session cookie's Set-Cookie lines, and the cache headers
   * that keep shared caches from storing them. Nothing else the app set:
   * Koa's error handler drops that, as it should (a long-lived
   * Cache-Control, say). Undefined when no session cookie line is there.
   */
  errorHeaders(ctx: Context): Record<string, string | string[]> | undefined {
    const own = setCookieLines(ctx).filter((line) => isLineOf(this.replacedSigned, line));
    if (own.length === 0) return undefined;
    return { 'Set-Cookie': own, Vary: 'Cookie', 'Cache-Control': NO_CACHE_COOKIE };
  }

  /** Sends an already-expired session cookie, so the browser drops it. */
  expire(ctx: Context, signed: boolean): void {
    this.write(ctx, signed, '', 0);
  }

  /**
   * The signature of the cookie `name=value`, as Keygrip makes it with the
   * first key: remembered when the request's cookie was verified, computed
   * (and not kept) for a new ID.
   */
  private sign(ctx: Context, value: string): string {
    const keys: unknown = ctx.app.keys;
    if (Array.isArray(keys)) return this.signatures.of(keys[0] as string | Uint8Array, this.settings.name, value, false);
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
    if (keys.length > 0 && sameInConstantTime(this.signatures.of(keys[0] as string | Uint8Array, name, value, true), signature)) return 0;
    for (let i = 1; i < keys.length; i++) {
      if (sameInConstantTime(keygripSignature(keys[i] as string | Uint8Array, `${name}=${value}`), signature)) return i;
    }
    return -1;
  }
}

/**
 * The value of the cookie `name` in a Cookie header, found exactly where
 * `ctx.cookies.get(name)` finds it: the first `name=` at the start of the
 * header or after a `;` and any spaces, up to the next `;`; a value that
 * starts with a double quote loses its first and last characters, whatever
 * the last one is (`"abc` reads `ab`). The same answer without building
 * `ctx.cookies` (a Keygrip per request when `app.keys` is set) and its
 * regular expression match; a test holds it to the `cookies` package.
 */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (header === undefined || header === '') return undefined;
  for (let start = 0; ; ) {
    let at = start;
    while (header.charCodeAt(at) === SPACE) at++;
    if (header.startsWith(name, at) && header.charCodeAt(at + name.length) === EQUALS) {
      const from = at + name.length + 1;
      const end = header.indexOf(';', from);
      const value = end < 0 ? header.slice(from) : header.slice(from, end);
      return value.charCodeAt(0) === QUOTE ? value.slice(1, -1) : value;
    }
    const next = header.indexOf(';', start);
    if (next < 0) return undefined;
    start = next + 1;
  }
}

const SPACE = 0x20;
const EQUALS = 0x3d;
const QUOTE = 0x22;

/**
 * `app.keys` as Koa's cookies need it: an array of secrets, or a Keygrip.
 * A mistake here (an unset environment variable giving `[undefined]`, an
 * empty array, a bare string) would otherwise fail deep inside the cookie
 * code, after the handler ran and its session was stored.
 */
function checkKeys(keys: unknown): void {
  if (Array.isArray(keys)) {
    if (keys.length === 0) throw new SessionConfigError('app.keys is an empty array: give it at least one secret, or leave it unset for unsigned cookies');
    for (let i = 0; i < keys.length; i++) {
      const key: unknown = keys[i];
      if (!(typeof key === 'string' ? key !== '' : key instanceof Uint8Array && key.length > 0)) {
        throw new SessionConfigError(`app.keys[${i}] is ${describeKey(key)}: every key must be a non-empty string or Buffer (is an environment variable unset?)`);
      }
    }
    return;
  }
  const keygrip = keys as Partial<Keygrip>;
  if (typeof keygrip.sign !== 'function' || typeof keygrip.index !== 'function') {
    throw new SessionConfigError('app.keys must be an array of secret strings (app.keys = [secret, ...]) or a Keygrip instance');
  }
}

function describeKey(key: unknown): string {
  if (typeof key === 'string') return 'an empty string';
  if (key === null || key === undefined) return String(key);
  if (key instanceof Uint8Array) return 'an empty Buffer'; // the only bytes refused
  return typeof key === 'object' ? 'an object' : `a ${typeof key}`;
}

/**
 * Adds `lines` to the response's Set-Cookie header, dropping earlier lines
 * for the same cookies (what `overwrite: true` does in ctx.cookies).
 */
function replaceSetCookies(ctx: Context, prefixes: readonly string[], lines: string[]): void {
  const earlier = setCookieLines(ctx);
  ctx.res.setHeader('Set-Cookie', earlier.length === 0 ? lines : [...earlier.filter((line) => !isLineOf(prefixes, line)), ...lines]);
}

const NO_LINES: readonly string[] = [];

// Headers are looked up by their lower-case names: Node lower-cases the name on every
// getHeader/hasHeader, which for a name already in lower case makes no new string.
// The headers set keep their usual case on the wire.

/** The response's Set-Cookie lines so far. */
function setCookieLines(ctx: Context): readonly string[] {
  const current = ctx.res.getHeader('set-cookie');
  if (current === undefined) return NO_LINES;
  return Array.isArray(current) ? current : [String(current)];
}

/** Whether `line` sets one of the cookies named by `prefixes` (`name=`). */
function isLineOf(prefixes: readonly string[], line: string): boolean {
  return prefixes.some((prefix) => line.startsWith(prefix));
}

const NO_CACHE_COOKIE = 'no-cache="Set-Cookie"';

/**
 * A response carrying one user's cookie must never be stored or replayed
 * by a shared cache.
 */
function markPrivate(ctx: Context): void {
  const res = ctx.res;
  if (res.hasHeader('vary')) ctx.vary('Cookie');
  else res.setHeader('Vary', 'Cookie');
  const current = res.getHeader('cache-control');
  const cacheControl = current === undefined ? '' : String(current);
  if (cacheControl === '') res.setHeader('Cache-Control', NO_CACHE_COOKIE);
  else if (!cacheControl.includes(NO_CACHE_COOKIE)) res.setHeader('Cache-Control', `${cacheControl}, ${NO_CACHE_COOKIE}`);
}
