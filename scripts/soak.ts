/**
 * Soak run: a bounded mixed load against the session middleware on
 * 127.0.0.1, in this process, for SOAK_SECONDS (default 60), then checks
 * that nothing leaked:
 *
 * - every counter holds exactly the increments that were answered 200
 *   (timed-out requests changed nothing);
 * - the MemoryStore holds exactly the sessions the load generator believes
 *   are alive;
 * - no session lock is held any more (the lock tables are empty, and a
 *   request with lockTimeout 0 gets every live session at once);
 * - once every session is logged out, the heap (after gc) is back near
 *   where it was before the load.
 *
 *   npm run soak                         # 60 s
 *   SOAK_SECONDS=600 SOAK_USERS=2000 npm run soak
 *
 * Knobs: SOAK_SECONDS, SOAK_USERS (virtual users, each with at most one
 * session), SOAK_CONCURRENCY (requests in flight), SOAK_HEAP_SLACK_MB.
 * Exits 1 when a check fails. test/soak-short.test.ts runs a few seconds
 * of the same in npm test.
 */
import v8 from 'node:v8';
import vm from 'node:vm';
import Koa from 'koa';
import { MemoryStore, session } from '../src';
import { LockWatch, agent as keepAliveAgent, request, requestNamer, serve, sessionCookie } from '../test/support/hardening-harness';
import type { Reply } from '../test/support/hardening-harness';

export interface SoakOptions {
  seconds: number;
  users: number;
  concurrency: number;
  /** The middleware's lockTimeout; the hog holds its lock three times as long. */
  lockTimeoutMs: number;
  /** How much the heap may end above its starting level, in MB. */
  heapSlackMb: number;
  log: (line: string) => void;
}

export interface SoakReport {
  seconds: number;
  requests: number;
  byStatus: Record<string, number>;
  byRoute: Record<string, number>;
  provokedTimeouts: { tried: number; timedOut: number };
  unprovokedTimeouts: number;
  sessions: { created: number; regenerated: number; destroyed: number; aliveAtEnd: number; storeSizeAtEnd: number };
  heapMb: { start: number; peak: number; end: number };
  locksHeldAtEnd: number;
  problems: string[];
}

/** gc(), from --expose-gc or switched on at run time. */
function collector(): () => void {
  const existing = (globalThis as { gc?: () => void }).gc;
  if (typeof existing === 'function') return existing;
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
}

async function settledHeapMb(gc: () => void): Promise<number> {
  for (let i = 0; i < 4; i++) {
    gc();
    await new Promise((resolve) => setImmediate(resolve));
  }
  return process.memoryUsage().heapUsed / 1024 / 1024;
}

