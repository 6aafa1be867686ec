/**
 * Model-based property tests: random programs of concurrent requests, over
 * real HTTP, against a sequential model of the SPEC (test/support/model.ts).
 *
 * PROPERTY_RUNS (default 40) sets fast-check's numRuns; PROPERTY_SEED
 * replays a reported seed (timing still varies: these are real sockets).
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { awaitedLockTable } from './support/lock-table';
import { SessionLockTimeoutError } from '../src';
import { PROPERTY_RUNS, propertyParams } from './support/hardening-harness';
import { ProgramRig } from './support/hardening-runner';
import type { RunResult } from './support/hardening-runner';
import { Program, showOp } from './support/model';
import type { Json, Mode, Op, ProgramSpec, RequestSpec, Wait } from './support/model';

const RUNS = PROPERTY_RUNS;

function params<T>(runs = RUNS): fc.Parameters<T> {
  return { ...propertyParams<T>(runs), endOnFailure: false, interruptAfterTimeLimit: 240_000, markInterruptAsFailure: false };
}

// ---------------------------------------------------------------- arbitraries

/** Few keys, so requests collide on them; '__proto__' and '' are ordinary keys. */
const key = fc.constantFrom('a', 'b', 'n', '__proto__', '');

const value: fc.Arbitrary<Json> = fc.oneof(
  fc.integer({ min: -3, max: 3 }),
  fc.constantFrom<Json>('x', 'ü🙂', null, true, -0),
  fc.record({ x: fc.integer({ min: 0, max: 2 }) }),
  fc.array(fc.boolean(), { maxLength: 2 }),
);

const wait: fc.Arbitrary<Wait> = fc.oneof(
  fc.constant<Wait>({ op: 'wait', how: 'tick', ms: 0 }),
  fc.constant<Wait>({ op: 'wait', how: 'immediate', ms: 0 }),
  fc.integer({ min: 0, max: 4 }).map((ms): Wait => ({ op: 'wait', how: 'sleep', ms })),
);

const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: key.map((k): Op => ({ op: 'get', key: k })) },
  { weight: 4, arbitrary: fc.tuple(key, value).map(([k, v]): Op => ({ op: 'set', key: k, value: v })) },
  { weight: 3, arbitrary: key.map((k): Op => ({ op: 'incr', key: k })) },
  { weight: 2, arbitrary: key.map((k): Op => ({ op: 'delete', key: k })) },
  { weight: 1, arbitrary: fc.constant<Op>({ op: 'clear' }) },
  { weight: 1, arbitrary: fc.constant<Op>({ op: 'regenerate' }) },
  { weight: 1, arbitrary: fc.constant<Op>({ op: 'destroy' }) },
  { weight: 4, arbitrary: wait },
);

const mode = fc.constantFrom<Mode>('read', 'write');

const requestSpec = (ops: fc.Arbitrary<Op[]>): fc.Arbitrary<RequestSpec> =>
  fc.record({
    slot: fc.nat({ max: 2 }),
    mode,
    ops,
    fail: fc.nat({ max: 11 }).map((n) => n === 11),
    noCookie: fc.nat({ max: 15 }).map((n) => n === 15),
  });

const seeds = fc.array(fc.array(fc.tuple(key, value), { maxLength: 3 }), { minLength: 1, maxLength: 3 });

const program: fc.Arbitrary<Program> = fc
  .record({
    seeds,
    rounds: fc.array(fc.array(requestSpec(fc.array(op, { maxLength: 7 })), { minLength: 1, maxLength: 8 }), { minLength: 1, maxLength: 3 }),
    // Mostly generous; sometimes tight enough that requests time out on purpose.
    lockTimeout: fc.oneof({ weight: 4, arbitrary: fc.constant(30_000) }, { weight: 1, arbitrary: fc.constantFrom(1, 5, 20) }),
    atomic: fc.boolean(),
    latency: fc.constantFrom(0, 0, 2, 5),
    seed: fc.nat(),
  })
  .map((spec: ProgramSpec) => new Program(spec));

function report(result: RunResult, context: fc.ContextValue): string {
  context.log(`${result.failures.length} difference(s) from the model; first: ${result.failures[0] ?? '-'}`);
  return `${result.failures.length} difference(s) from the model:\n  - ${result.failures.slice(0, 12).join('\n  - ')}\n${result.timeline}`;
}

// ---------------------------------------------------------------- the properties

