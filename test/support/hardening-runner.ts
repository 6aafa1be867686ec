/**
 * Runs a model Program (see model.ts) over real HTTP against the session
 * middleware and judges the outcome: every request's reads, status and
 * cookie, the final store contents, and the lock tables afterwards.
 *
 * One server serves every run; each run gets a fresh MemoryStore behind a
 * LoggedStore and a fresh session middleware (its own lockTimeout).
 */
import Koa from 'koa';
import type { Context, Middleware } from 'koa';
import { session, MemoryStore } from '../../src';
import type { SessionEvent } from '../../src';
import {
  HEX64,
  LockWatch,
  LoggedStore,
  agent as keepAliveAgent,
  lockModeFromHeader,
  prng,
  request,
  requestNamer,
  serve,
  sessionCookie,
} from './hardening-harness';
import type { Served } from './hardening-harness';
import type { Data, Json, Observed, Op, Program, RequestSpec } from './model';
import { dataOfRecord, judge, sameData, showData, showRequest } from './model';

interface HandlerRecord {
  entry: number;
  observations: (Json | undefined)[];
  finalId: string | undefined;
}

export interface RunResult {
  readonly failures: string[];
  /** The model's sessions at the end (ID → data). */
  readonly state: Map<string, Data>;
  /** What the store really holds at the end (ID → data), for every ID it was asked about. */
  readonly stored: Map<string, Data>;
  /** Observed requests, in the order they were sent. */
  readonly requests: Observed[];
  /** A readable account of the run: requests, outcomes, store calls. */
  readonly timeline: string;
  /** Each slot's live ID at the end, if any. */
  readonly slotIds: (string | undefined)[];
  readonly store: LoggedStore;
}

async function perform(op: Op, ctx: Context, record: HandlerRecord): Promise<void> {
  const s = ctx.session;
  switch (op.op) {
    case 'get':
      record.observations.push(s.get<Json>(op.key));
      break;
    case 'incr': {
      const current = s.get<Json>(op.key);
      record.observations.push(current);
      s.set(op.key, typeof current === 'number' ? current + 1 : 1);
      break;
    }
    case 'set':
      s.set(op.key, op.value);
      break;
    case 'delete':
      s.delete(op.key);
      break;
    case 'clear':
      s.clear();
      break;
    case 'regenerate':
      await s.regenerate();
      break;
    case 'destroy':
      await s.destroy();
      break;
    case 'wait':
      if (op.how === 'tick') await Promise.resolve();
      else if (op.how === 'immediate') await new Promise((resolve) => setImmediate(resolve));
      else await new Promise((resolve) => setTimeout(resolve, op.ms));
      break;
  }
}

export class ProgramRig {
  readonly watch = new LockWatch();
  private served: Served | undefined;
  private readonly agent = keepAliveAgent();
  private current: Middleware = (_ctx, next) => next();
  private arrivals: string[] = [];
  private entries = 0;
  private results = new Map<string, HandlerRecord>();
  private interrupted = new Set<string>();
  private errors = new Map<string, { code?: string; status?: number; message?: string }>();

  async start(): Promise<void> {
    this.watch.install();
    const app = new Koa();
    app.silent = true;
    app.on('error', (error: { code?: string; status?: number; message?: string }, ctx: Context | undefined) => {
      const rid = ctx?.state?.rid as string | undefined;
      if (rid !== undefined) this.errors.set(rid, error);
    });
    app.on('session:interrupted', ({ ctx }: SessionEvent) => this.interrupted.add(ctx.state.rid as string));
    app.use((ctx, next) => requestNamer(this.arrivals)(ctx, next));
    app.use((ctx, next) => this.current(ctx, next));
    app.use(async (ctx) => {
      const rid = ctx.state.rid as string;
      const spec = JSON.parse(Buffer.from(ctx.get('x-program'), 'base64url').toString('utf8')) as RequestSpec;
      const record: HandlerRecord = { entry: this.entries++, observations: [], finalId: undefined };
      this.results.set(rid, record);
      for (const op of spec.ops) await perform(op, ctx, record);
      record.finalId = ctx.session.id;
      if (spec.fail) ctx.throw(409, 'the program asked this handler to fail');
      ctx.body = 'ok';
    });
    this.served = await serve(app);
  }

