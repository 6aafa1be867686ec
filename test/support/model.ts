/**
 * The sequential model of koa-locked-session that the property tests check
 * the real middleware against.
 *
 * A program is a few sessions and rounds of concurrent requests; each
 * request runs a list of session operations (get/set/incr/delete/clear/
 * regenerate/destroy, with awaits between them) under a lock mode. The
 * model replays the requests one at a time, in the order their commits
 * actually reached the store (taken from the store's call log), the way
 * SPEC.md describes them:
 *
 * - a write-mode request is atomic: it behaves as if it ran entirely at its
 *   commit, so what it read must be what the model holds at that point;
 * - a read-mode request reads what was stored when it loaded, and its
 *   change log (each set/delete/clear, in order) is replayed on whatever is
 *   stored when it commits;
 * - destroy() removes the stored session at once; a commit never brings a
 *   destroyed or regenerated session back (the request is "interrupted");
 * - when a request removes its session (destroy, or regenerate's removal of
 *   the old ID), every request that asked for the lock before the remover
 *   is done (queued behind it, or a reader sharing the lock with it, even
 *   one that joined after the removal) and loads the session only after
 *   the removal finds it gone as "removed ahead of it": it runs on an empty
 *   session and commits nothing (interrupted, when it had anything to
 *   commit). So does one that finds it gone less than half a second after
 *   the remover was done: a request its client sent before it heard of the
 *   removal.
 *
 * Nothing here imports the library: the model is written from the SPEC.
 */
import { isDeepStrictEqual } from 'node:util';

/** How long after its remover was done a removed session still counts as removed ahead of a request that finds it gone. */
const RECENT_REMOVAL_MS = 500;

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export type Wait = { readonly op: 'wait'; readonly how: 'tick' | 'immediate' | 'sleep'; readonly ms: number };

export type Op =
  | { readonly op: 'get'; readonly key: string }
  | { readonly op: 'set'; readonly key: string; readonly value: Json }
  /** set(key, get(key) + 1), a number starting from 0. */
  | { readonly op: 'incr'; readonly key: string }
  | { readonly op: 'delete'; readonly key: string }
  | { readonly op: 'clear' }
  | { readonly op: 'regenerate' }
  | { readonly op: 'destroy' }
  | Wait;

export type Mode = 'read' | 'write';

export interface RequestSpec {
  /** Which of the program's sessions the request's cookie names. */
  readonly slot: number;
  readonly mode: Mode;
  readonly ops: readonly Op[];
  /** The handler throws a 409 after its operations (its changes still commit). */
  readonly fail: boolean;
  /** Sent without any cookie. */
  readonly noCookie: boolean;
}

export interface ProgramSpec {
  /** Initial data of each session (the number of sessions is its length). */
  readonly seeds: readonly (readonly [string, Json])[][];
  readonly rounds: readonly (readonly RequestSpec[])[];
  /** The middleware's lockTimeout for this run. */
  readonly lockTimeout: number;
  /** Whether the store offers applyChanges (else the middleware does get-merge-set). */
  readonly atomic: boolean;
  /** Most random latency per store call, in ms. */
  readonly latency: number;
  /** Seed of the latency draws. */
  readonly seed: number;
}

// ---------------------------------------------------------------- readable programs

function show(value: unknown): string {
  if (Object.is(value, -0)) return '-0';
  return JSON.stringify(value) ?? String(value);
}

export function showOp(op: Op): string {
  switch (op.op) {
    case 'get':
    case 'incr':
    case 'delete':
      return `${op.op} ${show(op.key)}`;
    case 'set':
      return `set ${show(op.key)}=${show(op.value)}`;
    case 'wait':
      return op.how === 'sleep' ? `sleep ${op.ms}ms` : op.how;
    default:
      return op.op;
  }
}

export function showRequest(spec: RequestSpec): string {
  const target = spec.noCookie ? `(no cookie, slot ${spec.slot})` : `s${spec.slot}`;
  const ops = spec.ops.length === 0 ? '(nothing)' : spec.ops.map(showOp).join('; ');
  return `${target} ${spec.mode}: ${ops}${spec.fail ? '; throw 409' : ''}`;
}

