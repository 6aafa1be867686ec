/**
 * The memory probes, each in a child process of its own (run with
 * --expose-gc):
 *
 *   bytes  heap bytes per stored session: one real request through the
 *          contender captures what its middleware hands its store, then a
 *          fresh store of the same kind receives `count` copies under fresh
 *          IDs (made the library's way); heap used after GC, before and after.
 *   sweep  the longest event-loop block while MemoryStore.sweep() removes
 *          `count` expired sessions (monitorEventLoopDelay, 1 ms resolution).
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import { FACTORIES, ID_MAKERS, mapStore } from './contenders';
import { request } from './http';
import { answerParent } from './answer-parent';

/* eslint-disable @typescript-eslint/no-explicit-any, @typescript-eslint/no-require-imports */
type Any = any;

const env = { lib: process.env.BENCH_LIB ?? '' };
const lib = (): typeof import('../src/index') => require(env.lib);

function gc(): void {
  const collect = (globalThis as { gc?: () => void }).gc;
  if (collect === undefined) throw new Error('run with --expose-gc');
  for (let i = 0; i < 3; i++) collect();
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** What the contender's middleware passes to its store's set() for a session made by GET /init. */
async function captureSet(name: string): Promise<unknown[]> {
  const built = await FACTORIES[name](env);
  const store = built.store as Any;
  let captured: unknown[] | undefined;
  const original = store.set;
  store.set = function (this: unknown, ...args: unknown[]) {
    captured = args;
    return original.apply(this, args);
  };
  const server = http.createServer(built.listener);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const agent = new http.Agent();
  try {
    const reply = await request(agent, (server.address() as AddressInfo).port, 'GET', '/init');
    if (reply.status !== 200) throw new Error(`${name}: GET /init answered ${reply.status}`);
  } finally {
    agent.destroy();
    server.close();
    await built.close();
  }
  if (captured === undefined) throw new Error(`${name}: the store's set() was not called`);
  return captured;
}

/** A fresh, empty store of the contender's kind, and how to put one session in it. */
function freshStore(name: string, captured: unknown[]): { keep: unknown; put(id: string): void; close(): void } {
  const [, value, third] = captured;
  switch (name) {
    case 'ours': {
      const store = new (lib().MemoryStore)();
      const ttl = third as number;
      // set() copies (stringifies) the record itself, as in a real request.
      return { keep: store, put: (id) => void store.set(id, value as Record<string, unknown>, ttl), close: () => store.close() };
    }
    case 'koa-session-store': {
      const store = mapStore();
      return { keep: store, put: (id) => void store.set(id, structuredClone(value)), close: () => undefined };
    }
    case 'koa-generic-session': {
      const MemoryStore = require('koa-generic-session/lib/memory_store');
      const store = new MemoryStore();
      return { keep: store, put: (id) => store.set(id, structuredClone(value)), close: () => undefined };
    }
    case 'express-session': {
      const { MemoryStore } = require('express-session');
      const store = new MemoryStore();
      // express-session's MemoryStore stringifies the Session object on set().
      return { keep: store, put: (id) => store.set(id, value, () => undefined), close: () => undefined };
    }
    default:
      throw new Error(`no memory probe for ${name}`);
  }
}

async function bytesPerSession(name: string, count: number) {
  const captured = await captureSet(name);
  const makeId = ID_MAKERS[name];
  // IDs are made inside the measured span: each session's key is part of what it costs.
  gc();
  const before = process.memoryUsage().heapUsed;
  const store = freshStore(name, captured);
  const started = performance.now();
  for (let i = 0; i < count; i++) store.put(makeId());
  const insertMs = performance.now() - started;
  await sleep(10); // let pending set() promises settle
  gc();
  const after = process.memoryUsage().heapUsed;
  const bytes = (after - before) / count;
  store.close();
  return { name, count, bytesPerSession: bytes, insertUsPerSession: (insertMs * 1000) / count, sample: JSON.stringify(captured[1]).slice(0, 400) };
}

/** IDs the way ours makes them, from one big random buffer (filling a million is the slow part). */
function manyIds(count: number): string[] {
  const random = randomBytes(32 * count);
  return Array.from({ length: count }, (_, i) => random.toString('hex', i * 32, i * 32 + 32));
}

/**
 * CPU time of this process's main thread so far, in ms, from Linux's
 * schedstat (nanoseconds on a CPU); undefined elsewhere. Unlike
 * process.cpuUsage() it leaves out GC helper threads, and unlike the wall
 * clock it leaves out time spent waiting for a CPU on a busy machine.
 */
function mainThreadCpuMs(): number | undefined {
  try {
    return Number(readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').split(' ')[0]) / 1e6;
  } catch {
    return undefined;
  }
}

/**
 * Watches the event loop while `work` runs: monitorEventLoopDelay's longest
 * delay (wall clock), and the most main-thread CPU time spent between two
 * consecutive ticks of a 0 ms timer (what a quiet machine would see as the
 * longest block).
 */
async function watchLoop(work: () => Promise<void>) {
  const histogram = monitorEventLoopDelay({ resolution: 1 });
  let lastCpu = mainThreadCpuMs();
  let maxCpuGapMs = NaN;
  let watching = true;
  const tick = () => {
    const cpu = mainThreadCpuMs();
    if (cpu !== undefined && lastCpu !== undefined) {
      const gap = cpu - lastCpu;
      if (!(gap <= maxCpuGapMs)) maxCpuGapMs = gap;
    }
    lastCpu = cpu;
    if (watching) setTimeout(tick, 0);
  };
  histogram.enable();
  setTimeout(tick, 0);
  const started = performance.now();
  await work();
  const ms = performance.now() - started;
  watching = false;
  histogram.disable();
  return { maxBlockMs: histogram.max / 1e6, p99Ms: histogram.percentile(99) / 1e6, meanMs: histogram.mean / 1e6, maxCpuGapMs, ms };
}

/**
 * The sweep of `count` expired sessions, `repeats` times on fresh stores.
 * A stall that comes from the sweep itself shows in every repeat; one that
 * comes from another process taking the CPU does not, so the smallest of
 * the repeats' longest blocks is reported (and every repeat's, too).
 */
async function sweepBlock(count: number, repeats: number) {
  const { MemoryStore } = lib();
  const record = { data: { user: 'user-42', role: 'member', theme: 'dark', n: 0 }, createdAt: Date.now(), touchedAt: Date.now() };
  const runs = [];
  for (let r = 0; r < repeats; r++) {
    let store: InstanceType<typeof MemoryStore> | undefined = new MemoryStore({ cleanupInterval: 24 * 3600 * 1000 });
    const filled = store;
    for (const id of manyIds(count)) void filled.set(id, record, 1);
    await sleep(50); // every entry is now expired
    gc();
    const watched = await watchLoop(() => filled.sweep());
    const left = filled.size;
    filled.close();
    store = undefined;
    gc();
    runs.push({ ...watched, left });
  }
  const best = runs.reduce((a, b) => (b.maxBlockMs < a.maxBlockMs ? b : a));
  return {
    count,
    maxBlockMs: best.maxBlockMs,
    p99Ms: best.p99Ms,
    meanMs: best.meanMs,
    maxCpuGapMs: Math.min(...runs.map((r) => r.maxCpuGapMs)),
    sweepMs: best.ms,
    left: Math.max(...runs.map((r) => r.left)),
    repeats: runs.map((r) => ({ maxBlockMs: r.maxBlockMs, maxCpuGapMs: r.maxCpuGapMs, sweepMs: r.ms })),
  };
}

async function run(): Promise<unknown> {
  const mode = process.env.BENCH_MEMORY_MODE;
  const count = Number(process.env.BENCH_COUNT);
  if (mode === 'bytes') return bytesPerSession(process.env.BENCH_STORE ?? '', count);
  if (mode === 'sweep') return sweepBlock(count, Number(process.env.BENCH_REPEATS ?? 1));
  throw new Error(`unknown memory mode ${mode}`);
}

answerParent(run);