  async stop(): Promise<void> {
    this.agent.destroy();
    await this.served?.close();
    this.watch.uninstall();
  }

  /** Sends one request of a program and returns what was observed of it. */
  private async send(rid: string, spec: RequestSpec, cookieId: string | undefined, extra: Record<string, string> = {}): Promise<Observed> {
    const port = (this.served as Served).port;
    const headers: Record<string, string> = {
      'x-rid': rid,
      'x-lock': spec.mode,
      'x-program': Buffer.from(JSON.stringify(spec), 'utf8').toString('base64url'),
      ...extra,
    };
    const sentId = spec.noCookie ? undefined : cookieId;
    if (sentId !== undefined) headers.cookie = `session_id=${sentId}`;
    const reply = await request(port, { method: 'POST', headers, agent: this.agent });
    const record = this.results.get(rid);
    const cookie = sessionCookie(reply);
    return {
      rid,
      spec,
      sentId,
      status: reply.status,
      entered: record !== undefined,
      observations: record?.observations ?? [],
      finalId: record?.finalId,
      interrupted: this.interrupted.has(rid),
      errorCode: this.errors.get(rid)?.code,
      cookie: cookie === undefined ? { kind: 'none' } : cookie.expired ? { kind: 'expire' } : { kind: 'send', id: cookie.value },
      arrival: this.arrivals.indexOf(rid),
      entry: record?.entry ?? -1,
    };
  }

  /**
   * Runs `program`: seeds its sessions one by one, then each round's
   * requests all at once; before each round every slot gets the newest of
   * its IDs that the model says is stored (or a new seeded session).
   */
  async run(program: Program): Promise<RunResult> {
    const spec = program.spec;
    const random = prng(spec.seed);
    const inner = new MemoryStore();
    const faults = { latency: () => (spec.latency === 0 ? 0 : Math.floor(random() * (spec.latency + 1))), fault: () => undefined };
    const store = spec.atomic ? LoggedStore.atomic(inner, faults) : new LoggedStore(inner, faults);
    // The middleware asks for the lock right after lockMode, and has given it back when it is done:
    // the log shows who was in line when.
    const lockMode = (ctx: Context) => {
      store.note(ctx.state.rid as string, 'queue', ctx.cookies.get('session_id') as string);
      return lockModeFromHeader(ctx);
    };
    const middleware = session({ store, lockMode, lockTimeout: spec.lockTimeout });
    this.current = async (ctx, next) => {
      try {
        await middleware(ctx, next);
      } finally {
        store.note(ctx.state.rid as string, 'done', ctx.cookies.get('session_id') ?? '');
      }
    };
    this.arrivals = [];
    this.entries = 0;
    this.results = new Map();
    this.interrupted = new Set();
    this.errors = new Map();

    const requests: Observed[] = [];
    const slotIds: (string | undefined)[] = [];
    const seed = async (rid: string, data: readonly (readonly [string, Json])[]) => {
      const ops: Op[] = data.map(([key, value]) => ({ op: 'set', key, value }));
      if (ops.length === 0) ops.push({ op: 'set', key: 'a', value: 0 });
      const observed = await this.send(rid, { slot: -1, mode: 'write', ops, fail: false, noCookie: true }, undefined);
      requests.push(observed);
      return observed.finalId;
    };
    for (let i = 0; i < spec.seeds.length; i++) slotIds.push(await seed(`seed.s${i}`, spec.seeds[i]));

    const failures: string[] = [];
    for (let r = 0; r < spec.rounds.length; r++) {
      const round = spec.rounds[r];
      const sent = round.map((req, i) => this.send(`r${r + 1}.${i}`, req, slotIds[req.slot % slotIds.length]));
      const observed = await Promise.all(sent);
      requests.push(...observed);
      // Which ID each slot goes on with: the newest one of its lineage still stored.
      const { state } = judge(requests, store.log, true);
      for (let slot = 0; slot < slotIds.length; slot++) {
        const lineage = [slotIds[slot], ...observed.filter((o) => o.spec.slot % slotIds.length === slot).map((o) => o.finalId)];
        const live = lineage.filter((id): id is string => id !== undefined && state.has(id)).at(-1);
        slotIds[slot] = live ?? (r + 1 < spec.rounds.length ? await seed(`reseed${r + 1}.s${slot}`, []) : undefined);
      }
    }

    const verdict = judge(requests, store.log, spec.lockTimeout < 1000);
    failures.push(...verdict.failures);

    // The store holds exactly what the model holds.
    const ids = new Set<string>([...verdict.state.keys(), ...store.seenIds]);
    const stored = new Map<string, Data>();
    for (const id of ids) {
      const actual = dataOfRecord(await inner.get(id));
      if (actual !== undefined) stored.set(id, actual);
      const expected = verdict.state.get(id);
      if (!sameData(actual, expected)) failures.push(`store: ${label(id, requests, slotIds)} holds ${showData(actual)}, the model holds ${showData(expected)}`);
    }
    if (inner.size !== verdict.state.size) failures.push(`store: ${inner.size} sessions stored, the model has ${verdict.state.size}`);
    for (const id of store.seenIds) if (!HEX64.test(id)) failures.push(`store: was called with a malformed ID ${JSON.stringify(id)}`);

    // No lock outlives its requests: exactly (the tables are empty) and as a client sees it
    // (a write-mode request with lockTimeout 0 is served on every stored session).
    await new Promise((resolve) => setImmediate(resolve));
    if (this.watch.held() !== 0) failures.push(`locks: ${this.watch.held()} session lock(s) still held or awaited after every response`);
    for (const id of verdict.state.keys()) {
      const probe = await this.send(`probe.${label(id, requests, slotIds)}`, { slot: 0, mode: 'write', ops: [], fail: false, noCookie: false }, id, { 'x-lock-timeout': '0' });
      if (probe.status !== 200) failures.push(`locks: a write-mode request with lockTimeout 0 on ${label(id, requests, slotIds)} got ${probe.status} (${probe.errorCode ?? ''})`);
    }
    inner.close();

    return { failures, state: verdict.state, stored, requests, timeline: timeline(requests, store, slotIds), slotIds, store };
  }
}