/** A program that prints as a short script (fast-check shows this for a counterexample). */
export class Program {
  constructor(readonly spec: ProgramSpec) {}

  toString(): string {
    const { seeds, rounds, lockTimeout, atomic, latency, seed } = this.spec;
    const lines = [
      `program: ${seeds.length} session(s), lockTimeout ${lockTimeout} ms, ${atomic ? 'atomic' : 'get-merge-set'} store, latency 0-${latency} ms (seed ${seed})`,
    ];
    seeds.forEach((data, i) => lines.push(`  seed s${i}: {${data.map(([k, v]) => `${show(k)}: ${show(v)}`).join(', ')}}`));
    rounds.forEach((round, r) => {
      lines.push(`  round ${r + 1} (all at once):`);
      round.forEach((spec, i) => lines.push(`    r${r + 1}.${i}  ${showRequest(spec)}`));
    });
    return lines.join('\n');
  }
}

// ---------------------------------------------------------------- one request against a snapshot

/** What a model session's data is: a Map, so that `__proto__` is an ordinary key. */
export type Data = Map<string, Json>;

/** As JSON carries it (-0 becomes 0); what a store gives back. */
export function normalize(value: Json): Json {
  return JSON.parse(JSON.stringify(value)) as Json;
}

export type ModelChange = { op: 'set'; key: string; value: Json } | { op: 'delete'; key: string } | { op: 'clear' };

export type Plan = 'none' | 'expire' | 'create' | 'regenerate' | 'update';

export interface Run {
  /** What each get/incr read, in order (undefined for a missing key). */
  readonly observations: (Json | undefined)[];
  /** The change log to commit (since load, or since destroy()). */
  readonly changes: ModelChange[];
  /** destroy() removed the loaded session from the store. */
  readonly destroyedLoaded: boolean;
  /** The final ID is not the one the request started with. */
  readonly idChanged: boolean;
  readonly plan: Plan;
}

/**
 * Runs `ops` on a session that loaded `loaded` (undefined: a new session),
 * as SPEC.md defines each operation.
 */
export function interpret(ops: readonly Op[], loaded: Data | undefined): Run {
  const values: Data = new Map(loaded ?? []);
  const observations: (Json | undefined)[] = [];
  let changes: ModelChange[] = [];
  let destroyed = false;
  let destroyedLoaded = false;
  let regenerated = false;
  let needsNewId = false;
  let idChanged = false;
  const set = (key: string, value: Json) => {
    if (needsNewId) {
      idChanged = true;
      needsNewId = false;
    }
    const copy = normalize(value);
    values.set(key, copy);
    changes.push({ op: 'set', key, value: copy });
  };
  for (const op of ops) {
    switch (op.op) {
      case 'get':
        observations.push(values.get(op.key));
        break;
      case 'incr': {
        const current = values.get(op.key);
        observations.push(current);
        set(op.key, typeof current === 'number' ? current + 1 : 1);
        break;
      }
      case 'set':
        set(op.key, op.value);
        break;
      case 'delete':
        // Deleting what the request cannot see is no change at all.
        if (values.delete(op.key)) changes.push({ op: 'delete', key: op.key });
        break;
      case 'clear':
        if (values.size > 0) {
          values.clear();
          changes.push({ op: 'clear' });
        }
        break;
      case 'regenerate':
        idChanged = true;
        needsNewId = false;
        if (!destroyed) regenerated = true;
        break;
      case 'destroy':
        if (loaded !== undefined && !destroyed) destroyedLoaded = true;
        destroyed = true;
        regenerated = false;
        needsNewId = true;
        values.clear();
        changes = [];
        break;
      case 'wait':
        break;
    }
  }
  const changed = changes.length > 0;
  let plan: Plan;
  if (destroyed) plan = changed ? 'create' : 'expire';
  else if (loaded === undefined) plan = changed ? 'create' : 'none';
  else if (regenerated) plan = 'regenerate';
  else plan = changed ? 'update' : 'none';
  return { observations, changes, destroyedLoaded, idChanged, plan };
}

