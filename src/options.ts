import type { Context } from 'koa';
import type { LockMode } from './lock';
import type { Store } from './stores/store';
import { MemoryStore } from './stores/memory';
import { checkedGenerator, generateId, idCheck } from './ids';
import { MAX_TIMER_MS } from './timers';
import { refuseUnknownOptions } from './unknown-options';

export type SameSite = 'lax' | 'strict' | 'none' | false;

export interface SessionOptions {
  /** Cookie name. Default `'session_id'`. */
  cookieName?: string;
  /** Cookie Path. Default `'/'`. */
  cookiePath?: string;
  /** Cookie Domain. Default: unset (host-only cookie). */
  cookieDomain?: string;
  /** Secure attribute: the cookie is only sent over HTTPS. Default `false`. */
  cookieSecure?: boolean;
  /** HttpOnly attribute. Default `true`. */
  cookieHttpOnly?: boolean;
  /** SameSite attribute; `false` omits it. Default `'lax'`. */
  sameSite?: SameSite;
  /**
   * Expires attribute: the cookie expires with the session (`maxAge`,
   * `absoluteTimeout`). `false` omits it, for a cookie the browser drops when
   * it ends its session; the server still ends the session after `maxAge`
   * idle. Default `true`.
   */
  cookieExpires?: boolean;
  /** Idle lifetime in ms: a session unused this long is gone. Default 24 h. */
  maxAge?: number;
  /** Hard lifetime in ms from creation, whatever the activity. Default: unset. */
  absoluteTimeout?: number;
  /** Sign the cookie with `app.keys`. Default: `true` when `app.keys` is set. */
  signed?: boolean;
  /** Where sessions live. Default: a new MemoryStore. */
  store?: Store;
  /** The lock a request takes. Default: `'read'` for GET, HEAD, OPTIONS, else `'write'`. */
  lockMode?: (ctx: Context) => LockMode;
  /** Longest wait in ms for a session's lock. Default 5000. */
  lockTimeout?: number;
  /** Re-send the cookie on every response of a live session. Default `false`. */
  rolling?: boolean;
  /** ID generator: 22-256 characters of `[A-Za-z0-9_-]`. Default: 32 random bytes, hex. */
  genid?: () => string;
  /** The store sees SHA-256(ID), never the ID. Default `false`. */
  hashIds?: boolean;
}

export interface CookieSettings {
  readonly name: string;
  readonly path: string;
  readonly domain: string | undefined;
  readonly secure: boolean;
  readonly httpOnly: boolean;
  readonly sameSite: SameSite;
  /** Whether a live cookie carries an Expires attribute (an expired one always does). */
  readonly expires: boolean;
  /** `undefined`: sign exactly when `app.keys` is set. */
  readonly signed: boolean | undefined;
}

export interface ResolvedOptions {
  readonly cookie: CookieSettings;
  readonly maxAge: number;
  readonly absoluteTimeout: number | undefined;
  readonly store: Store;
  readonly lockMode: (ctx: Context) => LockMode;
  readonly lockTimeout: number;
  readonly rolling: boolean;
  readonly genid: () => string;
  /** The check a cookie value must pass before it may reach the store. */
  readonly isValidId: (value: string) => boolean;
  readonly hashIds: boolean;
}

const READ_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

export function defaultLockMode(ctx: Context): LockMode {
  return READ_METHODS.has(ctx.request.method) ? 'read' : 'write';
}

const KNOWN = new Set<string>([
  'cookieName', 'cookiePath', 'cookieDomain', 'cookieSecure', 'cookieHttpOnly', 'sameSite', 'cookieExpires',
  'maxAge', 'absoluteTimeout', 'signed', 'store', 'lockMode', 'lockTimeout', 'rolling',
  'genid', 'hashIds',
]);

