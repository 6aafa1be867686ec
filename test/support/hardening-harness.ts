/**
 * Shared machinery of the hardening tests (property, hostile cookies,
 * faulty stores, soak): which request is running (AsyncLocalStorage), a
 * look into the middleware's lock tables, a store wrapper that logs every
 * call with the request that made it (and can be slow or fail on purpose),
 * and small HTTP clients, one of them raw bytes over a socket.
 *
 * Nothing here changes src/: the lock tables are watched by wrapping
 * LockTable.prototype.acquire, which every middleware's SessionLocks calls.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import type fc from 'fast-check';
import Koa from 'koa';
import type { Context, Middleware } from 'koa';
import { LockTable } from '../../src/lock';
import type { LockMode, WhenGranted } from '../../src/lock';
import { keepRelease } from './lock-table';
import { MemoryStore } from '../../src';
import type { AtomicStore, Change, SessionData, Store } from '../../src';

// ---------------------------------------------------------------- which request is this

export interface RequestInfo {
  /** The test's name for this request (header x-rid). */
  readonly rid: string;
  /** Overrides the middleware's lockTimeout for this request's lock waits. */
  readonly lockTimeout?: number;
}

/** The request whose code is running, across every await of its middleware chain. */
export const currentRequest = new AsyncLocalStorage<RequestInfo>();

/**
 * The first middleware of every hardening app: names the request (x-rid),
 * records the order requests arrived in (which is the order they queue for
 * their session's lock: nothing asynchronous happens before that), and
 * runs the rest inside `currentRequest`.
 */
export function requestNamer(arrivals?: string[]): Middleware {
  let anonymous = 0;
  return async (ctx, next) => {
    const rid = ctx.get('x-rid') || `anon-${++anonymous}`;
    ctx.state.rid = rid;
    arrivals?.push(rid);
    const override = ctx.get('x-lock-timeout');
    const info: RequestInfo = override === '' ? { rid } : { rid, lockTimeout: Number(override) };
    await currentRequest.run(info, () => next());
  };
}

/** lockMode option for tests: the x-lock header, else Koa's method rule. */
export function lockModeFromHeader(ctx: Context): LockMode {
  const mode = ctx.get('x-lock');
  if (mode === 'read' || mode === 'write') return mode;
  return ['GET', 'HEAD', 'OPTIONS'].includes(ctx.method) ? 'read' : 'write';
}

// ---------------------------------------------------------------- lock tables

/**
 * Sees every LockTable that any middleware uses (by wrapping
 * LockTable.prototype.acquire while installed), and applies a request's
 * x-lock-timeout override. `held()` is the number of session locks held
 * or waited for right now, over all those tables.
 */
export class LockWatch {
  readonly tables = new Set<LockTable>();
  private original: LockTable['acquire'] | undefined;

  install(): this {
    if (this.original !== undefined) return this;
    const original = LockTable.prototype.acquire;
    this.original = original;
    const tables = this.tables;
    LockTable.prototype.acquire = function acquire(this: LockTable, id: string, mode: LockMode, timeoutMs: number, whenGranted?: WhenGranted<unknown>) {
      tables.add(this);
      const override = currentRequest.getStore()?.lockTimeout;
      return original.call(this, id, mode, override ?? timeoutMs, whenGranted ?? keepRelease);
    } as LockTable['acquire'];
    return this;
  }

  uninstall(): void {
    if (this.original !== undefined) LockTable.prototype.acquire = this.original;
    this.original = undefined;
    this.tables.clear();
  }

  held(): number {
    let sum = 0;
    for (const table of this.tables) sum += table.size;
    return sum;
  }
}

// ---------------------------------------------------------------- a store that tells what it was asked

export type StoreOp = 'get' | 'set' | 'destroy' | 'touch' | 'applyChanges';

export interface StoreEvent {
  /** Position in the log: the order the calls reached the inner store. */
  readonly seq: number;
  /** The request that made the call (undefined outside any request). */
  readonly rid: string | undefined;
  /** A store call; or 'queue', 'done': the request asked for the lock on `id`, or left the session middleware (see LoggedStore.note). */
  readonly op: StoreOp | 'queue' | 'done';
  /** When it happened (Date.now()). */
  readonly at: number;
  readonly id: string;
  /** get: the record returned; set: the record written. */
  readonly record?: SessionData;
  /** applyChanges: the change log. */
  readonly changes?: readonly Change[];
  /** applyChanges: whether the session was there. */
  applied?: boolean;
  /** 'before': failed without reaching the inner store; 'after': reached it, then reported a failure. */
  readonly fault?: 'before' | 'after';
}

export interface Faults {
  /** Milliseconds to wait before each call (0 for none). */
  latency(op: StoreOp): number;
  /** Whether this call fails, and whether before or after it reached the inner store. */
  fault(op: StoreOp): 'before' | 'after' | undefined;
}

export const NO_FAULTS: Faults = { latency: () => 0, fault: () => undefined };

