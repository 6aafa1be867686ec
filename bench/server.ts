/**
 * One contender's server, in a process of its own (compiled to plain JS,
 * started by run.ts with --expose-gc). The parent drives it over IPC:
 *
 *   prepare  build a fresh app (fresh, empty stores) on a new loopback port
 *   start    collect garbage, then mark CPU time and the request count
 *   stop     report CPU time (user + system) and requests since `start`
 *   profile-start / profile-stop   V8 CPU profile of the measured window
 *   exit
 *
 * The server measures itself: process.cpuUsage() over the window divided by
 * the requests it served is steadier than requests/s on a busy machine.
 */
import http from 'node:http';
import { Session as InspectorSession } from 'node:inspector';
import type { AddressInfo } from 'node:net';
import { writeFileSync } from 'node:fs';
import { FACTORIES, type Built } from './contenders';

interface Request {
  id: number;
  type: string;
  file?: string;
}

const name = process.env.BENCH_CONTENDER ?? '';
const env = {
  lib: process.env.BENCH_LIB ?? '',
  redisPort: process.env.BENCH_REDIS_PORT ? Number(process.env.BENCH_REDIS_PORT) : undefined,
};
const factory = FACTORIES[name];

let server: http.Server | undefined;
let built: Built | undefined;
let served = 0;
/** Requests still being handled. */
let active = 0;
let mark: { cpu: NodeJS.CpuUsage; served: number; at: bigint } | undefined;
let inspector: InspectorSession | undefined;

function gc(): void {
  const collect = (globalThis as { gc?: () => void }).gc;
  if (collect !== undefined) {
    collect();
    collect();
  }
}

async function closeServer(): Promise<void> {
  const current = server;
  server = undefined;
  if (current !== undefined) {
    current.closeAllConnections();
    await new Promise<void>((resolve) => current.close(() => resolve()));
  }
  const old = built;
  built = undefined;
  await old?.close();
}

async function prepare(): Promise<{ port: number }> {
  await closeServer();
  built = await factory(env);
  const listener = built.listener;
  const next = http.createServer((req, res) => {
    served++;
    active++;
    // Koa's listener returns the request's promise, which settles only when
    // the middleware is done, even when the client has gone away already.
    const running: unknown = (listener as (...args: unknown[]) => unknown)(req, res);
    const done = () => active--;
    if (running instanceof Promise) running.then(done, done);
    else res.once('close', done);
  });
  next.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => next.listen(0, '127.0.0.1', resolve));
  server = next;
  return { port: (next.address() as AddressInfo).port };
}

function post(method: string, params: object = {}): Promise<unknown> {
  if (inspector === undefined) {
    inspector = new InspectorSession();
    inspector.connect();
  }
  const session = inspector;
  return new Promise((resolve, reject) => {
    session.post(method, params, (error, result) => (error ? reject(error) : resolve(result)));
  });
}

async function handle(message: Request): Promise<unknown> {
  switch (message.type) {
    case 'prepare':
      return prepare();
    case 'start':
      gc();
      mark = { cpu: process.cpuUsage(), served, at: process.hrtime.bigint() };
      return {};
    case 'stop': {
      if (mark === undefined) throw new Error('stop without start');
      const cpu = process.cpuUsage(mark.cpu);
      const result = {
        cpuUs: cpu.user + cpu.system,
        requests: served - mark.served,
        elapsedMs: Number(process.hrtime.bigint() - mark.at) / 1e6,
        heapUsed: process.memoryUsage().heapUsed,
      };
      mark = undefined;
      // Requests the load generator gave up on at the end still run here:
      // let them finish, so the next window (and a Redis flush) starts clean.
      const deadline = Date.now() + 10_000;
      while (active > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
      return result;
    }
    case 'profile-start':
      await post('Profiler.enable');
      await post('Profiler.setSamplingInterval', { interval: 100 });
      await post('Profiler.start');
      return {};
    case 'profile-stop': {
      const { profile } = (await post('Profiler.stop')) as { profile: unknown };
      if (message.file !== undefined) writeFileSync(message.file, JSON.stringify(profile));
      return {};
    }
    case 'exit':
      await closeServer();
      setImmediate(() => process.exit(0));
      return {};
    default:
      throw new Error(`unknown message ${message.type}`);
  }
}

if (factory === undefined) {
  console.error(`bench server: unknown contender ${JSON.stringify(name)}`);
  process.exit(2);
}

process.on('message', (message: Request) => {
  handle(message).then(
    (result) => process.send?.({ id: message.id, ok: true, result }),
    (error: unknown) => process.send?.({ id: message.id, ok: false, error: error instanceof Error ? error.message : String(error) }),
  );
});
process.on('disconnect', () => process.exit(0));
process.send?.({ id: 0, ok: true, result: { ready: true } });
