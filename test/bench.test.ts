/**
 * `npm run bench` itself (issue #6): its command line, and how the Targets
 * block judges a run. The benchmark's measuring is not run here (it takes
 * minutes and its figures depend on the machine); what it concludes from
 * given figures is.
 */
import { execFile } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import autocannon from 'autocannon';
import { join } from 'node:path';
import { USAGE, UsageError, parseArgs } from '../bench/args';
import { CONTENDERS, MEASURING_ORDER, QUICK_CONTENDERS } from '../bench/contenders-meta';
import { lostOf } from '../bench/correctness';
import { WORKLOADS, mixedRequest } from '../bench/load';
import type { WindowResult, WorkloadId } from '../bench/load';
import { Results, SWEEP_TARGET_SESSIONS, targetLines, targets } from '../bench/report';
import type { RunResult, SweepResult } from '../bench/report';
import { expect } from './support/app';

const ROOT = join(__dirname, '..');

function benchOverNpm(argv: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('npm', ['run', '--silent', 'bench', '--', ...argv], { cwd: ROOT }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : (error.code as number | null), stdout, stderr });
    });
  });
}

function refusal(argv: string[]): string {
  try {
    parseArgs(argv);
  } catch (error) {
    expect(error).to.be.instanceOf(UsageError);
    return (error as Error).message;
  }
  throw new Error(`parseArgs accepted ${argv.join(' ')}`);
}

