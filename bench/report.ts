/** Turns the raw windows into medians, ratios, tables and PASS/MISS lines. */
import type { ContenderSpec } from './contenders-meta';
import type { LostUpdates } from './correctness';
import type { WindowResult, WorkloadId } from './load';
import { WORKLOADS } from './load';

/** The sweep target (≤ 5 ms) is set for this many expired sessions; quick runs sweep fewer. */
export const SWEEP_TARGET_SESSIONS = 1_000_000;

export interface MemoryResult {
  name: string;
  count: number;
  bytesPerSession: number;
  insertUsPerSession: number;
}

export interface SweepResult {
  count: number;
  /** monitorEventLoopDelay's max, smallest over the repeats. */
  maxBlockMs: number;
  p99Ms: number;
  meanMs: number;
  /** Wall time of the sweep's longest step between two yields, smallest over the repeats. */
  longestStepMs: number;
  medianStepMs: number;
  steps: number;
  sweepMs: number;
  left: number;
  /** Each sweep's figures, and the longest block of an idle event loop in the same process right after it, for as long. */
  repeats: { maxBlockMs: number; longestStepMs: number; sweepMs: number; idleMaxBlockMs?: number }[];
}

/** The idle loop's blocks beside the sweep's, when measured: what this machine shows with no work at all. */
function idleNote(sweep: SweepResult): string {
  const idle = sweep.repeats.map((r) => r.idleMaxBlockMs);
  if (idle.some((ms) => ms === undefined)) return '';
  return ` For reference, an idle event loop in the same process, for as long right after each sweep: longest block ${idle.map((ms) => fixed(ms as number, 1)).join(', ')} ms.`;
}

export interface RunResult {
  mode: 'quick' | 'full';
  date: string;
  machine: { cpus: number; cpuModel: string; node: string; loadBefore: number[]; loadAfter: number[]; versions: Record<string, string> };
  settings: { rounds: number; duration: number; warmup: number; warmupRequests?: number; connections: number; library: string; variant?: string };
  contenders: ContenderSpec[];
  skipped: { name: string; reason: string }[];
  workloads: WorkloadId[];
  windows: { round: number; workload: WorkloadId; contender: string; result: WindowResult }[];
  correctness: Record<string, LostUpdates | { error: string }>;
  memory: (MemoryResult | { name: string; count: number; error: string })[];
  sweep?: SweepResult | { error: string };
  profiles: string[];
  /** In-process CPU µs per request: micro[unsigned|signed][workload][app]. */
  micro: Record<string, Record<string, Record<string, number>>>;
  elapsedS: number;
}

export function median(values: readonly number[]): number {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

export interface Cell {
  rps: number;
  p50: number;
  p99: number;
  cpuUs: number;
  bad: number;
  windows: number;
}

export class Results {
  constructor(readonly run: RunResult) {}

  private windowsOf(contender: string, workload: WorkloadId) {
    return this.run.windows.filter((w) => w.contender === contender && w.workload === workload);
  }

  cell(contender: string, workload: WorkloadId): Cell | undefined {
    const windows = this.windowsOf(contender, workload).map((w) => w.result);
    if (windows.length === 0) return undefined;
    return {
      rps: median(windows.map((w) => w.rps)),
      p50: median(windows.map((w) => w.p50)),
      p99: median(windows.map((w) => w.p99)),
      cpuUs: median(windows.map((w) => w.cpuUs)),
      bad: windows.reduce((sum, w) => sum + w.bad, 0),
      windows: windows.length,
    };
  }

  /**
   * `contender` relative to `base`, as the median over rounds of the ratio
   * within each round (both measured minutes apart at most), so a slow
   * drift of the machine's load cancels out. For CPU the ratio is
   * base / contender: above 1 means cheaper, like throughput.
   */
  ratio(contender: string, base: string, workload: WorkloadId, metric: 'rps' | 'cpu'): number {
    return median(this.roundRatios(contender, base, workload, metric));
  }

  /** The ratio of each round in which both were measured (throughput mine ÷ theirs, CPU theirs ÷ mine). */
  roundRatios(contender: string, base: string, workload: WorkloadId, metric: 'rps' | 'cpu'): number[] {
    const mine = this.windowsOf(contender, workload);
    const theirs = new Map(this.windowsOf(base, workload).map((w) => [w.round, w.result]));
    const ratios: number[] = [];
    for (const { round, result } of mine) {
      const other = theirs.get(round);
      if (other === undefined) continue;
      ratios.push(metric === 'rps' ? result.rps / other.rps : other.cpuUs / result.cpuUs);
    }
    return ratios;
  }

  has(contender: string): boolean {
    return this.run.contenders.some((c) => c.name === contender);
  }
}

const int = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '—');
const fixed = (n: number, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : '—');
const times = (n: number) => (Number.isFinite(n) ? `${n.toFixed(2)}×` : '—');