interface User {
  readonly name: string;
  /** The session ID this user's browser holds, if any. */
  id: string | undefined;
  /** What the counter must be: increments answered 200 since the session was created. */
  n: number;
  /** Requests in flight for this user. */
  inflight: number;
  /** A create, login, logout or hog is running: nothing else may start. */
  exclusive: boolean;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function runSoak(options: SoakOptions): Promise<SoakReport> {
  const { log } = options;
  const gc = collector();
  const watch = new LockWatch().install();
  const store = new MemoryStore();
  const app = new Koa();
  app.silent = true;
  const hogMs = options.lockTimeoutMs * 3;
  let created = 0;
  let regenerated = 0;
  let destroyed = 0;
  app.on('session:created', () => created++);
  app.on('session:regenerated', () => regenerated++);
  app.on('session:destroyed', () => destroyed++);
  app.use(requestNamer());
  app.use(session({ store, lockTimeout: options.lockTimeoutMs }));
  app.use(async (ctx) => {
    const s = ctx.session;
    switch (`${ctx.method} ${ctx.path}`) {
      case 'GET /read':
        ctx.body = { n: s.get<number>('n') ?? null, user: s.get('user') ?? null };
        return;
      case 'POST /incr': {
        const n = s.get<number>('n') ?? 0;
        if (Math.random() < 0.3) await sleep(Math.floor(Math.random() * 3));
        s.set('n', n + 1);
        ctx.body = 'ok';
        return;
      }
      case 'GET /note': // a read-mode write to a key of its own
        s.set(`note:${Math.floor(Math.random() * 4)}`, { at: Date.now(), pad: 'x'.repeat(Math.floor(Math.random() * 200)) });
        ctx.body = 'ok';
        return;
      case 'POST /login':
        s.set('user', ctx.get('x-user'));
        await s.regenerate();
        ctx.body = 'ok';
        return;
      case 'POST /logout':
        await s.destroy();
        ctx.body = 'ok';
        return;
      case 'POST /hog':
        await sleep(hogMs);
        ctx.body = 'ok';
        return;
      default:
        ctx.status = 404;
    }
  });
  const served = await serve(app);
  const http = keepAliveAgent();
  const users: User[] = Array.from({ length: options.users }, (_, i) => ({ name: `u${i}`, id: undefined, n: 0, inflight: 0, exclusive: false }));
  const byStatus: Record<string, number> = {};
  const byRoute: Record<string, number> = {};
  const problems: string[] = [];
  let requests = 0;
  let unprovokedTimeouts = 0;
  const provoked = { tried: 0, timedOut: 0 };

  async function call(user: User, method: string, path: string, extra: Record<string, string> = {}): Promise<Reply> {
    user.inflight++;
    try {
      const reply = await request(served.port, {
        method,
        path,
        headers: { ...(user.id === undefined ? {} : { cookie: `session_id=${user.id}` }), 'x-user': user.name, ...extra },
        agent: http,
      });
      requests++;
      byStatus[reply.status] = (byStatus[reply.status] ?? 0) + 1;
      byRoute[`${method} ${path}`] = (byRoute[`${method} ${path}`] ?? 0) + 1;
      if (reply.status >= 500 && reply.status !== 503) problems.push(`${method} ${path} answered ${reply.status}: ${reply.body.slice(0, 200)}`);
      return reply;
    } finally {
      user.inflight--;
    }
  }

  const takeCookie = (user: User, reply: Reply) => {
    const cookie = sessionCookie(reply);
    if (cookie === undefined) return;
    user.id = cookie.expired ? undefined : cookie.value;
  };

  /** One step for a random user. */
  async function step(): Promise<void> {
    const user = users[Math.floor(Math.random() * users.length)];
    if (user.exclusive) return;
    const roll = Math.random();
    // Lifecycle steps run alone on their user, so the generator always knows which sessions exist.
    const lifecycle = user.id === undefined || roll < 0.05;
    if (lifecycle && user.inflight > 0) return;
    if (!lifecycle && user.inflight >= 2) return;
    if (lifecycle) user.exclusive = true;
    try {
      if (user.id === undefined) {
        const reply = await call(user, 'POST', '/incr');
        if (reply.status === 200) {
          takeCookie(user, reply);
          user.n = 1;
        }
      } else if (roll < 0.02) {
        const reply = await call(user, 'POST', '/logout');
        if (reply.status === 200) {
          takeCookie(user, reply);
          if (user.id !== undefined) problems.push('a logout did not expire the cookie');
          user.id = undefined;
          user.n = 0;
        }
      } else if (roll < 0.04) {
        const before = user.id;
        const reply = await call(user, 'POST', '/login');
        if (reply.status === 200) {
          takeCookie(user, reply);
          if (user.id === before) problems.push('a login did not change the session ID');
        }
      } else if (roll < 0.05) {
        await provokeTimeouts(user);
      } else if (roll < 0.5) {
        const reply = await call(user, 'POST', '/incr');
        if (reply.status === 200) user.n++;
        else if (reply.status === 503) unprovokedTimeouts++;
      } else if (roll < 0.7) {
        const reply = await call(user, 'GET', '/note');
        if (reply.status === 503) unprovokedTimeouts++;
      } else {
        const reply = await call(user, 'GET', '/read');
        if (reply.status === 503) unprovokedTimeouts++;
      }
    } finally {
      if (lifecycle) user.exclusive = false;
    }
  }

  /** A slow writer holds the session; two increments behind it must time out and change nothing. */
  async function provokeTimeouts(user: User): Promise<void> {
    const hog = call(user, 'POST', '/hog');
    await sleep(Math.min(50, options.lockTimeoutMs / 4));
    const waiting = await Promise.all([call(user, 'POST', '/incr'), call(user, 'POST', '/incr')]);
    provoked.tried += waiting.length;
    for (const reply of waiting) {
      if (reply.status === 503) provoked.timedOut++;
      else if (reply.status === 200) user.n++; // the hog was slower to start than expected: still counted
    }
    const hogReply = await hog;
    if (hogReply.status !== 200) problems.push(`the hog request itself answered ${hogReply.status}`);
  }

  async function worker(until: number): Promise<void> {
    while (Date.now() < until) {
      await step();
      // Keep a worker whose pick was busy from spinning.
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  // Warm-up (code paths compiled, sockets open), then log everybody out: the heap's starting level.
  log(`soak: ${options.seconds} s, ${options.users} users, ${options.concurrency} in flight, lockTimeout ${options.lockTimeoutMs} ms (hog ${hogMs} ms)`);
  await Promise.all(Array.from({ length: options.concurrency }, () => worker(Date.now() + Math.min(2000, options.seconds * 200))));
  await logoutAll();
  const heapStart = await settledHeapMb(gc);
  let heapPeak = heapStart;

  const started = Date.now();
  const until = started + options.seconds * 1000;
  const ticker = setInterval(() => {
    const heap = process.memoryUsage().heapUsed / 1024 / 1024;
    heapPeak = Math.max(heapPeak, heap);
    log(`  ${Math.round((Date.now() - started) / 1000)} s: ${requests} requests, ${store.size} sessions stored, heap ${heap.toFixed(1)} MB, ${watch.held()} locks held`);
  }, 10_000);
  ticker.unref();
  await Promise.all(Array.from({ length: options.concurrency }, () => worker(until)));
  clearInterval(ticker);
  const seconds = (Date.now() - started) / 1000;
  heapPeak = Math.max(heapPeak, process.memoryUsage().heapUsed / 1024 / 1024);

  // Every counter is exact.
  for (const user of users) {
    if (user.id === undefined) continue;
    const reply = await call(user, 'GET', '/read');
    const { n } = JSON.parse(reply.body) as { n: number | null };
    if (reply.status !== 200 || n !== user.n) problems.push(`${user.name}: the counter is ${String(n)} (status ${reply.status}), but ${user.n} increments were answered 200`);
  }
  // The store holds exactly the live sessions.
  const alive = users.filter((u) => u.id !== undefined).length;
  const storeSizeAtEnd = store.size;
  if (storeSizeAtEnd !== alive) problems.push(`the store holds ${storeSizeAtEnd} sessions, the load generator knows of ${alive}`);
  // No lock is held: exactly, and as a client sees it.
  await sleep(hogMs + 50);
  const locksHeldAtEnd = watch.held();
  if (locksHeldAtEnd !== 0) problems.push(`${locksHeldAtEnd} session lock(s) still held after the load`);
  for (const user of users) {
    if (user.id === undefined) continue;
    const reply = await call(user, 'POST', '/incr', { 'x-lock-timeout': '0' });
    if (reply.status !== 200) problems.push(`${user.name}: a request with lockTimeout 0 got ${reply.status}: its lock is still held`);
    else user.n++;
  }
  // Everybody logs out; the heap comes back.
  await logoutAll();
  if (store.size !== 0) problems.push(`after every user logged out the store still holds ${store.size} sessions`);
  http.destroy();
  await served.close();
  const heapEnd = await settledHeapMb(gc);
  if (heapEnd - heapStart > options.heapSlackMb) {
    problems.push(`the heap ended ${(heapEnd - heapStart).toFixed(1)} MB above its starting level (allowed ${options.heapSlackMb} MB)`);
  }
  if (provoked.tried > 0 && provoked.timedOut === 0) problems.push('no provoked lock timeout happened: the hog did not hold its lock');
  store.close();
  watch.uninstall();

  async function logoutAll(): Promise<void> {
    for (const user of users) {
      if (user.id === undefined) continue;
      const reply = await call(user, 'POST', '/logout');
      if (reply.status === 200) {
        user.id = undefined;
        user.n = 0;
      } else problems.push(`${user.name}: logout answered ${reply.status}`);
    }
  }

  return {
    seconds,
    requests,
    byStatus,
    byRoute,
    provokedTimeouts: provoked,
    unprovokedTimeouts,
    sessions: { created, regenerated, destroyed, aliveAtEnd: alive, storeSizeAtEnd },
    heapMb: { start: heapStart, peak: heapPeak, end: heapEnd },
    locksHeldAtEnd,
    problems,
  };
}

export function formatReport(report: SoakReport): string {
  const statuses = Object.entries(report.byStatus).map(([status, count]) => `${status}: ${count}`).join(', ');
  return [
    `soak report (${report.seconds.toFixed(1)} s)`,
    `  requests        ${report.requests} (${(report.requests / report.seconds).toFixed(0)}/s); statuses ${statuses}`,
    `  routes          ${Object.entries(report.byRoute).map(([route, count]) => `${route} ${count}`).join(', ')}`,
    `  lock timeouts   provoked ${report.provokedTimeouts.timedOut}/${report.provokedTimeouts.tried}, unprovoked ${report.unprovokedTimeouts}`,
    `  sessions        created ${report.sessions.created}, regenerated ${report.sessions.regenerated}, destroyed ${report.sessions.destroyed}; alive at the end ${report.sessions.aliveAtEnd}, in the store ${report.sessions.storeSizeAtEnd}`,
    `  locks held      ${report.locksHeldAtEnd} after the load`,
    `  heap            start ${report.heapMb.start.toFixed(1)} MB (after gc), peak ${report.heapMb.peak.toFixed(1)} MB (sampled), end ${report.heapMb.end.toFixed(1)} MB (after gc, every session logged out)`,
    report.problems.length === 0 ? '  OK: no lost update, no leaked session, lock or memory' : `  FAILED:\n${report.problems.slice(0, 30).map((p) => `    - ${p}`).join('\n')}`,
  ].join('\n');
}

async function main(): Promise<void> {
  const env = (name: string, fallback: number) => (process.env[name] === undefined || process.env[name] === '' ? fallback : Number(process.env[name]));
  const report = await runSoak({
    seconds: env('SOAK_SECONDS', 60),
    users: env('SOAK_USERS', 500),
    concurrency: env('SOAK_CONCURRENCY', 32),
    lockTimeoutMs: env('SOAK_LOCK_TIMEOUT_MS', 300),
    heapSlackMb: env('SOAK_HEAP_SLACK_MB', 16),
    log: (line) => console.log(line),
  });
  console.log(formatReport(report));
  process.exitCode = report.problems.length === 0 ? 0 : 1;
}

if (require.main === module) {
  main().catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  });
}