/** The error a FaultyStore throws: its message is the store's own and names no ID. */
export class InjectedStoreError extends Error {
  constructor(readonly op: StoreOp, readonly when: 'before' | 'after') {
    super(`injected store failure (${op}, ${when} the write)`);
    this.name = 'InjectedStoreError';
  }
}

function copy<T>(value: T): T {
  return value === undefined ? value : (JSON.parse(JSON.stringify(value)) as T);
}

/**
 * A Store over `inner` that logs every call in `log` with the request that
 * made it, the log order being the order the calls reached `inner` (a
 * MemoryStore works synchronously inside each call, so it is also the order
 * its data changed). With `atomic` it also offers applyChanges (the
 * MemoryStore path); without it the middleware does get-merge-set.
 */
export class LoggedStore implements Store {
  readonly log: StoreEvent[] = [];
  /** Every ID any call was made with, including failed calls. */
  readonly seenIds = new Set<string>();
  faults: Faults;

  constructor(readonly inner: MemoryStore, faults: Faults = NO_FAULTS) {
    this.faults = faults;
  }

  static atomic(inner: MemoryStore, faults?: Faults): LoggedStore & AtomicStore {
    return new LoggedAtomicStore(inner, faults);
  }

  protected async call<T>(op: StoreOp, id: string, run: () => Promise<T>, describe: (result: T) => Partial<StoreEvent>): Promise<T> {
    this.seenIds.add(id);
    const rid = currentRequest.getStore()?.rid;
    const wait = this.faults.latency(op);
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    const fault = this.faults.fault(op);
    if (fault === 'before') {
      this.log.push({ seq: this.log.length, rid, op, id, at: Date.now(), fault });
      throw new InjectedStoreError(op, 'before');
    }
    const pending = run(); // the inner MemoryStore changes here, synchronously
    const event: StoreEvent = { seq: this.log.length, rid, op, id, at: Date.now(), ...(fault === undefined ? {} : { fault }) };
    this.log.push(event);
    const result = await pending;
    Object.assign(event, describe(result));
    if (fault === 'after') throw new InjectedStoreError(op, 'after');
    return result;
  }

  /** Logs, among the store calls, that request `rid` asks for the lock on session `id` now, or is done with its lock. */
  note(rid: string, op: 'queue' | 'done', id: string): void {
    this.log.push({ seq: this.log.length, rid, op, id, at: Date.now() });
  }

  get(id: string): Promise<SessionData | undefined> {
    return this.call('get', id, () => this.inner.get(id), (record) => ({ record: copy(record) }));
  }

  set(id: string, data: SessionData, maxAgeMs: number): Promise<void> {
    const record = copy(data);
    return this.call('set', id, () => this.inner.set(id, data, maxAgeMs), () => ({ record }));
  }

  destroy(id: string): Promise<void> {
    return this.call('destroy', id, () => this.inner.destroy(id), () => ({}));
  }

  touch(id: string, maxAgeMs: number): Promise<void> {
    return this.call('touch', id, () => this.inner.touch(id, maxAgeMs), () => ({}));
  }

  /** Mutating calls (or attempts) made by `rid`. */
  writesOf(rid: string): StoreEvent[] {
    return this.log.filter((e) => e.rid === rid && e.op !== 'get');
  }
}

class LoggedAtomicStore extends LoggedStore implements AtomicStore {
  applyChanges(id: string, changes: readonly Change[], touchedAt: number, maxAgeMs: number): Promise<boolean> {
    const logged = copy(changes);
    return this.call('applyChanges', id, () => this.inner.applyChanges(id, changes, touchedAt, maxAgeMs), (applied) => ({ changes: logged, applied }));
  }
}

/** The user data the inner store holds for `id` (bypassing the log), or undefined. */
export async function storedData(inner: MemoryStore, id: string): Promise<SessionData | undefined> {
  const record = await inner.get(id);
  if (record === undefined) return undefined;
  return (record as { data: SessionData }).data;
}

// ---------------------------------------------------------------- apps and servers

export interface Served {
  readonly app: Koa;
  readonly server: http.Server;
  readonly port: number;
  close(): Promise<void>;
}

/** Listens on 127.0.0.1 on a free port. */
export async function serve(app: Koa): Promise<Served> {
  const server = await new Promise<http.Server>((resolve, reject) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
  });
  const { port } = server.address() as AddressInfo;
  return {
    app,
    server,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

// ---------------------------------------------------------------- HTTP clients

export interface Reply {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
}

/** A keep-alive agent, so concurrent requests really are concurrent connections. */
export function agent(): http.Agent {
  return new http.Agent({ keepAlive: true, maxSockets: 256 });
}

export function request(
  port: number,
  options: { method?: string; path?: string; headers?: Record<string, string>; body?: string; agent?: http.Agent },
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        method: options.method ?? 'GET',
        path: options.path ?? '/',
        headers: options.headers,
        agent: options.agent,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (options.body !== undefined) req.write(options.body);
    req.end();
  });
}

export interface RawReply {
  /** 0 when the server closed the connection without answering. */
  readonly status: number;
  /** Header lines as sent, names lower-cased. */
  readonly headers: [string, string][];
  readonly body: Buffer;
  /** Every byte the server sent. */
  readonly raw: Buffer;
}