function table(header: string[], rows: string[][], align: ('l' | 'r')[]): string {
  const lines = [`| ${header.join(' | ')} |`, `|${align.map((a) => (a === 'l' ? ' :-- ' : ' --: ')).join('|')}|`];
  for (const row of rows) lines.push(`| ${row.join(' | ')} |`);
  return lines.join('\n');
}

/** One table per workload: everything measured. */
export function workloadTables(results: Results): string {
  const { run } = results;
  const out: string[] = [];
  for (const workload of run.workloads) {
    out.push(`#### ${workload} — ${WORKLOADS[workload].title}`, '');
    const rows: string[][] = [];
    for (const c of run.contenders) {
      const cell = results.cell(c.name, workload);
      if (cell === undefined) continue;
      const base = c.base;
      const isBase = !c.session && c.calibration !== true;
      rows.push([
        `${c.label}${cell.bad > 0 ? ` ⚠ ${cell.bad} bad answers` : ''}`,
        int(cell.rps),
        isBase ? '1.00×' : times(results.ratio(c.name, base, workload, 'rps')),
        fixed(cell.p50),
        fixed(cell.p99),
        fixed(cell.cpuUs),
        isBase ? '1.00×' : times(results.ratio(c.name, base, workload, 'cpu')),
      ]);
    }
    out.push(
      table(['contender', 'req/s', '× bare', 'p50 ms', 'p99 ms', 'server CPU µs/req', '× bare (CPU)'], rows, ['l', 'r', 'r', 'r', 'r', 'r', 'r']),
      '',
    );
  }
  out.push('`× bare` compares with bare Koa, or bare Express for express-session; for CPU it is bare ÷ contender, so above 1 is cheaper and both columns read alike.', '');
  return out.join('\n');
}

function lostCell(run: RunResult, name: string): string {
  const result = run.correctness[name];
  if (result === undefined) return '—';
  if ('error' in result) return `error: ${result.error.slice(0, 60)}`;
  return `${result.lost} of ${result.sent}${result.failed > 0 ? ` (${result.failed} failed)` : ''}`;
}

function memoryCell(run: RunResult, name: string, count: number): string {
  const result = run.memory.find((m) => m.name === name && m.count === count);
  if (result === undefined) return '—';
  if ('error' in result) return 'error';
  return `${int(result.bytesPerSession)} B`;
}

/**
 * The headline: per workload the throughput relative to the bare framework
 * (the median of per-round ratios, the steadiest throughput figure here) and
 * the server's CPU time per request; lost updates; memory. Absolute
 * requests/s follow in a second table.
 */
