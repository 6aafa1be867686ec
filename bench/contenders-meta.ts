/** What the parent knows about each contender (the servers themselves are in contenders.ts). */
export interface ContenderSpec {
  /** Unique name in tables and on the command line (`--only`). */
  name: string;
  /** Which server to build (a key of FACTORIES in contenders.ts). */
  factory: string;
  label: string;
  /** The bare framework it is compared with. */
  base: 'koa' | 'express';
  /** Has a session at all (bare frameworks do not). */
  session: boolean;
  /** No session, but compared with its bare framework like one: a known cost, to read the ratios by. */
  calibration?: boolean;
  redis: boolean;
  /** Built from the library under test (src/ or a --variant copy). */
  ours: boolean;
  /** Compiled library entry point, for ours. */
  lib?: string;
}

export const CONTENDERS: readonly Omit<ContenderSpec, 'factory' | 'lib'>[] = [
  { name: 'koa', label: 'bare Koa', base: 'koa', session: false, redis: false, ours: false },
  { name: 'koa-busy', label: 'calibration: bare Koa + 5 µs busy loop, no session', base: 'koa', session: false, calibration: true, redis: false, ours: false },
  { name: 'koa-headers', label: "calibration: bare Koa + a signed save's response headers, no session", base: 'koa', session: false, calibration: true, redis: false, ours: false },
  { name: 'ours', label: 'koa-locked-session, MemoryStore, unsigned', base: 'koa', session: true, redis: false, ours: true },
  { name: 'ours-signed', label: 'koa-locked-session, signed (app.keys)', base: 'koa', session: true, redis: false, ours: true },
  { name: 'ours-signed-hash', label: 'koa-locked-session, signed + hashIds', base: 'koa', session: true, redis: false, ours: true },
  { name: 'koa-session-cookie', label: 'koa-session 7, cookie mode (signed)', base: 'koa', session: true, redis: false, ours: false },
  { name: 'koa-session-store', label: 'koa-session 7, Map store (signed)', base: 'koa', session: true, redis: false, ours: false },
  { name: 'koa-generic-session', label: 'koa-generic-session 2, MemoryStore', base: 'koa', session: true, redis: false, ours: false },
  { name: 'express', label: 'bare Express 5', base: 'express', session: false, redis: false, ours: false },
  { name: 'express-session', label: 'express-session 1.19, MemoryStore', base: 'express', session: true, redis: false, ours: false },
  { name: 'ours-redis', label: 'koa-locked-session + RedisStore (signed)', base: 'koa', session: true, redis: true, ours: true },
  { name: 'koa-session-redis', label: 'koa-session 7 + koa-redis 4', base: 'koa', session: true, redis: true, ours: false },
  { name: 'express-session-redis', label: 'express-session + connect-redis 10', base: 'express', session: true, redis: true, ours: false },
];

/** What --quick measures: enough for every throughput target but Redis's. */
export const QUICK_CONTENDERS = ['koa', 'koa-busy', 'ours', 'ours-signed', 'koa-session-store'];

/**
 * The order a round measures the contenders in, by name (a `--variant`
 * copy goes right after its original; a name not listed goes last). Each
 * target compares two windows, and the machine's speed drifts over the
 * minute a round takes: so the two sides of every target are measured one
 * after the other (bare Koa and ours, ours and ours signed, ours signed
 * and koa-session's Map store, ours and koa-session on Redis), and the
 * rounds alternate between this order and its reverse, so each side of a
 * pair goes first in half of them.
 */
export const MEASURING_ORDER = [
  'koa-busy',
  'koa-headers',
  'koa',
  'ours',
  'ours-signed',
  'koa-session-store',
  'ours-signed-hash',
  'koa-session-cookie',
  'koa-generic-session',
  'express',
  'express-session',
  'ours-redis',
  'koa-session-redis',
  'express-session-redis',
];