describe('properties: concurrent requests behave like the sequential model', function () {
  this.timeout(600_000);
  const rig = new ProgramRig();
  before(() => rig.start());
  after(() => rig.stop());

  it('write-mode read-modify-write never loses an increment, whatever the awaits and concurrent readers', async () => {
    const incrementer = fc.tuple(fc.array(wait, { maxLength: 2 }), fc.array(wait, { maxLength: 2 })).map(
      ([before, after]): RequestSpec => ({ slot: 0, mode: 'write', ops: [...before, { op: 'incr', key: 'n' }, ...after], fail: false, noCookie: false }),
    );
    const reader = fc.array(fc.oneof(wait, fc.constant<Op>({ op: 'get', key: 'n' })), { maxLength: 3 }).map(
      (ops): RequestSpec => ({ slot: 0, mode: 'read', ops, fail: false, noCookie: false }),
    );
    const arb = fc
      .record({
        writers: fc.array(incrementer, { minLength: 2, maxLength: 20 }),
        readers: fc.array(reader, { maxLength: 5 }),
        order: fc.nat(),
        atomic: fc.boolean(),
        latency: fc.constantFrom(0, 3),
        seed: fc.nat(),
      })
      .map(({ writers, readers, order, atomic, latency, seed }) => {
        const round = [...writers];
        readers.forEach((r, i) => round.splice((order + i * 7) % (round.length + 1), 0, r));
        return new Program({ seeds: [[['n', 0]]], rounds: [round], lockTimeout: 30_000, atomic, latency, seed });
      });
    await fc.assert(
      fc.asyncProperty(arb, fc.context(), async (prog, context) => {
        const result = await rig.run(prog);
        const writers = prog.spec.rounds[0].filter((r) => r.mode === 'write').length;
        const n = result.slotIds[0] === undefined ? undefined : result.stored.get(result.slotIds[0])?.get('n');
        assert.equal(n, writers, `n ended at ${String(n)} after ${writers} increments\n${report(result, context)}`);
        const seen = result.requests.filter((r) => r.spec.mode === 'write' && /^r\d/.test(r.rid)).map((r) => r.observations[0]);
        assert.deepEqual([...seen].sort((a, b) => Number(a) - Number(b)), [...Array(writers).keys()], 'each increment read a different value');
        assert.deepEqual(result.failures, [], report(result, context));
      }),
      params(),
    );
  });

  it('read-mode writes to different keys are never lost, next to write-mode writers', async () => {
    const arb = fc
      .record({
        readers: fc.array(fc.tuple(fc.array(wait, { maxLength: 3 }), fc.array(wait, { maxLength: 2 })), { minLength: 2, maxLength: 16 }),
        writers: fc.array(fc.array(wait, { maxLength: 2 }), { maxLength: 4 }),
        atomic: fc.boolean(),
        latency: fc.constantFrom(0, 3),
        seed: fc.nat(),
      })
      .map(({ readers, writers, atomic, latency, seed }) => {
        const round: RequestSpec[] = readers.map(([before, after], i) => ({
          slot: 0, mode: 'read', ops: [...before, { op: 'set', key: `k${i}`, value: i }, ...after], fail: false, noCookie: false,
        }));
        writers.forEach((waits, i) => round.splice((i * 5) % (round.length + 1), 0, {
          slot: 0, mode: 'write', ops: [...waits, { op: 'incr', key: 'w' }], fail: false, noCookie: false,
        }));
        return new Program({ seeds: [[['seed', true]]], rounds: [round], lockTimeout: 30_000, atomic, latency, seed });
      });
    await fc.assert(
      fc.asyncProperty(arb, fc.context(), async (prog, context) => {
        const result = await rig.run(prog);
        const id = result.slotIds[0];
        assert.ok(id !== undefined, `the session is gone\n${report(result, context)}`);
        const data = result.stored.get(id);
        const readers = prog.spec.rounds[0].filter((r) => r.mode === 'read').length;
        const writers = prog.spec.rounds[0].length - readers;
        for (let i = 0; i < readers; i++) assert.equal(data?.get(`k${i}`), i, `key k${i} was lost\n${report(result, context)}`);
        assert.equal(data?.get('w') ?? 0, writers, `write-mode increments were lost\n${report(result, context)}`);
        assert.equal(data?.get('seed'), true);
        assert.deepEqual(result.failures, [], report(result, context));
      }),
      params(),
    );
  });

  it('any mix of get/set/incr/delete/clear/regenerate/destroy in either mode ends where the model ends', async () => {
    const seen = { runs: 0, requests: 0, interrupted: 0, lockTimeouts: 0, thrown: 0, newIds: 0, expired: 0, readMode: 0 };
    await fc.assert(
      fc.asyncProperty(program, fc.context(), async (prog, context) => {
        const result = await rig.run(prog);
        seen.runs++;
        for (const r of result.requests) {
          seen.requests++;
          if (r.interrupted) seen.interrupted++;
          if (r.errorCode === 'ESESSIONLOCKTIMEOUT') seen.lockTimeouts++;
          if (r.status === 409) seen.thrown++;
          if (r.cookie.kind === 'send' && r.sentId !== undefined && r.cookie.id !== r.sentId) seen.newIds++;
          if (r.cookie.kind === 'expire') seen.expired++;
          if (r.spec.mode === 'read') seen.readMode++;
        }
        assert.deepEqual(result.failures, [], report(result, context));
      }),
      params(),
    );
    // What the runs covered (PROPERTY_STATS=1 prints it).
    if (process.env.PROPERTY_STATS) console.log('      coverage:', JSON.stringify(seen));
  });

  it('the op printer names every operation (readable counterexamples)', () => {
    assert.equal(showOp({ op: 'set', key: '__proto__', value: -0 }), 'set "__proto__"=-0');
    assert.match(String(new Program({ seeds: [[]], rounds: [[{ slot: 0, mode: 'read', ops: [{ op: 'incr', key: 'n' }], fail: true, noCookie: false }]], lockTimeout: 5, atomic: true, latency: 0, seed: 1 })), /r1\.0 {2}s0 read: incr "n"; throw 409/);
  });
});

