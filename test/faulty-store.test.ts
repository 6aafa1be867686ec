/**
 * Faulty stores: every store call is randomly slow and randomly fails,
 * either before it reached the data or after (a lost acknowledgement).
 * Over many random rounds of concurrent requests:
 *
 * - a request that met a store failure never gets a 2xx (it gets 503,
 *   ESESSIONSTORE), and a request that met none is served normally;
 * - every change that got a 2xx is in the store afterwards (unless a later
 *   request legitimately removed it); a failed change may or may not be;
 * - a counter incremented in write mode equals the number of increments
 *   whose commit reached the store: none lost, none doubled;
 * - nothing destroyed comes back;
 * - no lock is left held, no promise rejection goes unhandled, and the
 *   server keeps serving;
 * - no error the library raises names a session ID (message, stack, cause
 *   chain, all but the store's own error).
 *
 * PROPERTY_RUNS (default 40) sets the number of random runs.
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import Koa from 'koa';
import type { Context, Middleware } from 'koa';
import { MemoryStore, SessionLockTimeoutError, SessionStoreError, session } from '../src';
import type { SessionEvent } from '../src';
import {
  HEX64,
  InjectedStoreError,
  LockWatch,
  LoggedStore,
  NO_FAULTS,
  RejectionWatch,
  agent as keepAliveAgent,
  lockModeFromHeader,
  prng,
  request,
  requestNamer,
  serve,
  sessionCookie,
  storedData,
  PROPERTY_RUNS,
  propertyParams,
} from './support/hardening-harness';
import type { Faults, Reply, Served, StoreEvent } from './support/hardening-harness';
import { gate } from './support/concurrency';

type Mode = 'read' | 'write';
type Kind = 'own-key' | 'incr' | 'create' | 'regenerate' | 'logout' | 'read';

interface FaultyRequest {
  readonly kind: Kind;
  /** 0 is the counter session (incr and read only); 1 and 2 take everything else. */
  readonly slot: number;
  readonly mode: Mode;
  readonly waitMs: number;
}

interface FaultyRun {
  readonly rounds: readonly (readonly FaultyRequest[])[];
  /** Chance that a store call fails. */
  readonly failureRate: number;
  readonly maxLatency: number;
  readonly atomic: boolean;
  readonly seed: number;
}

function showRun(run: FaultyRun): string {
  const lines = [`faulty run: failure rate ${run.failureRate}, latency 0-${run.maxLatency} ms, ${run.atomic ? 'atomic' : 'get-merge-set'} store, seed ${run.seed}`];
  run.rounds.forEach((round, r) => {
    lines.push(`  round ${r + 1}: ${round.map((q) => `${q.kind}(s${q.slot} ${q.mode}${q.waitMs > 0 ? ` wait ${q.waitMs}ms` : ''})`).join(', ')}`);
  });
  return lines.join('\n');
}

const faultyRequest: fc.Arbitrary<FaultyRequest> = fc.oneof(
  fc.record({ kind: fc.constant<Kind>('incr'), slot: fc.constant(0), mode: fc.constant<Mode>('write'), waitMs: fc.integer({ min: 0, max: 3 }) }),
  fc.record({ kind: fc.constant<Kind>('read'), slot: fc.nat({ max: 2 }), mode: fc.constant<Mode>('read'), waitMs: fc.integer({ min: 0, max: 3 }) }),
  fc.record({ kind: fc.constant<Kind>('own-key'), slot: fc.integer({ min: 1, max: 2 }), mode: fc.constantFrom<Mode>('read', 'write'), waitMs: fc.integer({ min: 0, max: 3 }) }),
  fc.record({ kind: fc.constant<Kind>('create'), slot: fc.constant(1), mode: fc.constant<Mode>('write'), waitMs: fc.constant(0) }),
  fc.record({ kind: fc.constant<Kind>('regenerate'), slot: fc.integer({ min: 1, max: 2 }), mode: fc.constantFrom<Mode>('read', 'write'), waitMs: fc.integer({ min: 0, max: 3 }) }),
  fc.record({ kind: fc.constant<Kind>('logout'), slot: fc.integer({ min: 1, max: 2 }), mode: fc.constantFrom<Mode>('read', 'write'), waitMs: fc.constant(0) }),
);

