/**
 * The benchmark's command line: USAGE (what `npm run bench -- --help`
 * prints) and parseArgs, which refuses a bad command line with a
 * UsageError before anything is built or started.
 */
import { join, resolve } from 'node:path';
import { ROOT } from './build';
import { CONTENDERS, QUICK_CONTENDERS } from './contenders-meta';
import { WORKLOADS, type WorkloadId } from './load';

/** The options followed by a value (`--rounds 3` or `--rounds=3`), and those that are switches. */
const VALUE_OPTIONS: readonly string[] = ['rounds', 'duration', 'warmup', 'connections', 'only', 'workloads', 'src', 'lib', 'variant'];
const SWITCHES: readonly string[] = ['help', 'quick', 'write', 'no-write', 'profile', 'no-profile', 'micro', 'no-micro', 'no-load', 'no-correctness', 'no-memory', 'no-redis'];

export const USAGE = `npm run bench [-- options]

  --quick              under a minute: 5 contenders (one a calibration), W1–W3, 2 short rounds, 100k-session memory probe, 250k-session sweep
  --rounds N           rounds (default 4, quick 2)
  --duration S         measured seconds per window (default 2, quick 1)
  --warmup S           warm-up seconds before each window (default 0.5, quick 0.25); a full
                       run's warm-up goes on, up to 3 s, until the server served 5,000 requests
  --connections N      autocannon connections (default 50)
  --only a,b           contenders to run: ${CONTENDERS.map((c) => c.name).join(', ')}
  --workloads W1,W3    workloads to run: ${Object.keys(WORKLOADS).join(', ')}
  --src DIR            library sources to measure (default src/)
  --lib FILE           an already compiled entry point instead (e.g. dist/index.js)
  --variant DIR        also measure a scratch copy of src/ as ours*@variant, interleaved
  --micro              time the middleware in-process, without HTTP (default in full mode)
  --no-load --no-correctness --no-memory --no-redis --no-profile --no-micro   leave parts out
  --profile            profile ours on W1–W3 (default in full mode)
  --write / --no-write update BENCHMARKS.md and docs/bench-table.md (default: a full run
                       with nothing left out writes; partial runs save to bench/.results/partial-latest.*)
  --help               this text
`;

export interface Args {
  help: boolean;
  quick: boolean;
  rounds: number;
  duration: number;
  warmup: number;
  connections: number;
  only?: string[];
  workloads: WorkloadId[];
  src: string;
  lib?: string;
  variant?: string;
  load: boolean;
  correctness: boolean;
  memory: boolean;
  redis: boolean;
  profile: boolean;
  micro: boolean;
  write: boolean;
  /** Some part of the mode's default run was left out or narrowed. */
  partial: boolean;
}

/** A command line the benchmark cannot run: said in one line, without a stack. */
export class UsageError extends Error {}

export function parseArgs(argv: string[]): Args {
  const flags = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '-h') {
      flags.set('help', true);
      continue;
    }
    if (!arg.startsWith('--')) throw new UsageError(`unexpected argument ${arg} (npm run bench -- --help lists the options)`);
    const [name, inline] = arg.slice(2).split('=', 2);
    if (VALUE_OPTIONS.includes(name)) {
      const value = inline ?? argv[++i];
      if (value === undefined || value.startsWith('--')) throw new UsageError(`--${name} needs a value`);
      flags.set(name, value);
    } else if (SWITCHES.includes(name)) {
      if (inline !== undefined) throw new UsageError(`--${name} takes no value`);
      flags.set(name, true);
    } else {
      throw new UsageError(`unknown option --${name} (npm run bench -- --help lists the options)`);
    }
  }
  const quick = flags.has('quick');
  const partial = [...flags.keys()].some((name) => !['quick', 'write', 'no-write', 'profile'].includes(name));
  const num = (name: string, fallback: number, least: number, whole: boolean): number => {
    if (!flags.has(name)) return fallback;
    const value = Number(flags.get(name));
    if (!Number.isFinite(value) || value < least || (whole && !Number.isInteger(value))) {
      throw new UsageError(`--${name} needs ${whole ? 'a whole number' : 'a number'} of at least ${least}, not ${String(flags.get(name))}`);
    }
    return value;
  };
  const list = (name: string) => (typeof flags.get(name) === 'string' ? String(flags.get(name)).split(',').filter(Boolean) : undefined);
  const workloads = (list('workloads') ?? (quick ? ['W1', 'W2', 'W3'] : ['W1', 'W2', 'W2x', 'W3', 'W4'])) as WorkloadId[];
  const only = list('only');
  const names = CONTENDERS.map((c) => c.name);
  for (const name of only ?? []) if (!names.includes(name)) throw new UsageError(`unknown contender ${name} (names: ${names.join(', ')})`);
  for (const w of workloads) if (!(w in WORKLOADS)) throw new UsageError(`unknown workload ${w} (workloads: ${Object.keys(WORKLOADS).join(', ')})`);
  return {
    help: flags.has('help'),
    quick,
    rounds: num('rounds', quick ? 2 : 4, 1, true),
    duration: num('duration', quick ? 1 : 2, 0.1, false),
    warmup: num('warmup', quick ? 0.25 : 0.5, 0, false),
    connections: num('connections', 50, 1, true),
    only: only ?? (quick ? QUICK_CONTENDERS : undefined),
    workloads,
    src: typeof flags.get('src') === 'string' ? String(flags.get('src')) : join(ROOT, 'src'),
    lib: typeof flags.get('lib') === 'string' ? resolve(String(flags.get('lib'))) : undefined,
    variant: typeof flags.get('variant') === 'string' ? String(flags.get('variant')) : undefined,
    load: !flags.has('no-load'),
    correctness: !flags.has('no-correctness'),
    memory: !flags.has('no-memory'),
    redis: !flags.has('no-redis'),
    profile: flags.has('profile') || (!quick && !flags.has('no-profile')),
    micro: flags.has('micro') || (!quick && !flags.has('no-micro')),
    write: flags.has('write') || (!quick && !partial && !flags.has('no-write')),
    partial,
  };
}