// ---------------------------------------------------------------- the lock table on its own

/** `upgradeHoldMs`, for a reader: after holding its shared lock, it makes it exclusive (a read-mode commit) and holds that as long. */
type Actor = { id: 'x' | 'y'; mode: Mode; startMs: number; holdMs: number; timeoutMs: number; releaseTwice: boolean; upgradeHoldMs: number | undefined };

function showActor(a: Actor, i: number): string {
  const upgrade = a.mode === 'read' && a.upgradeHoldMs !== undefined ? ` then upgrade, hold ${a.upgradeHoldMs}ms` : '';
  return `#${i} ${a.mode} ${a.id} at ${a.startMs}ms hold ${a.holdMs}ms${upgrade} timeout ${a.timeoutMs === Infinity ? '∞' : `${a.timeoutMs}ms`}${a.releaseTwice ? ' (releases twice)' : ''}`;
}

describe('properties: LockTable, driven directly', function () {
  this.timeout(600_000);

  it('grants are exclusive for writers, shared for readers, first come first served, upgrades go ahead of the line, time out cleanly and leave the table empty', async () => {
    const actor: fc.Arbitrary<Actor> = fc.record({
      id: fc.constantFrom<'x' | 'y'>('x', 'x', 'y'),
      mode,
      startMs: fc.integer({ min: 0, max: 6 }),
      holdMs: fc.integer({ min: 0, max: 6 }),
      timeoutMs: fc.oneof(fc.constant(Infinity), fc.integer({ min: 0, max: 8 })),
      releaseTwice: fc.boolean(),
      upgradeHoldMs: fc.option(fc.integer({ min: 0, max: 4 }), { nil: undefined }),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(actor, { minLength: 1, maxLength: 14 }), fc.context(), async (actors, context) => {
        context.log(actors.map(showActor).join('\n'));
        const table = awaitedLockTable();
        const holders = new Map<string, { readers: number; writer: boolean }>();
        const problems: string[] = [];
        const queued: { i: number; id: string; mode: Mode }[] = [];
        const granted: number[] = [];
        const timedOut = new Set<number>();
        // Every queueing, grant and upgrade in the order it happened, to check that upgrades go ahead of the line.
        const events: string[] = [];
        await Promise.all(
          actors.map(async (a, i) => {
            await new Promise((resolve) => setTimeout(resolve, a.startMs));
            queued.push({ i, id: a.id, mode: a.mode });
            events.push(`queue ${i}`);
            let release: () => void;
            try {
              release = await table.acquire(a.id, a.mode, a.timeoutMs);
            } catch (error) {
              if (!(error instanceof SessionLockTimeoutError)) problems.push(`#${i} rejected with ${String(error)}`);
              timedOut.add(i);
              return;
            }
            granted.push(i);
            events.push(`grant ${i}`);
            const h = holders.get(a.id) ?? { readers: 0, writer: false };
            holders.set(a.id, h);
            if (h.writer) problems.push(`#${i} (${a.mode}) was granted ${a.id} while a writer held it`);
            if (a.mode === 'write' && h.readers > 0) problems.push(`#${i} (write) was granted ${a.id} while ${h.readers} reader(s) held it`);
            if (a.mode === 'write') h.writer = true;
            else h.readers++;
            await new Promise((resolve) => setTimeout(resolve, a.holdMs));
            if (a.mode === 'write') h.writer = false;
            else h.readers--;
            if (a.mode === 'read' && a.upgradeHoldMs !== undefined) {
              // A read-mode commit: the shared hold is given up for the exclusive one.
              events.push(`upgrade ${i}`);
              try {
                release = await table.upgrade(a.id, a.timeoutMs);
              } catch (error) {
                if (!(error instanceof SessionLockTimeoutError)) problems.push(`#${i}'s upgrade rejected with ${String(error)}`);
                return;
              }
              events.push(`upgraded ${i}`);
              if (h.writer || h.readers > 0) problems.push(`#${i}'s upgrade was granted ${a.id} while ${h.writer ? 'a writer' : `${h.readers} reader(s)`} held it`);
              h.writer = true;
              await new Promise((resolve) => setTimeout(resolve, a.upgradeHoldMs));
              h.writer = false;
            }
            release();
            if (a.releaseTwice) release(); // a second release must not free someone else's hold
          }),
        );
        // Timed-out waiters still take their turn in the queue and hand it back: let that happen.
        for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
        if (table.size !== 0) problems.push(`the table still has ${table.size} entr(y/ies) after every holder left`);
        // FIFO among those granted: nobody overtakes a writer queued before it on the same lock.
        const queuedAt = new Map(queued.map((q, position) => [q.i, position]));
        const grantedAt = new Map(granted.map((i, position) => [i, position]));
        for (const a of queued) {
          for (const b of queued) {
            if (a.id !== b.id || (queuedAt.get(a.i) as number) >= (queuedAt.get(b.i) as number)) continue;
            if (a.mode === 'read' && b.mode === 'read') continue;
            if (!grantedAt.has(a.i) || !grantedAt.has(b.i)) continue;
            if ((grantedAt.get(a.i) as number) > (grantedAt.get(b.i) as number)) problems.push(`#${b.i} (${b.mode}) was granted ${b.id} before #${a.i} (${a.mode}), which queued first`);
          }
        }
        // An upgrade goes ahead of the writers that queued while its shared hold lasted, and of the readers that queued
        // while it waited: all of them came after the request that upgrades.
        const at = (event: string): number => events.indexOf(event);
        actors.forEach((u, i) => {
          if (at(`upgraded ${i}`) < 0) return;
          actors.forEach((b, j) => {
            if (j === i || b.id !== u.id || at(`grant ${j}`) < 0) return;
            const after = b.mode === 'write' ? at(`grant ${i}`) : at(`upgrade ${i}`);
            if (at(`queue ${j}`) > after && at(`grant ${j}`) < at(`upgraded ${i}`)) {
              problems.push(`#${j} (${b.mode}) queued after #${i} ${b.mode === 'write' ? 'held its shared lock' : 'began to upgrade'}, and was granted before the upgrade`);
            }
          });
        });
        // Every waiter with no time limit got the lock.
        actors.forEach((a, i) => {
          if (a.timeoutMs === Infinity && !grantedAt.has(i)) problems.push(`#${i} waits for ever and was never granted`);
          if (a.timeoutMs === Infinity && a.mode === 'read' && a.upgradeHoldMs !== undefined && at(`upgraded ${i}`) < 0) problems.push(`#${i} upgrades without a time limit and never got the exclusive lock`);
        });
        // After all that, both locks can be had at once.
        for (const id of ['x', 'y']) {
          const release = await table.acquire(id, 'write', 0).catch(() => undefined);
          if (release === undefined) problems.push(`a write lock on ${id} with timeout 0 was refused afterwards`);
          release?.();
        }
        if (table.size !== 0) problems.push('the table is not empty after the final probe');
        assert.deepEqual(problems, [], `${problems.join('\n')}\nactors:\n${actors.map(showActor).join('\n')}`);
      }),
      params(Math.max(RUNS * 3, 60)),
    );
  });
});
