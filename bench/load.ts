/** The four workloads, and one measured window of load on one contender. */
import autocannon from 'autocannon';
import type { Child } from './child';
import { createSessions } from './http';

export type WorkloadId = 'W1' | 'W2' | 'W3' | 'W4' | 'W2x';

export interface Workload {
  id: WorkloadId;
  title: string;
  /** Sessions created before the window (their cookies are sent). */
  sessions: number;
  options(base: string, cookies: string[]): autocannon.Options;
}

/** W4 mixes 90 % reads and 10 % writes over this many sessions. */
export const MIXED_SESSIONS = 1000;

export const WORKLOADS: Record<WorkloadId, Workload> = {
  W1: {
    id: 'W1',
    title: 'read: existing session (4 small keys), handler reads one key',
    sessions: 1,
    options: (base, [cookie]) => ({
      url: `${base}/read`,
      method: 'GET',
      headers: cookie ? { cookie } : {},
      expectBody: 'user-42',
    }),
  },
  W2: {
    id: 'W2',
    title: 'write: existing session, handler increments a counter',
    sessions: 1,
    options: (base, [cookie]) => ({ url: `${base}/write`, method: 'POST', headers: cookie ? { cookie } : {} }),
  },
  W3: {
    id: 'W3',
    title: 'new: no cookie, handler sets one key (a session is created per request)',
    sessions: 0,
    options: (base) => ({ url: `${base}/new`, method: 'GET' }),
  },
  /** W2 with a session per connection, so no request waits for a lock (full runs; a quick one leaves it out). */
  W2x: {
    id: 'W2x',
    title: 'write, a session per connection: W2 without waiting for the lock',
    sessions: 50,
    options: (base, cookies) => {
      let nextSlot = 0;
      return {
        url: `${base}/write`,
        method: 'POST',
        // Called once per connection: each sends its own session's cookie on every request. (A request's
        // context would not do: autocannon resets it each time it comes round to the first request.)
        setupClient: (client: autocannon.Client) => {
          const cookie = cookies[nextSlot++ % cookies.length];
          if (cookie) client.setHeaders({ cookie });
        },
      };
    },
  },
  W4: {
    id: 'W4',
    title: `mixed: 90 % reads / 10 % writes across ${MIXED_SESSIONS} sessions`,
    sessions: MIXED_SESSIONS,
    options: (base, cookies) => {
      let counter = 0;
      return {
        url: base,
        requests: [
          {
            setupRequest: (req: autocannon.Request) => {
              const { session, write } = mixedRequest(counter++, cookies.length);
              const cookie = cookies[session];
              return {
                ...req,
                method: write ? 'POST' : 'GET',
                path: write ? '/write' : '/read',
                headers: cookie ? { cookie } : {},
              };
            },
          },
        ],
      };
    },
  },
};

/**
 * W4's request number `i` over `sessions` sessions: consecutive requests go
 * to consecutive sessions, and every session is written on one of each ten
 * rounds over the pool, a different one for each, so that every session
 * takes reads and writes, a tenth of them writes, spread over the run.
 */
export function mixedRequest(i: number, sessions: number): { session: number; write: boolean } {
  const session = i % sessions;
  const lap = Math.floor(i / sessions);
  return { session, write: (session + lap) % 10 === 9 };
}

export interface WindowResult {
  rps: number;
  p50: number;
  p99: number;
  /** Server CPU time (user + system) per request served, in µs. */
  cpuUs: number;
  requests: number;
  /** non-2xx answers, socket errors, timeouts and body mismatches. */
  bad: number;
}

export interface LoadSettings {
  connections: number;
  duration: number;
  warmup: number;
  /**
   * Requests the warm-up should reach, taking up to WARMUP_CAP_S for it
   * (0: `warmup` seconds alone). A JIT settles after a number of requests,
   * not seconds: in a fresh process a contender serving 2,000 requests a
   * second is still cold after 0.5 s, where one serving 30,000 is warm.
   */
  warmupRequests: number;
}

const WARMUP_CAP_S = 3;

/** `settings.warmup` seconds of load, and more when that did not reach `settings.warmupRequests`. */
async function warmUp(options: autocannon.Options, settings: LoadSettings): Promise<void> {
  const done = (await cannon(options, settings.warmup)).requests.total;
  if (done === 0 || done >= settings.warmupRequests) return;
  const more = Math.min(WARMUP_CAP_S - settings.warmup, ((settings.warmupRequests - done) / done) * settings.warmup);
  if (more >= 0.1) await cannon(options, more);
}

/**
 * Load for `seconds`. autocannon checks whether its time is up once per
 * sample interval (1 s by default), so a shorter run samples more often.
 */
function cannon(options: autocannon.Options, seconds: number): Promise<autocannon.Result> {
  return autocannon({ ...options, timeout: 30, duration: seconds, sampleInt: Math.min(1000, seconds * 1000) });
}

/**
 * One window: a fresh app in the child (empty stores), the sessions the
 * workload needs, a short warm-up, then `duration` seconds of load while
 * the child measures its own CPU time.
 */
export async function measure(child: Child, workload: Workload, settings: LoadSettings, profileFile?: string): Promise<WindowResult> {
  const { port } = await child.call<{ port: number }>('prepare');
  const base = `http://127.0.0.1:${port}`;
  const cookies = await createSessions(port, workload.sessions);
  const common = { connections: settings.connections };
  if (settings.warmup > 0) await warmUp({ ...workload.options(base, cookies), ...common }, settings);
  if (profileFile !== undefined) await child.call('profile-start');
  await child.call('start');
  const result = await cannon({ ...workload.options(base, cookies), ...common }, settings.duration);
  const server = await child.call<{ cpuUs: number; requests: number }>('stop');
  if (profileFile !== undefined) await child.call('profile-stop', { file: profileFile });
  // Only 2xx answers count: a fast 503 is no throughput. (autocannon counts a timeout among the errors too.)
  const total = result['2xx'];
  const bad = result.non2xx + result.errors + (result.mismatches ?? 0);
  return {
    rps: total / result.duration,
    p50: result.latency.p50,
    p99: result.latency.p99,
    cpuUs: server.requests > 0 ? server.cpuUs / server.requests : NaN,
    requests: total,
    bad,
  };
}