// RFC 6265: a cookie name is an RFC 7230 token, a path any printable ASCII but ';'. The cookies package's own path
// check also refuses '<' (its character range skips it), so such a path works here where ctx.cookies.set would throw.
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** Starts with '/': browsers ignore any other Path attribute (RFC 6265, 5.2.4). */
const PATH = /^\/[\x20-\x3a\x3c-\x7e]*$/;
const DOMAIN = /^([.]?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)([.][a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;

function invalid(option: string, expected: string): TypeError {
  return new TypeError(`koa-locked-session: option ${option} must be ${expected}`);
}

function optionalBoolean(opts: SessionOptions, option: keyof SessionOptions, fallback: boolean): boolean;
function optionalBoolean(opts: SessionOptions, option: keyof SessionOptions, fallback: undefined): boolean | undefined;
function optionalBoolean(opts: SessionOptions, option: keyof SessionOptions, fallback: boolean | undefined): boolean | undefined {
  const value = opts[option];
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw invalid(option, 'a boolean');
  return value;
}

/**
 * The longest maxAge / absoluteTimeout: 100 years (of 365.25 days). Now plus
 * this is a date every cookie can carry (a four-digit year) for centuries to
 * come; a much larger value has no date at all (`expires=Invalid Date`).
 */
const MAX_LIFETIME_MS = 100 * 365.25 * 24 * 60 * 60 * 1000;

function positiveMs(opts: SessionOptions, option: 'maxAge' | 'absoluteTimeout'): number | undefined {
  const value = opts[option];
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    const browserSession = (value as unknown) === 'session' ? '; for a cookie that ends with the browser session, set cookieExpires: false' : '';
    throw invalid(option, `a positive number of milliseconds up to 100 years (${MAX_LIFETIME_MS})${browserSession}`);
  }
  if (value > MAX_LIFETIME_MS) {
    throw invalid(option, `at most 100 years (${MAX_LIFETIME_MS} ms): a longer lifetime gives no valid cookie expiry date`);
  }
  return value;
}

function cookieString(opts: SessionOptions, option: 'cookieName' | 'cookiePath' | 'cookieDomain', pattern: RegExp, what: string): string | undefined {
  const value = opts[option];
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || !pattern.test(value)) throw invalid(option, what);
  return value;
}

function checkStore(store: unknown): Store {
  const methods = ['get', 'set', 'destroy'] as const;
  if (typeof store !== 'object' || store === null) throw invalid('store', 'an object with get, set and destroy methods');
  for (const method of methods) {
    if (typeof (store as Record<string, unknown>)[method] !== 'function') {
      throw invalid('store', `an object with get, set and destroy methods (${method} is missing)`);
    }
  }
  const touch = (store as Record<string, unknown>).touch;
  if (touch !== undefined && typeof touch !== 'function') throw invalid('store', 'a store whose touch, if present, is a function');
  return store as Store;
}

/** What the options of koa-session and express-session are called, or become, here. */
const FROM_PEERS: Readonly<Record<string, string>> = {
  key: 'the cookie name is cookieName',
  name: 'the cookie name is cookieName',
  httpOnly: 'it is cookieHttpOnly',
  secure: 'it is cookieSecure',
  path: 'it is cookiePath',
  domain: 'it is cookieDomain',
  secret: 'set app.keys = [secret] to sign the cookie',
  renew: 'not needed: the expiry is pushed out by use (see maxAge)',
  autoCommit: 'not needed: each request commits what it changed when its handler is done',
  resave: 'not needed: only changes are written',
  saveUninitialized: 'not needed: a new session is saved only once something is set',
  cookie: "express-session's cookie: { httpOnly, secure, path, domain, sameSite, maxAge } is cookieHttpOnly, cookieSecure, cookiePath, cookieDomain, sameSite, maxAge",
  expires: 'the cookie expires with the session (maxAge); for a cookie that ends with the browser session, set cookieExpires: false',
  proxy: 'set app.proxy = true, as Koa has it',
  overwrite: 'not needed: the session cookie always replaces one set before it',
  encode: 'not needed: the cookie holds only the session ID, and the data stays in the store',
  decode: 'not needed: the cookie holds only the session ID, and the data stays in the store',
  valid: 'not offered: check the session in a middleware after session()',
  beforeSave: 'not offered: change the session in the handler, and it is saved when the handler is done',
  ContextStore: 'not offered: pass the store object as store',
  externalKey: 'not offered: the session ID is read from the cookie cookieName',
  prefix: "the key prefix is an option of the store (RedisStore's prefix)",
  ttl: 'it is maxAge, in milliseconds',
  genSid: 'it is genid',
  errorHandler: 'not offered: a store failure fails the request with SessionStoreError (503), for a middleware before session() to catch',
  unset: 'not needed: ctx.session = null or ctx.session.destroy() removes the session',
  // The cookie* family's two members without the prefix:
  cookieSameSite: 'it is sameSite',
  cookieMaxAge: 'it is maxAge; for a cookie that ends with the browser session, set cookieExpires: false',
};

/**
 * A cookie name with a `__Secure-` or `__Host-` prefix is a promise
 * browsers hold the cookie to, and they drop a cookie that breaks it
 * without a word: every session would be lost. Checked as browsers match
 * the prefixes, in any case.
 */
