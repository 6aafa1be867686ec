/**
 * `npm run bench [-- options]` (bench/run.ts compiles this file and runs it;
 * `npm run bench -- --help` lists the options, from USAGE in args.ts).
 *
 * koa-locked-session side by side with its peers: each server in a child
 * process of its own on a loopback port, driven by autocannon from this
 * process, contenders interleaved round by round; then the lost-update
 * check, the memory probes, and CPU profiles of our contender.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { USAGE, UsageError, parseArgs, type Args } from './args';
import { ROOT, buildLibrary } from './build';
import { Child, killChildren } from './child';
import { CONTENDERS, MEASURING_ORDER, type ContenderSpec } from './contenders-meta';
import { lostUpdates } from './correctness';
import { pool } from './http';
import { WORKLOADS, measure, type WindowResult, type WorkloadId } from './load';
import { summarizeProfile } from './profile';
import { startRedis, type ThrowawayRedis } from './redis';
import {
  Results,
  correctnessTable,
  headlineTable,
  machineLine,
  memoryTable,
  microTable,
  SWEEP_TARGET_SESSIONS,
  targetLines,
  targets,
  workloadTables,
  type MemoryResult,
  type RunResult,
  type SweepResult,
} from './report';

function machine(): RunResult['machine'] {
  const cpuinfo = existsSync('/proc/cpuinfo') ? readFileSync('/proc/cpuinfo', 'utf8') : '';
  const model = /model name\s*:\s*(.*)/.exec(cpuinfo)?.[1] ?? os.cpus()[0]?.model ?? 'unknown';
  const versions: Record<string, string> = {};
  for (const pkg of ['koa', 'express', 'koa-session', 'koa-generic-session', 'express-session', 'koa-redis', 'connect-redis', 'ioredis', 'redis', 'autocannon']) {
    try {
      versions[pkg] = (JSON.parse(readFileSync(join(ROOT, 'node_modules', pkg, 'package.json'), 'utf8')) as { version: string }).version;
    } catch {
      versions[pkg] = '?';
    }
  }
  try {
    versions['redis-server'] = /v=(\S+)/.exec(execFileSync('redis-server', ['--version'], { encoding: 'utf8' }))?.[1] ?? '?';
  } catch {
    versions['redis-server'] = 'not installed';
  }
  return { cpus: os.availableParallelism(), cpuModel: model, node: process.version, loadBefore: os.loadavg(), loadAfter: [], versions };
}

const t0 = Date.now();
const log = (line: string) => process.stdout.write(`${line}\n`);
const phase = (name: string) => log(`-- ${name} (at ${((Date.now() - t0) / 1000).toFixed(0)} s)`);

/** The contenders in MEASURING_ORDER (a stable sort: a variant stays right after its original). */
function measuringSequence(contenders: readonly ContenderSpec[]): ContenderSpec[] {
  const place = (spec: ContenderSpec): number => {
    const at = MEASURING_ORDER.indexOf(spec.factory);
    return at < 0 ? MEASURING_ORDER.length : at;
  };
  return [...contenders].sort((a, b) => place(a) - place(b));
}

