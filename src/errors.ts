import { format } from 'node:util';

/**
 * What Koa's ctx.onerror makes of a thrown value: the value itself when it
 * is an Error (of any realm: `instanceof` fails across them), else an Error
 * saying what was thrown.
 */
export function asError(thrown: unknown): Error {
  const isError = thrown instanceof Error || Object.prototype.toString.call(thrown) === '[object Error]';
  return isError ? (thrown as Error) : new Error(format('non-error thrown: %j', thrown));
}

/**
 * The library's own errors. Each carries `status` (Koa turns it into the
 * HTTP status) and a stable `code`; none ever contains a raw session ID.
 */
abstract class SessionError extends Error {
  abstract readonly status: number;
  abstract readonly code: string;
  /** Koa shows the status text, not this message, to the client. */
  readonly expose = false;

  /** The same as `status`, for code that reads `statusCode`. */
  get statusCode(): number {
    return this.status;
  }
}

/** A request waited longer than `lockTimeout` for its session's lock. */
export class SessionLockTimeoutError extends SessionError {
  readonly status = 503;
  readonly code = 'ESESSIONLOCKTIMEOUT';

  constructor(waitedMs: number) {
    super(`koa-locked-session: timed out after ${waitedMs} ms waiting for the session lock`);
    this.name = 'SessionLockTimeoutError';
  }
}

/** The store threw or rejected; the original error is `cause`. */
export class SessionStoreError extends SessionError {
  readonly status = 503;
  readonly code = 'ESESSIONSTORE';
  declare readonly cause: unknown;

  constructor(operation: string, cause: unknown) {
    super(`koa-locked-session: session store failed during ${operation}`, { cause });
    this.name = 'SessionStoreError';
  }
}

/**
 * The app is configured so that the session cookie cannot be sent
 * (a Secure cookie on plain HTTP, signing without `app.keys`, or an
 * `app.keys` that cannot sign).
 * A server-side mistake, hence 500.
 */
export class SessionConfigError extends SessionError {
  readonly status = 500;
  readonly code = 'ESESSIONCONFIG';

  constructor(message: string) {
    super(`koa-locked-session: ${message}`);
    this.name = 'SessionConfigError';
  }
}