function checkNamePrefix(cookie: CookieSettings): void {
  const name = cookie.name.toLowerCase();
  if (name.startsWith('__secure-') && !cookie.secure) {
    throw invalid('cookieName', 'a name without the __Secure- prefix unless cookieSecure is true (browsers drop a __Secure- cookie that is not Secure)');
  }
  const hasDomain = cookie.domain !== undefined && cookie.domain !== '';
  if (name.startsWith('__host-') && (!cookie.secure || cookie.path !== '/' || hasDomain)) {
    throw invalid(
      'cookieName',
      "a name without the __Host- prefix unless cookieSecure is true, cookiePath is '/' and cookieDomain is unset (browsers drop a __Host- cookie otherwise)",
    );
  }
}

/** A Koa app, as koa-session's `session(app)` / `session(opts, app)` pass it. */
function isApp(value: unknown): boolean {
  return typeof (value as { use?: unknown } | null | undefined)?.use === 'function';
}

/**
 * Refuses what cannot be the options of `fn`: a value that is not an
 * object, or a Koa app, as koa-session's `session(app)` /
 * `session(opts, app)` pass it (`extra`: what came after the options).
 */
export function checkOptionsObject(opts: unknown, fn: 'session' | 'withStore', extra?: unknown): void {
  if (typeof opts !== 'object' || opts === null || Array.isArray(opts)) throw new TypeError('koa-locked-session: options must be an object');
  if (isApp(opts) || isApp(extra)) {
    const [bare, full] = fn === 'withStore' ? ['store', 'store, { ... }'] : ['', '{ ... }'];
    throw new TypeError(`koa-locked-session: ${fn}() takes an options object, not the app: write app.use(${fn}(${bare})) or app.use(${fn}(${full}))`);
  }
}

/**
 * Fills in defaults and checks every option; throws a TypeError naming the
 * first bad one. `extra` is whatever session() got after the options: an
 * app there (koa-session's `session(opts, app)`, from plain JavaScript) is
 * refused; anything else is ignored, as `options.map(session)` passes an index.
 */
export function resolveOptions(opts: SessionOptions = {}, extra?: unknown): ResolvedOptions {
  checkOptionsObject(opts, 'session', extra);
  refuseUnknownOptions(opts, KNOWN, FROM_PEERS, 'option');

  const secure = optionalBoolean(opts, 'cookieSecure', false);
  const sameSite = opts.sameSite === undefined ? 'lax' : opts.sameSite;
  if (sameSite !== 'lax' && sameSite !== 'strict' && sameSite !== 'none' && sameSite !== false) {
    throw invalid('sameSite', "'lax', 'strict', 'none' or false");
  }
  if (sameSite === 'none' && !secure) {
    throw invalid('sameSite', "'lax', 'strict' or false unless cookieSecure is true ('none' needs Secure)");
  }

  const lockTimeout = opts.lockTimeout === undefined ? 5000 : opts.lockTimeout;
  if (
    typeof lockTimeout !== 'number' || Number.isNaN(lockTimeout) || lockTimeout < 0
    || (lockTimeout > MAX_TIMER_MS && lockTimeout !== Infinity)
  ) {
    throw invalid('lockTimeout', `a number of milliseconds from 0 to ${MAX_TIMER_MS} (Node's largest timer delay), or Infinity to wait for ever`);
  }
  if (opts.lockMode !== undefined && typeof opts.lockMode !== 'function') throw invalid('lockMode', 'a function (ctx) => "read" | "write"');
  if (opts.genid !== undefined && typeof opts.genid !== 'function') throw invalid('genid', 'a function returning a string');

  const cookie: CookieSettings = {
    name: cookieString(opts, 'cookieName', TOKEN, 'a valid cookie name (an RFC 7230 token)') ?? 'session_id',
    path: cookieString(opts, 'cookiePath', PATH, "a cookie path: '/' followed by printable ASCII other than ';'") ?? '/',
    domain: cookieString(opts, 'cookieDomain', DOMAIN, 'a valid cookie domain'),
    secure,
    httpOnly: optionalBoolean(opts, 'cookieHttpOnly', true),
    sameSite,
    expires: optionalBoolean(opts, 'cookieExpires', true),
    signed: optionalBoolean(opts, 'signed', undefined),
  };
  checkNamePrefix(cookie);

  return {
    cookie,
    maxAge: positiveMs(opts, 'maxAge') ?? 86_400_000,
    absoluteTimeout: positiveMs(opts, 'absoluteTimeout'),
    store: opts.store === undefined ? new MemoryStore() : checkStore(opts.store),
    lockMode: opts.lockMode ?? defaultLockMode,
    lockTimeout,
    rolling: optionalBoolean(opts, 'rolling', false),
    genid: opts.genid === undefined ? generateId : checkedGenerator(opts.genid),
    isValidId: idCheck(opts.genid !== undefined),
    hashIds: optionalBoolean(opts, 'hashIds', false),
  };
}