async function main(): Promise<void> {
  const started = Date.now();
  const args = parseArgs(process.argv.slice(2));
  if (args.help) {
    log(USAGE);
    return;
  }

  // The library as plain JS (see build.ts); run.ts has compiled bench/ itself.
  const lib = args.lib ?? buildLibrary(args.src);
  const variantLib = args.variant === undefined ? undefined : buildLibrary(args.variant);
  const benchOut = __dirname;
  const serverScript = join(benchOut, 'server.js');
  const memoryScript = join(benchOut, 'memory.js');

  let specs: ContenderSpec[] = CONTENDERS.map((c) => ({ ...c, factory: c.name, lib: c.ours ? lib : undefined }));
  if (args.only !== undefined) specs = specs.filter((c) => args.only?.includes(c.name));
  if (variantLib !== undefined) {
    const variants = specs.filter((c) => c.ours).map((c) => ({ ...c, name: `${c.name}@variant`, label: `${c.label} [variant]`, lib: variantLib }));
    specs = specs.flatMap((c) => [c, ...variants.filter((v) => v.factory === c.name)]);
  }

  const run: RunResult = {
    mode: args.quick ? 'quick' : 'full',
    date: new Date().toISOString(),
    machine: machine(),
    settings: { rounds: args.rounds, duration: args.duration, warmup: args.warmup, warmupRequests: args.quick ? 0 : 5000, connections: args.connections, library: args.lib ?? resolve(args.src), variant: args.variant },
    contenders: [],
    skipped: [],
    workloads: args.workloads,
    windows: [],
    correctness: {},
    memory: [],
    profiles: [],
    micro: {},
    elapsedS: 0,
  };
  log(`koa-locked-session benchmark (${run.mode}): ${run.machine.cpus} CPUs, ${run.machine.cpuModel}, Node ${run.machine.node}, load ${run.machine.loadBefore.map((l) => l.toFixed(2)).join(' ')}`);
  log(`library: ${lib}${variantLib ? `; variant: ${variantLib}` : ''}`);

  // Redis: one throwaway server shared by the Redis contenders, flushed before each window.
  let redis: ThrowawayRedis | undefined;
  if (specs.some((c) => c.redis)) {
    if (!args.redis) {
      for (const c of specs.filter((s) => s.redis)) run.skipped.push({ name: c.name, reason: '--no-redis' });
      specs = specs.filter((c) => !c.redis);
    } else {
      try {
        redis = await startRedis();
        log(`throwaway redis-server on 127.0.0.1:${redis.port}`);
      } catch (error) {
        const reason = `no redis-server: ${(error as Error).message}`;
        for (const c of specs.filter((s) => s.redis)) run.skipped.push({ name: c.name, reason });
        specs = specs.filter((c) => !c.redis);
      }
    }
  }

  // One child per contender; a contender whose server cannot be built is skipped.
  const startChild = (spec: ContenderSpec): Child =>
    new Child(spec.name, serverScript, {
      BENCH_CONTENDER: spec.factory,
      BENCH_LIB: spec.lib ?? lib,
      BENCH_REDIS_PORT: redis === undefined ? undefined : String(redis.port),
    });
  const children = new Map<string, Child>();
  for (const spec of specs) {
    const child = startChild(spec);
    try {
      await child.call('prepare', {}, 30_000);
      children.set(spec.name, child);
      run.contenders.push(spec);
    } catch (error) {
      run.skipped.push({ name: spec.name, reason: (error as Error).message });
      log(`skipped ${spec.name}: ${(error as Error).message}`);
      await child.exit();
    }
  }
  // A server process keeps its own speed for its whole life (where the JIT placed and inlined its code,
  // what else ran beside it): one slow or fast process would tilt every round alike. A full run starts
  // each round with fresh processes, so the median over the rounds is over as many processes.
  const restartChildren = async (): Promise<void> => {
    await Promise.all(
      run.contenders.map(async (spec) => {
        await children.get(spec.name)?.exit();
        const child = startChild(spec);
        children.set(spec.name, child);
        await child.call('prepare', {}, 30_000).catch(() => undefined); // a server that fails now fails its windows, which say why
      }),
    );
  };

  try {
    if (args.load) {
      phase('load');
      // A full run's fresh processes warm up to a number of requests (see LoadSettings.warmupRequests).
      const settings = { connections: args.connections, duration: args.duration, warmup: args.warmup, warmupRequests: run.settings.warmupRequests ?? 0 };
      const sequence = measuringSequence(run.contenders);
      for (let round = 1; round <= args.rounds; round++) {
        if (round > 1 && !args.quick) await restartChildren();
        for (const workload of args.workloads) {
          const order = round % 2 === 1 ? sequence : [...sequence].reverse();
          const line: string[] = [];
          for (const spec of order) {
            if (spec.redis) await redis?.flush();
            let result: WindowResult;
            // Quick mode warms each server up in its first round only (the JIT keeps what it learnt).
            const warmup = args.quick && round > 1 ? 0 : settings.warmup;
            try {
              result = await measure(children.get(spec.name) as Child, WORKLOADS[workload], { ...settings, warmup });
            } catch (error) {
              log(`  ${workload} ${spec.name}: ${(error as Error).message}`);
              continue;
            }
            run.windows.push({ round, workload, contender: spec.name, result });
            line.push(`${spec.name} ${Math.round(result.rps)}/s ${result.cpuUs.toFixed(0)}µs${result.bad ? ` ⚠${result.bad}` : ''}`);
          }
          log(`[round ${round}/${args.rounds} ${workload}] ${line.join(' · ')}`);
        }
      }
    }

    if (args.correctness) {
      phase('lost updates');
      for (const spec of run.contenders.filter((c) => c.session)) {
        if (spec.redis) await redis?.flush();
        try {
          run.correctness[spec.name] = await lostUpdates(children.get(spec.name) as Child);
        } catch (error) {
          run.correctness[spec.name] = { error: (error as Error).message };
        }
      }
      log(`lost updates: ${Object.entries(run.correctness).map(([n, r]) => `${n} ${'error' in r ? 'error' : r.lost}`).join(' · ')}`);
    }

    if (args.profile && children.has('ours')) {
      phase('profiles');
      const dir = join(ROOT, 'bench', '.profiles');
      mkdirSync(dir, { recursive: true });
      const settings = { connections: args.connections, duration: Math.max(args.duration, 2), warmup: args.warmup, warmupRequests: 0 };
      for (const workload of (['W1', 'W2', 'W3'] as WorkloadId[]).filter((w) => args.workloads.includes(w))) {
        const file = join(dir, `ours-${workload}.cpuprofile`);
        await measure(children.get('ours') as Child, WORKLOADS[workload], settings, file);
        run.profiles.push(`${workload}: ${summarizeProfile(file, 15)}`);
      }
    }
  } finally {
    await Promise.all([...children.values()].map((child) => child.exit()));
    await redis?.stop();
  }

  if (args.micro) {
    phase('in-process timings');
    const libs = [`ours=${lib}`, ...(variantLib === undefined ? [] : [`ours@variant=${variantLib}`])].join(',');
    for (const signed of [false, true]) {
      const child = new Child('micro', join(benchOut, 'micro.js'), {
        BENCH_LIBS: libs,
        BENCH_SIGNED: signed ? '1' : '0',
        // W2x (W2's writes with a session per connection, so no request waits for the lock) goes with W2.
        BENCH_WORKLOADS: args.workloads.filter((w) => w !== 'W4' && w !== 'W2x').flatMap((w) => (w === 'W2' ? ['W2', 'W2x'] : [w])).join(','),
      });
      try {
        run.micro[signed ? 'signed' : 'unsigned'] = await child.call('run');
      } catch (error) {
        log(`micro: ${(error as Error).message}`);
      } finally {
        await child.exit();
      }
    }
  }

  if (args.memory) {
    phase('memory');
    const counts = args.quick ? [100_000] : [100_000, 1_000_000];
    const stores = ['ours', 'koa-session-store', 'koa-generic-session', 'express-session'].filter((s) => args.only === undefined || args.only.includes(s) || s === 'ours');
    const memoryArgs = ['--expose-gc', '--max-old-space-size=8192'];
    // Heap deltas do not depend on CPU time, so two probes run at once (one per core).
    const probes = counts.flatMap((count) => stores.map((name) => ({ name, count })));
    const results = await pool(probes, 2, async ({ name, count }) => {
      const child = new Child(`memory ${name}`, memoryScript, { BENCH_MEMORY_MODE: 'bytes', BENCH_STORE: name, BENCH_COUNT: String(count), BENCH_LIB: lib }, memoryArgs);
      try {
        return await child.call<MemoryResult>('run');
      } catch (error) {
        return { name, count, error: (error as Error).message };
      } finally {
        await child.exit();
      }
    });
    run.memory.push(...results);
    phase('sweep');
    log(`memory: ${run.memory.map((m) => `${m.name}@${m.count} ${'error' in m ? 'error' : `${Math.round(m.bytesPerSession)} B`}`).join(' · ')}`);
    const repeats = String(args.quick ? 1 : 3);
    // Filling a store with a million sessions takes most of a quick run's last ten seconds: quick sweeps a quarter of that.
    const count = String(args.quick ? SWEEP_TARGET_SESSIONS / 4 : SWEEP_TARGET_SESSIONS);
    const child = new Child('memory sweep', memoryScript, { BENCH_MEMORY_MODE: 'sweep', BENCH_COUNT: count, BENCH_REPEATS: repeats, BENCH_LIB: lib }, memoryArgs);
    try {
      run.sweep = await child.call<SweepResult>('run');
    } catch (error) {
      run.sweep = { error: (error as Error).message };
    } finally {
      await child.exit();
    }
  }

  run.machine.loadAfter = os.loadavg();
  run.elapsedS = (Date.now() - started) / 1000;
  report(run, args);
}