export function headlineTable(results: Results): string {
  const { run } = results;
  const counts = [...new Set(run.memory.map((m) => m.count))].sort((a, b) => a - b);
  const names: Record<WorkloadId, string> = { W1: 'W1 read', W2: 'W2 write', W3: 'W3 new', W4: 'W4 mixed', W2x: 'W2x write, own session' };
  const header = ['', ...run.workloads.map((w) => names[w]), 'lost updates', ...counts.map((n) => `bytes/session @${n >= 1e6 ? `${n / 1e6}M` : `${n / 1e3}k`}`)];
  const rows: string[][] = [];
  for (const c of run.contenders) {
    const cells = run.workloads.map((w) => {
      const cell = results.cell(c.name, w);
      if (cell === undefined) return '—';
      const ratio = c.session || c.calibration === true ? results.ratio(c.name, c.base, w, 'rps') : 1;
      return `${times(ratio)} · ${fixed(cell.cpuUs, 0)} µs`;
    });
    const memory = counts.map((n) => (c.redis || !c.session ? '—' : memoryCell(run, c.name, n)));
    rows.push([c.label, ...cells, c.session ? lostCell(run, c.name) : '—', ...memory]);
  }
  const rpsRows: string[][] = run.contenders.map((c) => [
    c.label,
    ...run.workloads.map((w) => {
      const cell = results.cell(c.name, w);
      return cell === undefined ? '—' : int(cell.rps);
    }),
  ]);
  return [
    'Throughput × the bare framework (bare Koa; bare Express for express-session) · server CPU time per request; lost updates of 200 concurrent read-modify-writes; heap per stored session:',
    '',
    table(header, rows, ['l', ...header.slice(1).map(() => 'r' as const)]),
    '',
    'Requests/s, median of the rounds (absolute figures swing with the machine\'s other load; the ratios above are taken within each round):',
    '',
    table(['', ...run.workloads.map((w) => names[w])], rpsRows, ['l', ...run.workloads.map(() => 'r' as const)]),
    '',
  ].join('\n');
}

export function memoryTable(run: RunResult): string {
  if (run.memory.length === 0 && run.sweep === undefined) return '';
  const out: string[] = [];
  if (run.memory.length > 0) {
    const label = (name: string) => run.contenders.find((c) => c.name === name)?.label ?? name;
    const rows = run.memory.map((m) => [label(m.name), int(m.count), 'error' in m ? `error: ${m.error.slice(0, 80)}` : `${int(m.bytesPerSession)}`]);
    out.push(table(['store', 'sessions', 'heap bytes / session'], rows, ['l', 'r', 'r']), '');
  }
  const sweep = run.sweep;
  if (sweep !== undefined) {
    if ('error' in sweep) out.push(`MemoryStore sweep: error: ${sweep.error}`, '');
    else {
      out.push(
        `MemoryStore sweep of ${int(sweep.count)} expired sessions: longest event-loop block ${fixed(sweep.maxBlockMs, 1)} ms ` +
          `(monitorEventLoopDelay max, 1 ms resolution, best of ${sweep.repeats.length} sweep${sweep.repeats.length > 1 ? 's' : ''}: ` +
          `${sweep.repeats.map((r) => fixed(r.maxBlockMs, 1)).join(', ')} ms; p99 ${fixed(sweep.p99Ms, 1)} ms, mean ${fixed(sweep.meanMs, 2)} ms); ` +
          `the sweep's own steps (${int(sweep.steps)}, wall time between two yields): longest ${fixed(sweep.longestStepMs, 2)} ms ` +
          `(${sweep.repeats.map((r) => fixed(r.longestStepMs, 2)).join(', ')}), median ${fixed(sweep.medianStepMs, 3)} ms; ` +
          `whole sweep ${int(sweep.sweepMs)} ms; ${int(sweep.left)} left after it.` +
          idleNote(sweep),
        '',
      );
    }
  }
  return out.join('\n');
}

export function correctnessTable(run: RunResult): string {
  const rows = run.contenders
    .filter((c) => c.session)
    .map((c) => {
      const result = run.correctness[c.name];
      const ms = result !== undefined && !('error' in result) ? int(result.ms) : '—';
      return [c.label, lostCell(run, c.name), ms];
    });
  if (rows.length === 0) return '';
  return table(['contender', 'lost updates (200 concurrent read-modify-write, 5 ms await)', 'took ms'], rows, ['l', 'r', 'r']) + '\n';
}

