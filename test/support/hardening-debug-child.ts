/**
 * Run by faulty-store.test.ts in a child process with
 * NODE_DEBUG=koa-locked-session (util.debuglog reads it at start-up only).
 * Drives sessions through creation, updates, regeneration, destruction,
 * store failures and lock timeouts, with Koa's own error logging on, then
 * prints one JSON line: every session ID it saw and every status.
 * The parent checks that no ID appears anywhere on stderr.
 */
import Koa from 'koa';
import { MemoryStore, session } from '../../src';
import type { SessionData } from '../../src';
import { request, serve, sessionCookie } from './hardening-harness';

class FlakyStore extends MemoryStore {
  failing = false;
  override async get(id: string): Promise<SessionData | undefined> {
    if (this.failing) throw new Error('store unavailable');
    return super.get(id);
  }
  override async applyChanges(...args: Parameters<MemoryStore['applyChanges']>): Promise<boolean> {
    if (this.failing) throw new Error('store unavailable');
    return super.applyChanges(...args);
  }
}

async function main(): Promise<void> {
  const store = new FlakyStore();
  const app = new Koa(); // not silent: Koa logs each 5xx error to stderr too
  app.use(session({ store, lockTimeout: 40 }));
  app.use(async (ctx) => {
    const s = ctx.session;
    if (ctx.path === '/slow') await new Promise((resolve) => setTimeout(resolve, 300));
    if (ctx.path === '/login') {
      s.set('user', 'u');
      await s.regenerate();
    } else if (ctx.path === '/logout') {
      await s.destroy();
    } else {
      s.set('n', (s.get<number>('n') ?? 0) + 1);
    }
    ctx.body = 'ok';
  });
  const served = await serve(app);
  const ids = new Set<string>();
  const statuses: number[] = [];
  const post = async (path: string, id?: string) => {
    const reply = await request(served.port, { method: 'POST', path, headers: id === undefined ? {} : { cookie: `session_id=${id}` } });
    statuses.push(reply.status);
    const cookie = sessionCookie(reply);
    if (cookie !== undefined && cookie.value !== '') ids.add(cookie.value);
    return cookie?.value;
  };
  const a = (await post('/')) as string;
  await post('/', a);
  const b = (await post('/login', a)) as string;
  // A lock timeout.
  const slow = post('/slow', b);
  await new Promise((resolve) => setTimeout(resolve, 60));
  await post('/', b);
  await slow;
  // Store failures on load and on commit.
  store.failing = true;
  await post('/', b);
  store.failing = false;
  const c = (await post('/')) as string;
  const pending = post('/slow', c);
  await new Promise((resolve) => setTimeout(resolve, 20));
  store.failing = true;
  await pending;
  store.failing = false;
  // A missed session (unknown ID) and a logout.
  await post('/', 'ab'.repeat(32));
  ids.add('ab'.repeat(32));
  await post('/logout', b);
  await served.close();
  store.close();
  process.stdout.write(`${JSON.stringify({ ids: [...ids], statuses })}\n`);
}

main().catch((error: unknown) => {
  process.stderr.write(`child failed: ${String(error)}\n`);
  process.exit(1);
});