function report(run: RunResult, args: Args): void {
  const results = new Results(run);
  const sections: string[] = [];
  sections.push(`Measured ${run.date.slice(0, 16).replace('T', ' ')} UTC. ${machineLine(run)}`, '');
  if (run.skipped.length > 0) sections.push(`Not measured: ${run.skipped.map((s) => `${s.name} (${s.reason})`).join('; ')}.`, '');
  if (run.windows.length > 0) sections.push('### Headline', '', headlineTable(results), '### Per workload', '', workloadTables(results));
  if (Object.keys(run.correctness).length > 0) sections.push('### Lost updates', '', correctnessTable(run));
  if (Object.keys(run.micro).length > 0) sections.push('### The middleware alone (in-process, no HTTP)', '', microTable(run));
  if (run.memory.length > 0 || run.sweep !== undefined) sections.push('### Memory', '', memoryTable(run));
  const targetList = targets(results);
  sections.push('### Targets', '', '```', targetLines(targetList), '```', '');
  const body = sections.join('\n');

  log('');
  log(body);
  if (run.profiles.length > 0) {
    log('### CPU profiles of ours (koa-locked-session, MemoryStore, unsigned)\n');
    for (const summary of run.profiles) log(`${summary}\n`);
  }

  // A run that leaves parts out does not replace the last complete run's results.
  const partial = args.partial;
  const tag = partial ? 'partial' : run.mode;
  const resultsDir = join(ROOT, 'bench', '.results');
  mkdirSync(resultsDir, { recursive: true });
  writeFileSync(join(resultsDir, `${tag}-latest.json`), JSON.stringify(run, null, 2));
  writeFileSync(join(resultsDir, `${tag}-latest.md`), `${body}\n${run.profiles.join('\n\n')}\n`);

  if (args.write) {
    const headline = run.windows.length > 0 ? headlineTable(results) : '';
    writeFileSync(
      join(ROOT, 'docs', 'bench-table.md'),
      `<!-- Written by \`npm run bench\` (${run.mode} mode); see BENCHMARKS.md for the method. -->\n\n` +
        `${headline}\n${machineLine(run)}\n`,
    );
    const file = join(ROOT, 'BENCHMARKS.md');
    const start = '<!-- bench:results:start -->';
    const end = '<!-- bench:results:end -->';
    if (existsSync(file)) {
      const text = readFileSync(file, 'utf8');
      const a = text.indexOf(start);
      const b = text.indexOf(end);
      if (a >= 0 && b > a) {
        writeFileSync(file, `${text.slice(0, a + start.length)}\n${body}\n${text.slice(b)}`);
      } else log(`BENCHMARKS.md has no ${start} … ${end} markers: not updated`);
    }
    log('wrote docs/bench-table.md and the results section of BENCHMARKS.md');
  }
  log(`raw results: ${join('bench', '.results', `${tag}-latest.json`)}; took ${Math.round(run.elapsedS)} s`);
}

main().catch((error: unknown) => {
  console.error(error instanceof UsageError ? `npm run bench: ${error.message}` : error);
  killChildren();
  process.exit(1);
});
