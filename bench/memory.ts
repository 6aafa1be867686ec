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

const DAY_MS = 24 * 60 * 60 * 1000;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * What the contender's middleware passes to its store's set() for a session
 * made by GET /init. This library's middleware writes its own MemoryStore
 * without set() (see directMemoryStore), so for it the session is read back
 * with get(), which returns the record set() takes.
 */
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
    if (captured === undefined && name === 'ours') {
      const id = /^session_id=([^;]*)/.exec(reply.setCookies[0] ?? '')?.[1] ?? '';
      captured = [id, await store.get(id), DAY_MS];
    }
  } finally {
    agent.destroy();
    server.close();
    await built.close();
  }
  if (captured?.[1] === undefined) throw new Error(`${name}: nothing was stored`);
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
 * Watches the event loop while `work` runs: monitorEventLoopDelay's longest
 * delay (wall clock, so it also counts time the process waited for a CPU),
 * and the wall time of each synchronous step of `work`, a step ending where
 * it yields with setImmediate, as MemoryStore.sweep does between its shards.
 * (The kernel's CPU-time counters move in 4 ms scheduler ticks, too coarse
 * to time steps this short.)
 */
async function watchLoop(work: () => Promise<void>) {
  const histogram = monitorEventLoopDelay({ resolution: 1 });
  const steps: number[] = [];
  const original = global.setImmediate;
  let stepStarted = performance.now();
  global.setImmediate = ((callback: (...args: unknown[]) => void, ...args: unknown[]) => {
    steps.push(performance.now() - stepStarted);
    return original(() => {
      stepStarted = performance.now();
      callback(...args);
    });
  }) as typeof setImmediate;
  histogram.enable();
  // The histogram measures from its first timer tick: a block that starts at once would go unseen.
  await sleep(20);
  const started = performance.now();
  stepStarted = started;
  try {
    await work();
  } finally {
    global.setImmediate = original;
  }
  const ms = performance.now() - started;
  histogram.disable();
  steps.sort((a, b) => a - b);
  return {
    maxBlockMs: histogram.max / 1e6,
    p99Ms: histogram.percentile(99) / 1e6,
    meanMs: histogram.mean / 1e6,
    longestStepMs: steps[steps.length - 1] ?? 0,
    medianStepMs: steps[steps.length >> 1] ?? 0,
    steps: steps.length,
    ms,
  };
}

/** Turns of the event loop with nothing in them, for `ms`, yielding with setImmediate as the sweep does. */
async function idleTurns(ms: number): Promise<void> {
  const until = performance.now() + ms;
  while (performance.now() < until) await new Promise<void>((resolve) => setImmediate(resolve));
}

/** Every entry `store` holds, expired or not (MemoryStore's size counts live sessions only). */
function heldEntries(store: object): number {
  const { shards } = store as { shards: readonly Map<string, unknown>[] };
  return shards.reduce((held, shard) => held + shard.size, 0);
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
    if (heldEntries(filled) !== count) throw new Error(`the store holds ${heldEntries(filled)} entries, not ${count}`);
    await sleep(50); // every entry is now expired
    gc();
    // A forced full GC leaves V8's helper threads sweeping the old heap for a
    // while, and the main thread waits for them in 4 ms scheduler slices
    // whenever it touches a page they hold: the collector's doing, not the
    // store's (a real sweep runs every cleanupInterval, not right after a
    // forced GC). So let them finish first.
    await sleep(2000);
    const watched = await watchLoop(() => filled.sweep());
    const left = heldEntries(filled); // not size, which counts live sessions only: every one here has expired
    if (left > 0) throw new Error(`the sweep left ${left} of ${count} expired sessions`);
    // The same process doing nothing but turn its event loop, as long as the sweep took: how long
    // a "block" this machine shows with no work at all (another process takes the CPU, a timer is late).
    const idle = await watchLoop(() => idleTurns(watched.ms));
    filled.close();
    store = undefined;
    gc();
    runs.push({ ...watched, left, idleMaxBlockMs: idle.maxBlockMs });
  }
  const best = runs.reduce((a, b) => (b.maxBlockMs < a.maxBlockMs ? b : a));
  return {
    count,
    maxBlockMs: best.maxBlockMs,
    p99Ms: best.p99Ms,
    meanMs: best.meanMs,
    longestStepMs: Math.min(...runs.map((r) => r.longestStepMs)),
    medianStepMs: best.medianStepMs,
    steps: best.steps,
    sweepMs: best.ms,
    left: Math.max(...runs.map((r) => r.left)),
    repeats: runs.map((r) => ({ maxBlockMs: r.maxBlockMs, longestStepMs: r.longestStepMs, sweepMs: r.ms, idleMaxBlockMs: r.idleMaxBlockMs })),
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