export interface Target {
  text: string;
  status: 'PASS' | 'MISS' | 'SKIP';
}

/** The targets of the benchmark issue, judged on this run. */
export function targets(results: Results): Target[] {
  const out: Target[] = [];
  const { run } = results;
  /**
   * A ratio's target: the median of the rounds' ratios, with their range beside it (one run's noise,
   * plain to see), and for a throughput ratio against a peer the CPU ratio as well.
   */
  const judge = (text: string, mine: string, theirs: string, w: WorkloadId, metric: 'rps' | 'cpu', min: number, withCpu = false) => {
    const rounds = results.roundRatios(mine, theirs, w, metric);
    const value = median(rounds);
    if (!Number.isFinite(value)) {
      out.push({ text: `${text}: not measured`, status: 'SKIP' });
      return;
    }
    const spread = rounds.length > 1 ? `; rounds ${fixed(Math.min(...rounds), 2)}–${fixed(Math.max(...rounds), 2)}` : '';
    const cpu = withCpu ? ` [CPU/request: ${times(results.ratio(mine, theirs, w, 'cpu'))}]` : '';
    // A miss that two decimals would round up to the target shows a third one, so the line does not read "1.20× (target ≥ 1.20×)".
    const shown = value < min && value.toFixed(2) === min.toFixed(2) ? `${value.toFixed(3)}×` : times(value);
    // Answers other than 2xx are left out of throughput; a side that gave any is not measured as the workload says.
    const bad = (results.cell(mine, w)?.bad ?? 0) + (results.cell(theirs, w)?.bad ?? 0);
    const failures = bad > 0 ? ` — ${int(bad)} answers were not 2xx, so the ratio does not count` : '';
    out.push({ text: `${text}: ${shown} (target ≥ ${times(min)}${spread})${cpu}${failures}`, status: value >= min && bad === 0 ? 'PASS' : 'MISS' });
  };
  const inRun = (w: WorkloadId) => run.workloads.includes(w);

  for (const [w, min] of [['W1', 0.8], ['W2', 0.7], ['W3', 0.6]] as const) {
    if (!inRun(w)) continue;
    judge(`${w} throughput, ours ÷ bare Koa`, 'ours', 'koa', w, 'rps', min);
    judge(`${w} CPU/request, bare Koa ÷ ours`, 'ours', 'koa', w, 'cpu', min);
  }
  for (const [w, min] of [['W1', 2], ['W2', 2], ['W3', 1.2]] as const) {
    if (inRun(w)) judge(`${w} throughput, ours signed ÷ koa-session (Map store, signed)`, 'ours-signed', 'koa-session-store', w, 'rps', min, true);
  }
  for (const w of ['W1', 'W2', 'W3'] as const) {
    if (inRun(w)) judge(`${w} throughput, ours signed ÷ ours unsigned`, 'ours-signed', 'ours', w, 'rps', 0.85, true);
  }
  for (const w of ['W1', 'W2', 'W3'] as const) {
    if (inRun(w)) judge(`${w} throughput, ours + RedisStore ÷ koa-session + koa-redis`, 'ours-redis', 'koa-session-redis', w, 'rps', 1.5, true);
  }
  for (const name of ['ours', 'ours-signed', 'ours-signed-hash', 'ours-redis']) {
    const result = run.correctness[name];
    if (result === undefined) continue;
    if ('error' in result) out.push({ text: `lost updates, ${name}: error ${result.error}`, status: 'MISS' });
    else out.push({ text: `lost updates, ${name}: ${result.lost} of ${result.sent}, ${result.failed} failed (target 0)`, status: result.lost === 0 && result.failed === 0 ? 'PASS' : 'MISS' });
  }
  const sweep = run.sweep;
  if (sweep === undefined) out.push({ text: 'MemoryStore sweep block: not measured', status: 'SKIP' });
  else if ('error' in sweep) out.push({ text: `MemoryStore sweep block: error ${sweep.error}`, status: 'MISS' });
  else if (sweep.count < SWEEP_TARGET_SESSIONS) {
    out.push({
      text: `MemoryStore sweep of ${int(sweep.count)} expired sessions, longest event-loop block: ${fixed(sweep.maxBlockMs, 1)} ms (the target, ≤ 5 ms, is for ${int(SWEEP_TARGET_SESSIONS)}: a full run checks it)`,
      status: 'SKIP',
    });
  } else {
    const busy = sweep.maxBlockMs > 5 && sweep.longestStepMs <= 5;
    out.push({
      text:
        `MemoryStore sweep of ${int(sweep.count)} expired sessions, longest event-loop block: ${fixed(sweep.maxBlockMs, 1)} ms (target ≤ 5 ms)` +
        ` [the sweep's longest step ${fixed(sweep.longestStepMs, 2)} ms${busy ? ': the rest is the process waiting for a CPU on a busy machine' : ''}]`,
      status: sweep.maxBlockMs <= 5 ? 'PASS' : 'MISS',
    });
  }
  return out;
}

