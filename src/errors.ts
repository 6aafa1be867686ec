/**
 * The library's own errors. Both carry `status` (Koa turns it into the HTTP
 * status) and a stable `code`; neither ever contains a raw session ID.
 */

/** A request waited longer than `lockTimeout` for its session's lock. */
export class SessionLockTimeoutError extends Error {
  readonly status = 503;
  readonly statusCode = 503;
  readonly code = 'ESESSIONLOCKTIMEOUT';
  readonly expose = false;

  constructor(waitedMs: number) {
    super(`koa-locked-session: timed out after ${waitedMs} ms waiting for the session lock`);
    this.name = 'SessionLockTimeoutError';
  }
}

/** The store threw or rejected; the original error is `cause`. */
export class SessionStoreError extends Error {
  readonly status = 503;
  readonly statusCode = 503;
  readonly code = 'ESESSIONSTORE';
  readonly expose = false;
  declare readonly cause: unknown;

  constructor(operation: string, cause: unknown) {
    super(`koa-locked-session: session store failed during ${operation}`, { cause });
    this.name = 'SessionStoreError';
  }
}

/**
 * The app is configured so that the session cookie cannot be sent
 * (a Secure cookie on plain HTTP, or signing without `app.keys`).
 * A server-side mistake, hence 500.
 */
export class SessionConfigError extends Error {
  readonly status = 500;
  readonly statusCode = 500;
  readonly code = 'ESESSIONCONFIG';
  readonly expose = false;

  constructor(message: string) {
    super(`koa-locked-session: ${message}`);
    this.name = 'SessionConfigError';
  }
}