const faultyRun: fc.Arbitrary<FaultyRun> = fc
  .record({
    rounds: fc.array(fc.array(faultyRequest, { minLength: 1, maxLength: 10 }), { minLength: 1, maxLength: 3 }),
    failureRate: fc.constantFrom(0.05, 0.2, 0.5),
    maxLatency: fc.constantFrom(0, 3, 6),
    atomic: fc.boolean(),
    seed: fc.nat(),
  })
  .map((run) => Object.assign(run, { toString: () => showRun(run) }));

async function handle(ctx: Context): Promise<void> {
  const spec = JSON.parse(ctx.get('x-spec')) as FaultyRequest;
  const rid = ctx.state.rid as string;
  const s = ctx.session;
  const pause = () => new Promise((resolve) => setTimeout(resolve, spec.waitMs));
  switch (spec.kind) {
    case 'incr': {
      const n = s.get<number>('n') ?? 0;
      await pause();
      s.set('n', n + 1);
      break;
    }
    case 'own-key':
    case 'create':
      await pause();
      s.set(`k:${rid}`, rid);
      break;
    case 'regenerate':
      s.set(`k:${rid}`, rid);
      await pause();
      await s.regenerate();
      break;
    case 'logout':
      await s.destroy();
      break;
    case 'read':
      await pause();
      s.get('n');
      break;
  }
  ctx.body = 'ok';
}

/** Every string an error exposes about itself: message, stack, and the same for each cause (but the store's own). */
function errorTexts(error: unknown): string[] {
  const texts: string[] = [];
  let current: unknown = error;
  for (let depth = 0; depth < 10 && current !== undefined && current !== null; depth++) {
    if (current instanceof InjectedStoreError) break; // the store's own error is passed on unchanged: not the library's words
    if (current instanceof Error) texts.push(current.message, String(current.stack), JSON.stringify(Object.entries(current)));
    else texts.push(String(current));
    current = (current as { cause?: unknown }).cause;
  }
  return texts;
}