export function targetLines(list: Target[]): string {
  return list.map((t) => `${t.status.padEnd(4)}  ${t.text}`).join('\n');
}

function warmupUntil(run: RunResult): string {
  const requests = run.settings.warmupRequests ?? 0;
  return requests > 0 ? `, or up to 3 s until the server has served ${requests.toLocaleString('en-US')} requests; fresh server processes each round` : '';
}

export function machineLine(run: RunResult): string {
  const m = run.machine;
  return (
    `${m.cpus} CPUs (${m.cpuModel}), Node ${m.node}; load average ${m.loadBefore.map((l) => l.toFixed(2)).join(' ')} before, ` +
    `${m.loadAfter.map((l) => l.toFixed(2)).join(' ')} after; ${run.mode} mode: ${run.settings.rounds} rounds × ${run.settings.duration} s ` +
    `(+ ${run.settings.warmup} s warm-up${warmupUntil(run)}) per contender and workload, ${run.settings.connections} connections; run took ${Math.round(run.elapsedS)} s.`
  );
}

/** The in-process timings: CPU per request of the middleware and handler, without HTTP. */
export function microTable(run: RunResult): string {
  const out: string[] = [];
  for (const [mode, byWorkload] of Object.entries(run.micro)) {
    const workloads = Object.keys(byWorkload);
    if (workloads.length === 0) continue;
    const names = Object.keys(byWorkload[workloads[0]]);
    const rows = names.map((name) => [
      name === 'bare Koa' ? 'bare Koa' : `${name}${mode === 'signed' ? ', signed' : ''}`,
      ...workloads.map((w) => {
        const value = byWorkload[w][name];
        const bare = byWorkload[w]['bare Koa'];
        return name === 'bare Koa' ? `${fixed(value, 1)} µs` : `${fixed(value, 1)} µs (+${fixed(value - bare, 1)})`;
      }),
    ]);
    out.push(table([mode === 'signed' ? 'app.keys set' : 'no app.keys', ...workloads], rows, ['l', ...workloads.map(() => 'r' as const)]), '');
  }
  out.push(
    'CPU µs per request with Koa driven in-process (no sockets, responses buffered), 50 in flight; in brackets what the session middleware adds to bare Koa. ' +
      'W2x is W2 with a session of its own for each of the 50 in flight, so no request waits for a lock: W2 − W2x is what queueing on one session costs. ' +
      'Median of alternating batches; steadier than the HTTP figures, so use it to judge a change (`--variant DIR`).',
    '',
  );
  return out.join('\n');
}
