/**
 * Koa apps and a cookie-keeping HTTP client for the Redis suites: each app
 * stands for one process of a deployment (its own middleware, its own Redis
 * client), and one CookieJar is the browser behind a load balancer.
 */
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import Koa from 'koa';
import { withStore } from '../../src';
import type { SessionOptions, Store } from '../../src';

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** The browser: keeps the cookies responses set and sends them back. */
export class CookieJar {
  readonly cookies = new Map<string, string>();

  header(): string {
    return [...this.cookies].map(([name, value]) => `${name}=${value}`).join('; ');
  }

  take(setCookies: string[]): void {
    for (const line of setCookies) {
      const [pair, ...attributes] = line.split(';');
      const eq = (pair as string).indexOf('=');
      const name = (pair as string).slice(0, eq).trim();
      const value = (pair as string).slice(eq + 1).trim();
      const expires = attributes.map((a) => a.trim()).find((a) => a.toLowerCase().startsWith('expires='));
      const expired = expires !== undefined && Date.parse(expires.slice('expires='.length)) <= Date.now();
      if (value === '' || expired) this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
  }

  /** The session ID the browser holds, if any. */
  get sessionId(): string | undefined {
    return this.cookies.get('session_id');
  }
}

export interface Reply {
  status: number;
  body: unknown;
  setCookies: string[];
  /** Wall time of the request, in ms. */
  ms: number;
}

/** One request from the browser `jar` (cookies sent, and kept from the response). */
export async function send(jar: CookieJar, base: string, method: string, path: string): Promise<Reply> {
  const started = Date.now();
  const headers: Record<string, string> = {};
  const cookie = jar.header();
  if (cookie !== '') headers.cookie = cookie;
  const response = await fetch(base + path, { method, headers });
  const text = await response.text();
  const setCookies = response.headers.getSetCookie();
  jar.take(setCookies);
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  return { status: response.status, body, setCookies, ms: Date.now() - started };
}

export interface TestApp {
  readonly app: Koa;
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  /** Requests to POST /hold (and held ones to /regenerate, /destroy) wait here until release() (they have their lock). */
  readonly holds: Array<() => void>;
  /** Resolves once at least `count` requests are waiting in POST /hold. */
  held(count?: number): Promise<void>;
  /** Lets every held request finish. */
  release(): void;
  close(): Promise<void>;
}

const json = (value: unknown) => JSON.parse(String(value)) as unknown;

/**
 * A Koa app with the session middleware on `store`, listening on 127.0.0.1:
 *   GET  /                  the session's data
 *   POST /set?key=&value=   set key to the JSON value (keyJson= instead of key=: the key as JSON, for keys a URL cannot carry)
 *   POST /incr?delay=ms     n = n + 1, with an await of `delay` ms in between
 *   POST /hold?key=&value=  set (without key=: change nothing), then wait for release() before committing
 *   POST /regenerate        new ID, same data (?hold: then wait for release(), before the commit)
 *   POST /destroy           log out (?first=key: set key to 1 before; ?wait: wait for release() before it; ?hold: wait after it; ?key=&value=: then set, a login)
 */
export async function startApp(store: Store, options: SessionOptions = {}): Promise<TestApp> {
  const app = new Koa();
  app.keys = ['redis-suite-secret'];
  app.silent = true; // the 503s are expected; the tests assert them
  const holds: Array<() => void> = [];
  const hold = () => new Promise<void>((resolve) => holds.push(resolve));
  app.use(withStore(store, options));
  app.use(async (ctx) => {
    const session = ctx.session;
    const query = ctx.query;
    switch (`${ctx.method} ${ctx.path}`) {
      case 'GET /':
        ctx.body = session.toJSON();
        return;
      case 'POST /set':
        session.set(query.keyJson === undefined ? String(query.key) : (json(query.keyJson) as string), json(query.value));
        ctx.body = session.toJSON();
        return;
      case 'POST /incr': {
        const n = session.get<number>('n') ?? 0;
        await sleep(Number(query.delay ?? 0));
        session.set('n', n + 1);
        ctx.body = { n: n + 1 };
        return;
      }
      case 'POST /hold':
        if (query.key !== undefined) session.set(String(query.key), json(query.value));
        await hold();
        ctx.body = session.toJSON();
        return;
      case 'POST /regenerate':
        await session.regenerate();
        if (query.hold !== undefined) await hold();
        ctx.body = session.toJSON();
        return;
      case 'POST /destroy':
        if (query.first !== undefined) session.set(String(query.first), 1);
        if (query.wait !== undefined) await hold();
        // ?retry: a failed removal is tried once more
        await session.destroy().catch((error: unknown) => (query.retry === undefined ? Promise.reject(error) : session.destroy()));
        if (query.hold !== undefined) await hold();
        if (query.key !== undefined) session.set(String(query.key), json(query.value)); // a login that destroy()s first
        ctx.status = 204;
        return;
      default:
        ctx.status = 404;
    }
  });
  const server: Server = await new Promise((resolve) => {
    const listening = app.listen(0, '127.0.0.1', () => resolve(listening));
  });
  const { port } = server.address() as AddressInfo;
  return {
    app,
    url: `http://127.0.0.1:${port}`,
    holds,
    async held(count = 1) {
      const deadline = Date.now() + 15_000;
      while (holds.length < count) {
        if (Date.now() > deadline) throw new Error(`only ${holds.length} of ${count} requests reached POST /hold`);
        await sleep(5);
      }
    },
    release() {
      for (const resolve of holds.splice(0)) resolve();
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