/** A short name for an ID: the request that created it. */
function label(id: string, requests: readonly Observed[], _slots: readonly (string | undefined)[]): string {
  const creator = requests.find((o) => o.finalId === id && o.sentId !== id);
  return creator === undefined ? `${id.slice(0, 8)}…` : `id(${creator.rid})`;
}

function timeline(requests: readonly Observed[], store: LoggedStore, slots: readonly (string | undefined)[]): string {
  const lines = ['requests (arrival / handler entry / outcome):'];
  for (const o of requests) {
    const sent = o.sentId === undefined ? 'no cookie' : label(o.sentId, requests, slots);
    const outcome = `${o.status}${o.errorCode ? ` ${o.errorCode}` : ''}${o.interrupted ? ' interrupted' : ''}`;
    lines.push(
      `  ${o.rid.padEnd(12)} arrived #${o.arrival} entered ${o.entered ? `#${o.entry}` : 'never'} on ${sent} → ${outcome}; read ${JSON.stringify(o.observations)}; cookie ${o.cookie.kind}; ${showRequest(o.spec)}`,
    );
  }
  lines.push('store calls, in the order they happened:');
  for (const e of store.log) {
    if (e.rid?.startsWith('probe.')) continue;
    const detail = e.op === 'get' ? ` → ${showData(dataOfRecord(e.record))}` : e.op === 'applyChanges' ? ` ${JSON.stringify(e.changes)} → ${String(e.applied)}` : e.op === 'set' ? ` ${showData(dataOfRecord(e.record))}` : '';
    lines.push(`  ${String(e.seq).padStart(3)} ${String(e.rid).padEnd(12)} ${e.op} ${label(e.id, requests, slots)}${detail}`);
  }
  return lines.join('\n');
}