describe('faulty stores: random latency and random failures on every call', function () {
  this.timeout(600_000);
  const watch = new LockWatch();
  const rejections = new RejectionWatch();
  let served: Served;
  const http = keepAliveAgent();
  let current: Middleware = (_ctx, next) => next();
  const errors = new Map<string, unknown>();
  const interrupted = new Set<string>();

  before(async () => {
    watch.install();
    rejections.install();
    const app = new Koa();
    app.silent = true;
    app.on('error', (error: unknown, ctx?: Context) => {
      if (ctx?.state?.rid !== undefined) errors.set(ctx.state.rid as string, error);
    });
    app.on('session:interrupted', ({ ctx }: SessionEvent) => interrupted.add(ctx.state.rid as string));
    app.use(requestNamer());
    app.use((ctx, next) => current(ctx, next));
    app.use(handle);
    served = await serve(app);
  });
  after(async () => {
    http.destroy();
    await served.close();
    watch.uninstall();
    rejections.uninstall();
  });

  const send = (rid: string, spec: FaultyRequest, cookieId: string | undefined, extra: Record<string, string> = {}): Promise<Reply> =>
    request(served.port, {
      method: 'POST',
      headers: { 'x-rid': rid, 'x-lock': spec.mode, 'x-spec': JSON.stringify(spec), ...(cookieId === undefined ? {} : { cookie: `session_id=${cookieId}` }), ...extra },
      agent: http,
    });

  async function runOnce(run: FaultyRun, tag: string): Promise<string[]> {
    const problems: string[] = [];
    const random = prng(run.seed);
    const inner = new MemoryStore();
    const faults: Faults = {
      latency: () => Math.floor(random() * (run.maxLatency + 1)),
      fault: () => (random() < run.failureRate ? (random() < 0.5 ? 'before' : 'after') : undefined),
    };
    const store = run.atomic ? LoggedStore.atomic(inner, NO_FAULTS) : new LoggedStore(inner, NO_FAULTS);
    current = session({ store, lockMode: lockModeFromHeader, lockTimeout: 10_000 });
    /** Every change that got a 2xx so far, with the ID of the session that must hold it. */
    let owed: { where: string; key: string; value: string; id: string }[] = [];
    const seedSlot = async (slot: number, label: string): Promise<string> => {
      const rid = `${tag}.${label}`;
      const reply = await send(rid, { kind: slot === 0 ? 'incr' : 'own-key', slot, mode: 'write', waitMs: 0 }, undefined);
      const id = sessionCookie(reply)?.value as string;
      assert.equal(reply.status, 200, 'seeding with a healthy store works');
      if (slot !== 0) owed.push({ where: `${rid} (seed of s${slot})`, key: `k:${rid}`, value: rid, id });
      return id;
    };
    const slots = [await seedSlot(0, 'seed0'), await seedSlot(1, 'seed1'), await seedSlot(2, 'seed2')];
    let counter = 1; // the seed request of slot 0 incremented once

    for (let r = 0; r < run.rounds.length; r++) {
      const round = run.rounds[r];
      store.faults = faults;
      const from = store.log.length;
      const sent = round.map((spec, i) => ({ rid: `${tag}.r${r + 1}.${i}`, spec, cookie: spec.kind === 'create' ? undefined : slots[spec.slot] }));
      const replies = await Promise.all(sent.map((q) => send(q.rid, q.spec, q.cookie)));
      store.faults = NO_FAULTS;
      const log = store.log.slice(from);
      const eventsOf = (rid: string) => log.filter((e) => e.rid === rid);
      const reached = (e: StoreEvent) => e.fault !== 'before';

      // Regenerations that really moved a session: old ID → new ID.
      const moved = new Map<string, string>();
      for (const q of sent) {
        const events = eventsOf(q.rid);
        const removed = events.find((e) => e.op === 'destroy' && reached(e));
        const saved = events.find((e) => e.op === 'set' && e.id !== q.cookie && reached(e));
        if (q.spec.kind === 'regenerate' && removed !== undefined && saved !== undefined && removed.id === q.cookie) moved.set(removed.id, saved.id);
      }
      const follow = (id: string) => {
        let at = id;
        for (let i = 0; i < 20 && moved.has(at); i++) at = moved.get(at) as string;
        return at;
      };
      // Sessions a logout legitimately removed (the destroy reached the store).
      const loggedOut = new Set(sent.filter((q) => q.spec.kind === 'logout').flatMap((q) => eventsOf(q.rid).filter((e) => e.op === 'destroy' && reached(e)).map((e) => e.id)));

      let incrementsStored = 0;
      for (let i = 0; i < sent.length; i++) {
        const q = sent[i];
        const reply = replies[i];
        const events = eventsOf(q.rid);
        const failed = events.some((e) => e.fault !== undefined);
        const error = errors.get(q.rid);
        const where = `${q.rid} ${q.spec.kind}(s${q.spec.slot} ${q.spec.mode})`;
        // A failure is never a success, and only a failure is a failure.
        if (failed) {
          if (reply.status >= 200 && reply.status < 300) problems.push(`${where}: a store call failed, yet it answered ${reply.status}`);
          if (reply.status !== 503) problems.push(`${where}: a store call failed; expected 503, got ${reply.status}`);
          if (!(error instanceof SessionStoreError) || !(error.cause instanceof InjectedStoreError)) problems.push(`${where}: expected a SessionStoreError whose cause is the store's error, got ${String(error)}`);
        } else if (reply.status !== 200) {
          problems.push(`${where}: no store call failed, yet it answered ${reply.status} (${String(error)})`);
        }
        if (error instanceof SessionLockTimeoutError) problems.push(`${where}: lock timeout with a 10 s lockTimeout: a lock was left held`);
        // No error names an ID.
        if (error !== undefined) {
          for (const text of errorTexts(error)) {
            for (const id of store.seenIds) if (text.includes(id)) problems.push(`${where}: an error text names a session ID: ${text.slice(0, 120)}`);
          }
        }
        // Increments: exactly those whose commit reached the store.
        if (q.spec.kind === 'incr' && events.some((e) => (e.op === 'set' || e.op === 'applyChanges') && reached(e))) incrementsStored++;
        // Every 2xx change is owed from now on (an interrupted commit is a 2xx that, by design, saved nothing).
        if (reply.status === 200 && ['own-key', 'create', 'regenerate'].includes(q.spec.kind) && !interrupted.has(q.rid)) {
          const cookie = sessionCookie(reply);
          if (cookie === undefined || cookie.expired || !HEX64.test(cookie.value)) problems.push(`${where}: a 2xx change came with no session cookie`);
          else owed.push({ where, key: `k:${q.rid}`, value: q.rid, id: cookie.value });
        }
      }
      // ... and is in the store, in the session it moved to, unless a logout removed that session.
      owed = owed.map((o) => ({ ...o, id: follow(o.id) })).filter((o) => !loggedOut.has(o.id));
      for (const o of owed) {
        const data = await storedData(inner, o.id);
        if (data?.[o.key] !== o.value) problems.push(`after round ${r + 1}: ${o.where} answered 200, but its change is not in the store (its session holds ${JSON.stringify(data)})`);
      }
      // The counter session: its increments, none lost and none doubled.
      const counterData = await storedData(inner, slots[0]);
      counter += incrementsStored;
      if (counterData?.n !== counter) problems.push(`round ${r + 1}: the counter is ${String(counterData?.n)}, but ${counter} increments reached the store`);
      // Nothing destroyed comes back.
      for (const e of log) {
        if (e.op !== 'destroy' || !reached(e)) continue;
        const later = log.filter((x) => x.seq > e.seq && x.id === e.id && (x.op === 'set' || (x.op === 'applyChanges' && x.applied === true)) && reached(x));
        if (later.length > 0 || (await storedData(inner, e.id)) !== undefined) problems.push(`round ${r + 1}: a session destroyed by ${e.rid} was written again (by ${later.map((x) => x.rid).join(', ')})`);
      }
      // No lock outlives its request; a client sees the session free at once.
      await new Promise((resolve) => setImmediate(resolve));
      if (watch.held() !== 0) problems.push(`round ${r + 1}: ${watch.held()} session lock(s) still held after every response`);
      // Next round: each slot goes on with its session (as moved), or a new one.
      for (let slot = 0; slot < slots.length; slot++) {
        const next = follow(slots[slot]);
        if ((await storedData(inner, next)) !== undefined) slots[slot] = next;
        else if (slot === 0) problems.push('the counter session vanished');
        else slots[slot] = await seedSlot(slot, `reseed${r + 1}.${slot}`);
      }
      for (const id of slots) {
        const probe = await send(`${tag}.probe${r + 1}`, { kind: 'read', slot: 0, mode: 'write', waitMs: 0 }, id, { 'x-lock-timeout': '0' });
        if (probe.status !== 200) problems.push(`round ${r + 1}: a write-mode request with lockTimeout 0 on a live session got ${probe.status}`);
      }
    }
    // The server keeps serving: a new session and its next request.
    const fresh = await send(`${tag}.after`, { kind: 'create', slot: 1, mode: 'write', waitMs: 0 }, undefined);
    const again = await send(`${tag}.after2`, { kind: 'own-key', slot: 1, mode: 'write', waitMs: 0 }, sessionCookie(fresh)?.value);
    if (fresh.status !== 200 || again.status !== 200 || sessionCookie(again)?.value !== sessionCookie(fresh)?.value) problems.push('after the faults the server no longer serves sessions normally');
    inner.close();
    return problems;
  }

  it('failed commits never answer 2xx, 2xx changes are stored, counters are exact, nothing comes back, no lock is left', async () => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(faultyRun, async (run) => {
        const problems = await runOnce(run, `f${++n}`);
        assert.deepEqual(problems, [], `${showRun(run)}\n  - ${problems.join('\n  - ')}`);
      }),
      propertyParams(PROPERTY_RUNS),
    );
  });

  it('no promise rejection went unhandled through all of it', () => {
    assert.deepEqual(rejections.seen, []);
  });

  it('a store that fails every call still gives 503s, never a 2xx or a hang, and serving resumes when it recovers', async () => {
    const inner = new MemoryStore();
    const store = LoggedStore.atomic(inner);
    current = session({ store, lockMode: lockModeFromHeader });
    const ok = await send('dead.seed', { kind: 'own-key', slot: 1, mode: 'write', waitMs: 0 }, undefined);
    const id = sessionCookie(ok)?.value as string;
    store.faults = { latency: () => 0, fault: () => 'before' };
    const kinds: FaultyRequest[] = [
      { kind: 'read', slot: 1, mode: 'read', waitMs: 0 },
      { kind: 'own-key', slot: 1, mode: 'write', waitMs: 0 },
      { kind: 'regenerate', slot: 1, mode: 'read', waitMs: 0 },
      { kind: 'logout', slot: 1, mode: 'write', waitMs: 0 },
    ];
    const replies = await Promise.all(kinds.flatMap((spec, i) => [send(`dead.${i}a`, spec, id), send(`dead.${i}b`, spec, id)]));
    for (const reply of replies) assert.equal(reply.status, 503);
    const created = await send('dead.create', { kind: 'create', slot: 1, mode: 'write', waitMs: 0 }, undefined);
    assert.equal(created.status, 503, 'even a new session fails when it cannot be saved');
    assert.equal(sessionCookie(created), undefined, 'and it gets no cookie for a session that was not saved');
    store.faults = NO_FAULTS;
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(watch.held(), 0);
    const back = await send('dead.back', { kind: 'own-key', slot: 1, mode: 'write', waitMs: 0 }, id);
    assert.equal(back.status, 200);
    assert.equal(sessionCookie(back)?.value, id, 'the session survived the outage');
    inner.close();
  });
});