export function replay(data: Data, changes: readonly ModelChange[]): void {
  for (const change of changes) {
    if (change.op === 'set') data.set(change.key, change.value);
    else if (change.op === 'delete') data.delete(change.key);
    else data.clear();
  }
}

// ---------------------------------------------------------------- a whole run against the store's log

/** One store call as the test's logging store saw it (see hardening-harness), or a request asking for a lock ('queue'). */
export interface LoggedCall {
  readonly seq: number;
  readonly rid: string | undefined;
  readonly op: string;
  readonly id: string;
  /** When it happened (Date.now()). */
  readonly at: number;
  /** get: the record the store returned ({ data, createdAt, touchedAt }). */
  readonly record?: unknown;
}

/** What happened to one request, as the test observed it. */
export interface Observed {
  readonly rid: string;
  readonly spec: RequestSpec;
  /** The cookie ID sent, if any. */
  readonly sentId: string | undefined;
  readonly status: number;
  /** Whether the handler ran, and what it read. */
  readonly entered: boolean;
  readonly observations: (Json | undefined)[];
  /** ctx.session.id when the handler finished. */
  readonly finalId: string | undefined;
  /** Emitted 'session:interrupted'. */
  readonly interrupted: boolean;
  /** The error the request ended with, if any (its code). */
  readonly errorCode: string | undefined;
  /** What the response did with the session cookie. */
  readonly cookie: { kind: 'none' } | { kind: 'expire' } | { kind: 'send'; id: string };
  /** Position in arrival order and in handler-entry order. */
  readonly arrival: number;
  readonly entry: number;
}

export interface Verdict {
  /** The model's sessions after every request, by ID. */
  readonly state: Map<string, Data>;
  /** Every way the run differed from the model, one sentence each. */
  readonly failures: string[];
  /** In model order: which request committed when. */
  readonly order: string[];
}

export function dataOfRecord(record: unknown): Data | undefined {
  if (record === undefined || record === null) return undefined;
  const data = (record as { data?: Record<string, Json> }).data;
  return new Map(Object.entries(data ?? {}));
}

export function showData(data: Data | undefined): string {
  if (data === undefined) return '(none)';
  return `{${[...data].map(([k, v]) => `${show(k)}: ${show(v)}`).join(', ')}}`;
}

function sameData(a: Data | undefined, b: Data | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  if (a.size !== b.size) return false;
  for (const [key, value] of a) if (!b.has(key) || !isDeepStrictEqual(value, b.get(key))) return false;
  return true;
}

export { sameData };

/**
 * Replays the requests in the order of the store log and compares each
 * request's observations, interruption, status and cookie with the model.
 * `lockTimeoutsAllowed`: whether a 503 lock timeout is a legal outcome.
 */
