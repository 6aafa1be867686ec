/**
 * The library's own cost per request, without HTTP: Koa apps are driven
 * in-process through app.callback() with IncomingMessage/ServerResponse
 * objects on an unconnected socket (responses are buffered, never sent),
 * 50 requests in flight at a time, as in the load test. CPU time of short
 * batches, the contenders alternating batch by batch, medians at the end.
 * Steadier than the HTTP runs on a busy machine, and what an A/B of a
 * change in src/ (`--variant DIR --micro`) is best judged on.
 *
 * Runs in a child process (compiled to plain JS, --expose-gc); libraries
 * come from BENCH_LIBS (name=path,…).
 */
import http from 'node:http';
import net from 'node:net';
import { APP_KEYS, SESSION_KEYS } from './contenders';
import { answerParent } from './answer-parent';

/* eslint-disable @typescript-eslint/no-explicit-any, @typescript-eslint/no-require-imports */
type Any = any;

interface MicroApp {
  name: string;
  callback: (req: http.IncomingMessage, res: http.ServerResponse) => Promise<void>;
  /** One session per request in flight: cookies[0] is the one W1 and W2 share. */
  cookies: string[];
}

const socket = new net.Socket();

function fakeRequest(method: string, url: string, cookie: string | undefined): [http.IncomingMessage, http.ServerResponse] {
  const req = new http.IncomingMessage(socket);
  req.method = method;
  req.url = url;
  req.headers = cookie ? { host: 'bench', cookie } : { host: 'bench' };
  const res = new http.ServerResponse(req);
  return [req, res];
}

function handler(withSession: boolean) {
  return async (ctx: Any): Promise<void> => {
    const s = withSession ? ctx.session : { get: (k: string) => (SESSION_KEYS as Any)[k], set: () => undefined };
    switch (ctx.path) {
      case '/read': {
        const user = s.get('user');
        if (user === undefined) throw new Error('the session did not load');
        ctx.body = String(user);
        return;
      }
      case '/write': {
        const n = Number(s.get('n')) + 1;
        s.set('n', n);
        ctx.body = String(n);
        return;
      }
      case '/new':
        s.set('visits', 1);
        ctx.body = 'ok';
        return;
      case '/init':
        for (const [key, value] of Object.entries(SESSION_KEYS)) s.set(key, value);
        ctx.body = 'ok';
        return;
    }
  };
}

async function build(name: string, lib: string | undefined, signed: boolean): Promise<MicroApp> {
  const Koa = require('koa');
  const app = new Koa();
  app.silent = true;
  if (signed) app.keys = APP_KEYS;
  if (lib !== undefined) {
    const { session } = require(lib);
    app.use(session());
  }
  app.use(handler(lib !== undefined));
  const callback = app.callback();
  const cookies: string[] = [];
  if (lib !== undefined) {
    for (let i = 0; i < WIDTH; i++) {
      const [req, res] = fakeRequest('GET', '/init', undefined);
      await callback(req, res);
      const set = res.getHeader('set-cookie') as string[] | undefined;
      const cookie = (set ?? []).map((line) => line.split(';', 1)[0]).join('; ');
      if (cookie === '') throw new Error(`${name}: no session cookie from /init`);
      cookies.push(cookie);
    }
  }
  return { name, callback, cookies };
}

/** Requests in flight, as the load test's connections. */
const WIDTH = 50;

/**
 * [method, path, cookies]: 'one' sends the same session's cookie with every
 * request, 'own' gives each of the 50 in flight a session of its own (W2x:
 * writes without lock waits, to tell the lock's cost from the write path's).
 */
const ROUTES = {
  W1: ['GET', '/read', 'one'],
  W2: ['POST', '/write', 'one'],
  W2x: ['POST', '/write', 'own'],
  W3: ['GET', '/new', 'none'],
} as const;

async function batch(app: MicroApp, workload: keyof typeof ROUTES, requests: number): Promise<number> {
  const [method, path, cookies] = ROUTES[workload];
  const started = process.cpuUsage();
  let next = 0;
  const worker = async (slot: number) => {
    const cookie = cookies === 'none' ? undefined : app.cookies[cookies === 'one' ? 0 : slot];
    while (next < requests) {
      next++;
      const [req, res] = fakeRequest(method, path, cookie);
      await app.callback(req, res);
      if (res.statusCode !== 200) throw new Error(`${app.name} ${workload}: status ${res.statusCode}`);
    }
  };
  await Promise.all(Array.from({ length: WIDTH }, (_, slot) => worker(slot)));
  const cpu = process.cpuUsage(started);
  return (cpu.user + cpu.system) / requests;
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

async function run() {
  const libs = (process.env.BENCH_LIBS ?? '').split(',').filter(Boolean).map((pair) => pair.split('='));
  const signed = process.env.BENCH_SIGNED === '1';
  const batches = Number(process.env.BENCH_BATCHES ?? 15);
  const size = Number(process.env.BENCH_BATCH_SIZE ?? 3000);
  const workloads = (process.env.BENCH_WORKLOADS ?? 'W1,W2,W3').split(',') as (keyof typeof ROUTES)[];
  const out: Record<string, Record<string, number>> = {};
  for (const workload of workloads) {
    // Fresh apps (and stores) per workload, so W3's new sessions do not pile up into the next.
    const apps = [await build('bare Koa', undefined, signed), ...(await Promise.all(libs.map(([name, path]) => build(name, path, signed))))];
    const samples = new Map<string, number[]>(apps.map((a) => [a.name, []]));
    for (const app of apps) await batch(app, workload, size); // warm-up
    for (let b = 0; b < batches; b++) {
      // Rotate the order within each round.
      for (let i = 0; i < apps.length; i++) {
        const app = apps[(i + b) % apps.length];
        samples.get(app.name)?.push(await batch(app, workload, size));
      }
    }
    out[workload] = Object.fromEntries([...samples].map(([name, values]) => [name, median(values)]));
  }
  return out;
}

answerParent(run);