/**
 * Sends `head` (the request line and header lines, without the final empty
 * line; any bytes, valid HTTP or not) over a fresh socket and reads the
 * answer until the server closes the connection.
 */
export function rawRequest(port: number, head: Buffer): Promise<RawReply> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const chunks: Buffer[] = [];
    socket.setTimeout(15_000, () => socket.destroy(new Error('raw request timed out')));
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', (error: NodeJS.ErrnoException) => {
      // A server may reset a connection whose request it refused; what it sent first still counts.
      if (error.code === 'ECONNRESET' || error.code === 'EPIPE') finish();
      else reject(error);
    });
    socket.on('end', finish);
    let done = false;
    function finish() {
      if (done) return;
      done = true;
      socket.destroy();
      resolve(parseRaw(Buffer.concat(chunks)));
    }
    socket.write(Buffer.concat([head, Buffer.from('\r\nConnection: close\r\n\r\n', 'latin1')]));
  });
}

function parseRaw(raw: Buffer): RawReply {
  const end = raw.indexOf('\r\n\r\n');
  if (end < 0) return { status: 0, headers: [], body: Buffer.alloc(0), raw };
  const lines = raw.subarray(0, end).toString('latin1').split('\r\n');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0])?.[1] ?? 0);
  const headers = lines.slice(1).map((line): [string, string] => {
    const colon = line.indexOf(':');
    return [line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()];
  });
  let body = raw.subarray(end + 4);
  if (headers.some(([name, value]) => name === 'transfer-encoding' && /chunked/i.test(value))) body = unchunk(body);
  return { status, headers, body, raw };
}

function unchunk(data: Buffer): Buffer {
  const parts: Buffer[] = [];
  let at = 0;
  for (;;) {
    const lineEnd = data.indexOf('\r\n', at);
    if (lineEnd < 0) break;
    const size = parseInt(data.subarray(at, lineEnd).toString('latin1'), 16);
    if (!(size > 0)) break;
    parts.push(data.subarray(lineEnd + 2, lineEnd + 2 + size));
    at = lineEnd + 2 + size + 2;
  }
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------- cookies

export interface SessionCookie {
  /** '' for an expiring cookie. */
  readonly value: string;
  readonly expired: boolean;
  readonly attributes: Record<string, string | true>;
  readonly raw: string;
}

/** The Set-Cookie lines of a reply. */
export function setCookieLines(reply: Reply | RawReply): string[] {
  if ('raw' in reply) return reply.headers.filter(([name]) => name === 'set-cookie').map(([, value]) => value);
  const header = reply.headers['set-cookie'];
  return header === undefined ? [] : header;
}

/** The Set-Cookie of `name` (the last one when several), parsed. */
export function sessionCookie(reply: Reply | RawReply, name = 'session_id'): SessionCookie | undefined {
  const lines = setCookieLines(reply).filter((line) => line.startsWith(`${name}=`));
  const line = lines.at(-1);
  if (line === undefined) return undefined;
  const [pair, ...rest] = line.split(';');
  const attributes: Record<string, string | true> = {};
  for (const part of rest) {
    const eq = part.indexOf('=');
    if (eq < 0) attributes[part.trim().toLowerCase()] = true;
    else attributes[part.slice(0, eq).trim().toLowerCase()] = part.slice(eq + 1).trim();
  }
  const expires = attributes.expires;
  const expired = typeof expires === 'string' && Date.parse(expires) <= Date.now();
  return { value: pair.slice(name.length + 1), expired, attributes, raw: line };
}

/** `name=value` pairs of every cookie a reply set (and did not expire), for the next request's Cookie header. */
export function cookiePairs(reply: Reply | RawReply): string {
  return setCookieLines(reply)
    .filter((line) => !/expires=Thu, 01 Jan 1970/i.test(line))
    .map((line) => line.split(';')[0])
    .join('; ');
}

export const HEX64 = /^[0-9a-f]{64}$/;

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A small seeded PRNG (mulberry32): fault and latency draws that a seed replays. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Counts unhandled promise rejections while installed. */
export class RejectionWatch {
  readonly seen: unknown[] = [];
  private readonly listener = (reason: unknown) => {
    this.seen.push(reason);
  };

  install(): this {
    process.on('unhandledRejection', this.listener);
    return this;
  }

  uninstall(): void {
    process.off('unhandledRejection', this.listener);
  }
}

/** fast-check run settings for the hardening suites: PROPERTY_RUNS (default 40) and PROPERTY_SEED to replay. */
export const PROPERTY_RUNS = Number(process.env.PROPERTY_RUNS ?? 40);
const PROPERTY_SEED = process.env.PROPERTY_SEED === undefined ? undefined : Number(process.env.PROPERTY_SEED);
export const propertyParams = <T>(runs: number): fc.Parameters<T> => ({ numRuns: runs, ...(PROPERTY_SEED === undefined ? {} : { seed: PROPERTY_SEED }) });