export function judge(requests: readonly Observed[], log: readonly LoggedCall[], lockTimeoutsAllowed: boolean): Verdict {
  const state = new Map<string, Data>();
  const failures: string[] = [];
  const order: string[] = [];
  const byRid = new Map(requests.map((r) => [r.rid, r]));
  const eventsOf = new Map<string, LoggedCall[]>();
  const queuedAt = new Map<string, number>();
  const doneAt = new Map<string, number>();
  /** When each request left the session middleware (Date.now()). */
  const doneTime = new Map<string, number>();
  /** Per session ID, when a request removed it. */
  const removals = new Map<string, Array<{ seq: number; rid: string | undefined }>>();
  for (const event of log) {
    if (event.op === 'destroy' && (event as { fault?: unknown }).fault === undefined) {
      removals.set(event.id, [...(removals.get(event.id) ?? []), { seq: event.seq, rid: event.rid }]);
    }
    if (event.rid === undefined || !byRid.has(event.rid)) continue;
    if (event.op === 'queue' || event.op === 'done') {
      (event.op === 'queue' ? queuedAt : doneAt).set(event.rid, event.seq);
      if (event.op === 'done') doneTime.set(event.rid, event.at);
      continue;
    }
    const list = eventsOf.get(event.rid) ?? [];
    list.push(event);
    eventsOf.set(event.rid, list);
  }

  interface Pending {
    obs: Observed;
    load?: LoggedCall;
    commitAt?: LoggedCall;
    /** Snapshot at load (read mode) or at commit (write mode). */
    run?: Run;
    loaded: boolean;
    /** Its session was removed by another request after it asked for the lock, before its load. */
    removedAhead: boolean;
    done: boolean;
  }
  const pending = new Map<string, Pending>();
  for (const obs of requests) {
    const events = eventsOf.get(obs.rid) ?? [];
    const p: Pending = { obs, loaded: false, removedAhead: false, done: false };
    // The commit happens at the request's first write to the store (destroy() included), or,
    // when it writes nothing (interrupted, or nothing to save), at its last read.
    const isWrite = (e: LoggedCall) => e.op !== 'get';
    if (obs.sentId !== undefined && events[0]?.op === 'get' && events[0].id === obs.sentId) {
      p.load = events[0];
      p.commitAt = events.slice(1).find(isWrite) ?? events.at(-1);
    } else {
      p.commitAt = events.find(isWrite) ?? events.at(-1);
    }
    pending.set(obs.rid, p);
  }

  const fail = (rid: string, what: string) => failures.push(`${rid}: ${what}`);
  const timedOut = (o: Observed) => o.errorCode === 'ESESSIONLOCKTIMEOUT';

  const settle = (p: Pending) => {
    const { obs } = p;
    const run = p.run ?? interpret(obs.spec.ops, undefined);
    p.done = true;
    order.push(obs.rid);
    // What the handler read.
    if (obs.entered && !isDeepStrictEqual(obs.observations, run.observations)) {
      fail(obs.rid, `read ${show(obs.observations)} but the model (${obs.spec.mode} mode, serialised in commit order) reads ${show(run.observations)}`);
    }
    const loadedId = p.loaded ? obs.sentId : undefined;
    if (run.destroyedLoaded && loadedId !== undefined) state.delete(loadedId);
    // A commit that timed out waiting for the exclusive lock stores nothing (destroy() had already removed).
    const commitTimedOut = timedOut(obs);
    let interrupted = false;
    let cookie: Observed['cookie'] = { kind: 'none' };
    if (p.removedAhead) {
      interrupted = run.plan !== 'none' && !commitTimedOut;
    } else if (!commitTimedOut) {
      const finalId = obs.finalId ?? '?';
      switch (run.plan) {
        case 'create':
          state.set(finalId, (() => {
            const d: Data = new Map();
            replay(d, run.changes);
            return d;
          })());
          cookie = { kind: 'send', id: finalId };
          break;
        case 'expire':
          cookie = { kind: 'expire' };
          break;
        case 'update': {
          const current = state.get(loadedId as string);
          if (current === undefined) interrupted = true;
          else {
            replay(current, run.changes);
            cookie = { kind: 'send', id: loadedId as string };
          }
          break;
        }
        case 'regenerate': {
          const current = state.get(loadedId as string);
          if (current === undefined) interrupted = true;
          else {
            const next = new Map(current);
            replay(next, run.changes);
            state.delete(loadedId as string);
            state.set(finalId, next);
            cookie = { kind: 'send', id: finalId };
          }
          break;
        }
        case 'none':
          break;
      }
    }
    // What the client saw.
    if (obs.entered) {
      if (interrupted !== obs.interrupted) {
        fail(obs.rid, interrupted ? 'the model says its commit found the session gone (session:interrupted), the middleware did not say so' : 'the middleware reported session:interrupted, the model says the session was still stored');
      }
      const expectedStatus = commitTimedOut ? 503 : obs.spec.fail ? 409 : 200;
      if (obs.status !== expectedStatus) fail(obs.rid, `status ${obs.status}, expected ${expectedStatus}${obs.errorCode ? ` (error ${obs.errorCode})` : ''}`);
      if (commitTimedOut && !lockTimeoutsAllowed) fail(obs.rid, 'lock timeout although lockTimeout is generous');
      if (!commitTimedOut) {
        if (loadedId !== undefined && run.idChanged !== (obs.finalId !== loadedId)) {
          fail(obs.rid, run.idChanged ? 'the ID should have changed' : 'the ID changed although no regenerate() or set() after destroy()');
        }
        if (loadedId === undefined && obs.sentId !== undefined && obs.finalId === obs.sentId) {
          fail(obs.rid, 'adopted the ID its cookie named although no such session was stored');
        }
        if (!isDeepStrictEqual(cookie, obs.cookie)) fail(obs.rid, `cookie ${show(obs.cookie)}, the model expects ${show(cookie)}`);
      }
    }
  };

  for (const event of log) {
    const p = event.rid === undefined ? undefined : pending.get(event.rid);
    if (p === undefined || p.done) continue;
    if (event === p.load) {
      const stored = state.get(event.id);
      const got = dataOfRecord(event.record);
      if (!sameData(stored, got)) {
        fail(p.obs.rid, `loaded ${showData(got)} from the store, the model holds ${showData(stored)} there`);
      }
      p.loaded = stored !== undefined;
      const queued = queuedAt.get(p.obs.rid);
      // Removed by another request before this load, which asked for the lock before the remover was done,
      // or finds the session gone less than RECENT_REMOVAL_MS after it was.
      p.removedAhead = stored === undefined && queued !== undefined &&
        (removals.get(event.id) ?? []).some((removal) => removal.rid !== p.obs.rid && removal.seq < event.seq &&
          (queued < (doneAt.get(removal.rid as string) ?? Infinity) ||
            event.at - (doneTime.get(removal.rid as string) ?? -Infinity) <= RECENT_REMOVAL_MS));
      // Read mode, or a session that is gone: what it read is fixed now.
      if (p.obs.spec.mode === 'read' || stored === undefined) p.run = interpret(p.obs.spec.ops, stored === undefined ? undefined : new Map(stored));
    }
    if (event === p.commitAt) {
      if (p.obs.spec.mode === 'write' && p.loaded) {
        const current = state.get(p.obs.sentId as string);
        // Exclusive from load to commit: what it read must still be what is stored.
        p.run = interpret(p.obs.spec.ops, current === undefined ? undefined : new Map(current));
        if (current === undefined) fail(p.obs.rid, 'write-mode request: its session vanished between its load and its commit');
      }
      settle(p);
    }
  }

  // Requests that never reached the store.
  for (const p of pending.values()) {
    if (p.done) continue;
    const { obs } = p;
    if (obs.errorCode === 'ESESSIONLOCKTIMEOUT' && !obs.entered) {
      if (!lockTimeoutsAllowed) fail(obs.rid, 'lock timeout although lockTimeout is generous');
      if (obs.status !== 503) fail(obs.rid, `timed out waiting for its lock but answered ${obs.status}, not 503`);
      continue;
    }
    if (obs.sentId !== undefined && obs.entered && !obs.spec.noCookie) {
      fail(obs.rid, 'sent a well-formed cookie but its session was never loaded from the store');
    }
    settle(p);
  }

  // First come, first served: no request overtakes (or is overtaken by) a writer queued on the same session.
  const loadedOn = (o: Observed) => {
    const p = pending.get(o.rid);
    return p?.loaded ? o.sentId : undefined;
  };
  const entered = requests.filter((o) => o.entered && loadedOn(o) !== undefined);
  for (const a of entered) {
    for (const b of entered) {
      if (a === b || loadedOn(a) !== loadedOn(b) || a.arrival >= b.arrival) continue;
      if (a.spec.mode === 'read' && b.spec.mode === 'read') continue;
      if (a.entry > b.entry) {
        fail(b.rid, `entered its handler before ${a.rid}, which queued for the same session's lock first (${a.spec.mode} then ${b.spec.mode})`);
      }
    }
  }
  return { state, failures, order };
}