describe('npm run bench: the command line', () => {
  it('a bare full run measures everything, every workload, and writes its results', () => {
    const args = parseArgs([]);
    expect(args).to.include({ quick: false, rounds: 4, duration: 2, warmup: 0.5, connections: 50, partial: false, write: true, profile: true, micro: true });
    expect(args).to.include({ load: true, correctness: true, memory: true, redis: true });
    expect(args.workloads).to.deep.equal(['W1', 'W2', 'W2x', 'W3', 'W4']);
    expect(args.only).to.equal(undefined);
    expect(args.src).to.equal(join(ROOT, 'src'));
  });

  it('--quick is short, narrow and writes nothing', () => {
    const args = parseArgs(['--quick']);
    expect(args).to.include({ quick: true, rounds: 2, duration: 1, warmup: 0.25, write: false, profile: false, micro: false, partial: false });
    expect(args.workloads).to.deep.equal(['W1', 'W2', 'W3']);
    expect(args.only).to.deep.equal(QUICK_CONTENDERS);
  });

  it('a full run with a part left out or narrowed is partial and does not overwrite the published results', () => {
    for (const argv of [['--only', 'koa,ours'], ['--workloads', 'W1'], ['--no-redis'], ['--rounds', '2']]) {
      const args = parseArgs(argv);
      expect(args.partial, argv.join(' ')).to.equal(true);
      expect(args.write, argv.join(' ')).to.equal(false);
    }
    expect(parseArgs(['--no-redis', '--write']).write).to.equal(true);
    expect(parseArgs(['--no-write']).write).to.equal(false);
  });

  it('takes a value after the option or after =, and lists as comma-separated names', () => {
    const args = parseArgs(['--rounds=3', '--duration', '0.5', '--only', 'koa,ours-signed', '--workloads=W2,W4', '-h']);
    expect(args).to.include({ rounds: 3, duration: 0.5, help: true });
    expect(args.only).to.deep.equal(['koa', 'ours-signed']);
    expect(args.workloads).to.deep.equal(['W2', 'W4']);
  });

  it('refuses a bad command line in one sentence that says what is wrong', () => {
    expect(refusal(['--bogus'])).to.equal('unknown option --bogus (npm run bench -- --help lists the options)');
    expect(refusal(['quick'])).to.equal('unexpected argument quick (npm run bench -- --help lists the options)');
    expect(refusal(['--rounds'])).to.equal('--rounds needs a value');
    expect(refusal(['--only', '--quick'])).to.equal('--only needs a value');
    expect(refusal(['--quick=yes'])).to.equal('--quick takes no value');
    expect(refusal(['--rounds', '0'])).to.equal('--rounds needs a whole number of at least 1, not 0');
    expect(refusal(['--rounds', '2.5'])).to.equal('--rounds needs a whole number of at least 1, not 2.5');
    expect(refusal(['--duration', 'x'])).to.equal('--duration needs a number of at least 0.1, not x');
    expect(refusal(['--warmup', '-1'])).to.equal('--warmup needs a number of at least 0, not -1');
    expect(refusal(['--only', 'koa,nope'])).to.match(/^unknown contender nope \(names: koa, koa-busy, /);
    expect(refusal(['--workloads', 'W9'])).to.equal('unknown workload W9 (workloads: W1, W2, W3, W2x, W4)');
  });

  it('every contender has its place in the measuring order, once', () => {
    expect([...MEASURING_ORDER].sort()).to.deep.equal(CONTENDERS.map((c) => c.name).sort());
  });

  it('--help names every contender and workload', () => {
    for (const { name } of CONTENDERS) expect(USAGE).to.contain(name);
    expect(USAGE).to.contain('W1, W2, W3, W2x, W4');
  });

  it('over npm: --help prints the usage on stdout and exits 0', async function () {
    this.timeout(60_000);
    const outcome = await benchOverNpm(['--help']);
    expect(outcome.code).to.equal(0);
    expect(outcome.stdout.trim()).to.equal(USAGE.trim());
    expect(outcome.stderr).to.equal('');
  });

  it('over npm: a bad option is one line on stderr and exit code 1, before anything runs', async function () {
    this.timeout(60_000);
    const outcome = await benchOverNpm(['--rounds', 'x']);
    expect(outcome.code).to.equal(1);
    expect(outcome.stderr.trim()).to.equal('npm run bench: --rounds needs a whole number of at least 1, not x');
    expect(outcome.stdout).to.equal('');
  });
});

/** A run in which `figures[contender][workload]` gives each round's requests/s and server CPU µs per request. */
function runOf(figures: Record<string, Partial<Record<WorkloadId, [rps: number, cpuUs: number][]>>>, extra: Partial<RunResult> = {}): RunResult {
  const windows: RunResult['windows'] = [];
  const workloads = new Set<WorkloadId>();
  for (const [contender, byWorkload] of Object.entries(figures)) {
    for (const [workload, rounds] of Object.entries(byWorkload) as [WorkloadId, [number, number][]][]) {
      workloads.add(workload);
      rounds.forEach(([rps, cpuUs], i) => {
        const result: WindowResult = { rps, cpuUs, p50: 1, p99: 2, requests: rps, bad: 0 };
        windows.push({ round: i + 1, workload, contender, result });
      });
    }
  }
  return {
    mode: 'full',
    date: '2026-12-01T00:00:00.000Z',
    machine: { cpus: 2, cpuModel: 'test', node: process.version, loadBefore: [0, 0, 0], loadAfter: [0, 0, 0], versions: {} },
    settings: { rounds: 3, duration: 2, warmup: 0.5, connections: 50, library: 'src' },
    contenders: CONTENDERS.filter((c) => c.name in figures).map((c) => ({ ...c, factory: c.name })),
    skipped: [],
    workloads: [...workloads],
    windows,
    correctness: {},
    memory: [],
    profiles: [],
    micro: {},
    elapsedS: 1,
    ...extra,
  };
}

const lineOf = (run: RunResult, start: string): string => {
  const line = targetLines(targets(new Results(run)))
    .split('\n')
    .find((l) => l.includes(start));
  if (line === undefined) throw new Error(`no Targets line with ${start}`);
  return line;
};

describe('npm run bench: the Targets block', () => {
  it('judges the median of the rounds’ ratios, each round against the base measured in the same round, and shows their range', () => {
    // Round by round, ours ÷ bare Koa: 0.70, 0.90, 0.85 (median 0.85); the medians of the two
    // columns would give 7,200 ÷ 10,000 = 0.72, blind to round 2's slower base.
    const run = runOf({
      koa: { W1: [[10_000, 30], [8_000, 30], [12_000, 30]] },
      ours: { W1: [[7_000, 40], [7_200, 40], [10_200, 50]] },
    });
    expect(lineOf(run, 'W1 throughput, ours ÷ bare Koa')).to.equal('PASS  W1 throughput, ours ÷ bare Koa: 0.85× (target ≥ 0.80×; rounds 0.70–0.90)');
    // CPU is base ÷ contender, so above 1 is cheaper: 30/40, 30/40, 30/50.
    expect(lineOf(run, 'W1 CPU/request')).to.equal('MISS  W1 CPU/request, bare Koa ÷ ours: 0.75× (target ≥ 0.80×; rounds 0.60–0.75)');
  });

  it('shows a third decimal for a miss that two would round up to the target', () => {
    const run = runOf({
      'koa-session-store': { W3: [[1_000, 100], [1_000, 100], [1_000, 100]] },
      'ours-signed': { W3: [[1_198, 90], [1_190, 90], [1_250, 90]] },
    });
    expect(lineOf(run, 'W3 throughput, ours signed ÷ koa-session')).to.equal(
      'MISS  W3 throughput, ours signed ÷ koa-session (Map store, signed): 1.198× (target ≥ 1.20×; rounds 1.19–1.25) [CPU/request: 1.11×]',
    );
    // Exactly on the target passes.
    const onTarget = runOf({ 'koa-session-store': { W3: [[1_000, 100]] }, 'ours-signed': { W3: [[1_200, 90]] } });
    expect(lineOf(onTarget, 'W3 throughput, ours signed ÷ koa-session')).to.match(/^PASS .*: 1\.20× \(target ≥ 1\.20×\)/);
  });

  it('a target whose contenders were not measured is SKIP, never PASS', () => {
    const run = runOf({ koa: { W1: [[10_000, 30]] }, ours: { W1: [[9_000, 33]] } });
    const lines = targetLines(targets(new Results(run)));
    expect(lines).to.not.contain('W2 throughput, ours ÷ bare Koa'); // W2 not in the run at all
    expect(lineOf(run, 'W1 throughput, ours signed ÷ koa-session')).to.equal('SKIP  W1 throughput, ours signed ÷ koa-session (Map store, signed): not measured');
    expect(lineOf(run, 'MemoryStore sweep')).to.equal('SKIP  MemoryStore sweep block: not measured');
  });

  it('a ratio either side of which had answers other than 2xx is a MISS, whatever its value', () => {
    const run = runOf({ koa: { W1: [[10_000, 30], [10_000, 30]] }, ours: { W1: [[9_500, 31], [9_500, 31]] } });
    expect(lineOf(run, 'W1 throughput, ours ÷ bare Koa')).to.match(/^PASS /);
    run.windows.find((w) => w.contender === 'ours' && w.round === 2)!.result.bad = 140;
    expect(lineOf(run, 'W1 throughput, ours ÷ bare Koa')).to.equal(
      'MISS  W1 throughput, ours ÷ bare Koa: 0.95× (target ≥ 0.80×; rounds 0.95–0.95) — 140 answers were not 2xx, so the ratio does not count',
    );
  });

  it('a lost update is one answered 200 and missing from the count; a failed answer is counted apart, not as lost', () => {
    expect(lostOf(200, 0, 200)).to.equal(0);
    expect(lostOf(200, 0, 150), 'fifty answered 200 and missing').to.equal(50);
    expect(lostOf(200, 142, 58), '142 lock timeouts, the rest all counted').to.equal(0);
    expect(lostOf(200, 10, 180)).to.equal(10);
    expect(lostOf(200, 10, NaN), 'no count to read: every answered one is lost').to.equal(190);
  });

  it('W4 reads and writes every session of its pool, a tenth of the requests writes, spread over the run', () => {
    const sessions = 1000;
    const reads = new Array<number>(sessions).fill(0);
    const writes = new Array<number>(sessions).fill(0);
    for (let i = 0; i < 20 * sessions; i++) {
      const { session, write } = mixedRequest(i, sessions);
      (write ? writes : reads)[session]++;
    }
    expect(reads.every((n) => n === 18) && writes.every((n) => n === 2), 'every session: 18 reads, 2 writes').to.equal(true);
    const firstLap = Array.from({ length: sessions }, (_, i) => mixedRequest(i, sessions).write).filter(Boolean).length;
    expect(firstLap, 'writes in the first pass over the pool').to.equal(sessions / 10);
  });

  it('W2x gives each connection a session of its own: every request of a connection sends the same cookie', async () => {
    const cookiesBySocket = new Map<object, Set<string>>();
    const server = http.createServer((req, res) => {
      const seen = cookiesBySocket.get(req.socket) ?? new Set<string>();
      seen.add(String(req.headers.cookie));
      cookiesBySocket.set(req.socket, seen);
      res.end('ok');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const cookies = Array.from({ length: 10 }, (_, i) => `session_id=${i}`);
      const result = await autocannon({ ...WORKLOADS.W2x.options(`http://127.0.0.1:${port}`, cookies), connections: 10, amount: 2_000 });
      expect(result['2xx']).to.equal(2_000);
      expect([...cookiesBySocket.values()].map((seen) => seen.size)).to.deep.equal(new Array(10).fill(1));
      expect(new Set([...cookiesBySocket.values()].flatMap((seen) => [...seen])).size, 'sessions in use').to.equal(10);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('any lost or failed update of ours is a MISS', () => {
    const run = runOf(
      {},
      {
        correctness: {
          ours: { sent: 200, lost: 0, failed: 0, ms: 1 },
          'ours-signed': { sent: 200, lost: 1, failed: 0, ms: 1 },
          'ours-redis': { sent: 200, lost: 0, failed: 3, ms: 1 },
          'ours-signed-hash': { error: 'connection refused' },
          'koa-session-store': { sent: 200, lost: 190, failed: 0, ms: 1 },
        },
      },
    );
    expect(lineOf(run, 'lost updates, ours:')).to.match(/^PASS /);
    expect(lineOf(run, 'lost updates, ours-signed:')).to.match(/^MISS .*1 of 200, 0 failed/);
    expect(lineOf(run, 'lost updates, ours-redis:')).to.match(/^MISS .*0 of 200, 3 failed/);
    expect(lineOf(run, 'lost updates, ours-signed-hash:')).to.equal('MISS  lost updates, ours-signed-hash: error connection refused');
    expect(targetLines(targets(new Results(run)))).to.not.contain('koa-session-store'); // peers are reported, not judged
  });

  it('judges the sweep only over a million sessions, and says when the block is the machine rather than the sweep', () => {
    const sweep = (count: number, maxBlockMs: number, longestStepMs: number): SweepResult => ({
      count,
      maxBlockMs,
      longestStepMs,
      p99Ms: 1,
      meanMs: 1,
      medianStepMs: 0.1,
      steps: 1000,
      sweepMs: 300,
      left: 0,
      repeats: [],
    });
    const line = (s: SweepResult) => lineOf(runOf({}, { sweep: s }), 'MemoryStore sweep');
    expect(line(sweep(250_000, 8, 1.2))).to.match(/^SKIP .*250,000 expired sessions.*8\.0 ms \(the target, ≤ 5 ms, is for 1,000,000/);
    expect(line(sweep(SWEEP_TARGET_SESSIONS, 4.9, 1.1))).to.equal(
      'PASS  MemoryStore sweep of 1,000,000 expired sessions, longest event-loop block: 4.9 ms (target ≤ 5 ms) [the sweep\'s longest step 1.10 ms]',
    );
    expect(line(sweep(SWEEP_TARGET_SESSIONS, 7, 1.1))).to.match(/^MISS .*7\.0 ms \(target ≤ 5 ms\) \[the sweep's longest step 1\.10 ms: the rest is the process waiting for a CPU on a busy machine\]$/);
    expect(line(sweep(SWEEP_TARGET_SESSIONS, 7, 6.5))).to.match(/^MISS .*\[the sweep's longest step 6\.50 ms\]$/);
  });
});