describe('security: no session ID in errors or debug output', function () {
  this.timeout(120_000);

  it("a lock timeout's error (message, stack, properties) names no ID", async () => {
    const inner = new MemoryStore();
    const errors: unknown[] = [];
    const app = new Koa();
    app.silent = true;
    app.on('error', (error: unknown) => errors.push(error));
    app.use(requestNamer());
    app.use(session({ store: inner, lockTimeout: 30 }));
    // /slow holds its session's lock from `entered` until `release()` (or 5 s, should the late request never give up).
    const slowHolds = gate();
    const released = gate();
    setTimeout(() => released.open(), 5_000).unref();
    app.use(async (ctx) => {
      if (ctx.path === '/slow') {
        slowHolds.open();
        await released.promise;
      }
      ctx.session.set('x', 1);
      ctx.body = 'ok';
    });
    const s = await serve(app);
    try {
      const first = await request(s.port, { method: 'POST' });
      const id = sessionCookie(first)?.value as string;
      const slow = request(s.port, { method: 'POST', path: '/slow', headers: { cookie: `session_id=${id}` } });
      await slowHolds.promise; // /slow has the lock: sent first is not there first on a loaded machine
      const waiting = await request(s.port, { method: 'POST', headers: { cookie: `session_id=${id}` } });
      released.open();
      await slow;
      assert.equal(waiting.status, 503);
      assert.ok(!waiting.body.includes(id), 'the 503 body does not name the ID');
      const timeout = errors.find((e) => e instanceof SessionLockTimeoutError);
      assert.ok(timeout !== undefined, 'the app saw a SessionLockTimeoutError');
      for (const text of errorTexts(timeout)) assert.ok(!text.includes(id), `error text names the ID: ${text}`);
    } finally {
      await s.close();
      inner.close();
    }
  });

  it('with NODE_DEBUG=koa-locked-session, no debug line names an ID, through store failures and lock timeouts', async () => {
    const { spawn } = await import('node:child_process');
    const child = spawn(process.execPath, ['-r', 'ts-node/register', require.resolve('./support/hardening-debug-child.ts')], {
      cwd: require('node:path').resolve(__dirname, '..'),
      env: { ...process.env, NODE_DEBUG: 'koa-locked-session', TS_NODE_TRANSPILE_ONLY: 'true' },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    assert.equal(code, 0, `the child failed:\n${stderr}`);
    const report = JSON.parse(stdout.trim().split('\n').at(-1) as string) as { ids: string[]; statuses: number[] };
    assert.ok(report.ids.length >= 3, 'the child used several sessions');
    assert.ok(report.statuses.includes(503), 'the child met store failures and lock timeouts');
    assert.match(stderr, /KOA-LOCKED-SESSION/, 'debug output was on');
    for (const id of report.ids) assert.ok(!stderr.includes(id), `a debug line names the ID ${id.slice(0, 8)}…`);
  });
});
