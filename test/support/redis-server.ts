/**
 * Throwaway redis-server processes for tests.
 *
 * Every server listens on 127.0.0.1 only, on a free port picked here (never
 * 6379), keeps nothing on disk (`--save '' --appendonly no`, its own temp
 * dir) and is stopped by its pid. Nothing here talks to a system Redis.
 *
 *   const redis = await startRedis();            // { host, port, url, pid, stop() }
 *   const cluster = await startRedisCluster();    // 3 masters, cluster_state:ok
 *   await redis.stop();
 *
 * Mocha suites decide what to do when there is no redis-server binary with
 * redisTarget() / skipOrFail() (see the bottom of this file).
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';

export const HOST = '127.0.0.1';

export interface RedisServer {
  readonly host: string;
  readonly port: number;
  /** `redis://127.0.0.1:PORT` */
  readonly url: string;
  readonly pid: number;
  /** Stops the server by its pid (SIGTERM, then SIGKILL) and removes its temp dir. Safe to call twice. */
  stop(): Promise<void>;
  /** SIGKILLs the server: a crash, not a shutdown. Resolves once it has exited. */
  kill(): Promise<void>;
}

export interface StartRedisOptions {
  /** Listen on this port (e.g. to restart a stopped server where clients expect it). Default: a free one. */
  port?: number;
  /** More redis-server arguments, e.g. `['--cluster-enabled', 'yes']`. */
  args?: string[];
  /** Ports that must also be free when a port is picked (e.g. the cluster bus: port + 10000). */
  busOffset?: number;
}

/** Looks a program up on PATH, without running a shell. */
export function which(program: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, program);
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}

export function hasRedisServer(): boolean {
  return which('redis-server') !== undefined;
}

export function hasRedisCli(): boolean {
  return which('redis-cli') !== undefined;
}

/** Servers started here and not yet exited, with their temp dirs. */
const running = new Map<ChildProcess, string>();

// A test run that dies half-way must not leave servers or temp dirs behind.
process.once('exit', () => {
  for (const [child, dir] of running) {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    rmSync(dir, { recursive: true, force: true });
  }
});

/** True when `port` (and `port + busOffset`) can be bound on 127.0.0.1 right now. */
async function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once('error', () => resolve(false));
    probe.listen({ port, host: HOST, exclusive: true }, () => probe.close(() => resolve(true)));
  });
}

async function pickPort(busOffset: number | undefined): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    // Below 55535 so that a cluster bus port (port + 10000) still exists; above 20000 to stay clear of well-known ones.
    const port = 20000 + Math.floor(Math.random() * 35000);
    if (port === 6379 || port === 16379) continue;
    if (!(await isFree(port))) continue;
    if (busOffset !== undefined && !(await isFree(port + busOffset))) continue;
    return port;
  }
  throw new Error('redis-server test helper: found no free port on 127.0.0.1');
}

function waitForExit(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/**
 * Spawns one redis-server and resolves once it accepts connections.
 * Rejects when it exits first (with its output, e.g. "Address already in use").
 */
async function spawnServer(port: number, args: string[]): Promise<RedisServer> {
  const dir = mkdtempSync(join(tmpdir(), 'kls-redis-'));
  const child = spawn(
    'redis-server',
    [
      '--port', String(port),
      '--bind', HOST,
      '--save', '',
      '--appendonly', 'no',
      '--dir', dir,
      '--daemonize', 'no',
      '--logfile', '',
      ...args,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  running.set(child, dir);

  let output = '';
  await new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      if (/Ready to accept connections/.test(output)) done();
    };
    const onExit = (code: number | null, signal: string | null) => {
      cleanup();
      running.delete(child);
      rmSync(dir, { recursive: true, force: true });
      reject(new Error(`redis-server on port ${port} exited (${code ?? signal}) before it was ready:\n${output.slice(-2000)}`));
    };
    const onError = (error: Error) => {
      cleanup();
      running.delete(child);
      rmSync(dir, { recursive: true, force: true });
      reject(error);
    };
    const done = () => {
      cleanup();
      // Keep draining its output so the pipe never fills up and blocks it.
      child.stdout?.resume();
      child.stderr?.resume();
      resolve();
    };
    const cleanup = () => {
      child.stdout?.off('data', onData);
      child.stderr?.off('data', onData);
      child.off('exit', onExit);
      child.off('error', onError);
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', onExit);
    child.once('error', onError);
  });
  const pid = child.pid as number;
  let stopped: Promise<void> | undefined;
  const end = (signal: NodeJS.Signals) => {
    stopped ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill(signal);
        const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await waitForExit(child);
        clearTimeout(killer);
      }
      rmSync(dir, { recursive: true, force: true });
      running.delete(child);
    })();
    return stopped;
  };
  try {
    // "Ready" is logged just before the event loop starts; a PING proves it.
    await waitFor(async () => (await command(port, 'PING')) === 'PONG', 5000, `redis-server on port ${port} to answer PING`);
  } catch (error) {
    await end('SIGKILL');
    throw error;
  }
  return {
    host: HOST,
    port,
    url: `redis://${HOST}:${port}`,
    pid,
    stop: () => end('SIGTERM'),
    kill: () => end('SIGKILL'),
  };
}

/** Starts a throwaway redis-server on 127.0.0.1 and resolves once it answers PING. */
export async function startRedis(options: StartRedisOptions = {}): Promise<RedisServer> {
  const args = options.args ?? [];
  if (options.port !== undefined) return spawnServer(options.port, args);
  // Another process may grab the port between the probe and the bind: try again elsewhere.
  let lastError: unknown;
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await pickPort(options.busOffset);
    try {
      return await spawnServer(port, args);
    } catch (error) {
      lastError = error;
    }
  }
  throw lastError;
}

export interface RedisCluster {
  /** The masters' addresses, for `new Cluster(nodes)`. */
  readonly nodes: { host: string; port: number }[];
  readonly servers: RedisServer[];
  /** Stops every node by its pid. */
  stop(): Promise<void>;
}

/**
 * Starts `masters` (default 3) cluster-enabled redis-servers, joins them with
 * `redis-cli --cluster create ... --cluster-replicas 0 --cluster-yes` and
 * resolves once every node reports cluster_state:ok.
 */
export async function startRedisCluster(options: { masters?: number } = {}): Promise<RedisCluster> {
  const count = options.masters ?? 3;
  const servers: RedisServer[] = [];
  const stop = async () => {
    await Promise.all(servers.map((server) => server.stop()));
  };
  try {
    for (let i = 0; i < count; i++) {
      // The config file lives in the server's own temp dir (--dir), so a relative name is enough.
      servers.push(await startRedis({
        busOffset: 10000,
        args: ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '5000'],
      }));
    }
    await run('redis-cli', ['--cluster', 'create', ...servers.map((s) => `${HOST}:${s.port}`), '--cluster-replicas', '0', '--cluster-yes']);
    await waitFor(async () => {
      for (const server of servers) {
        const info = await command(server.port, 'CLUSTER', 'INFO');
        if (!/cluster_state:ok/.test(info)) return false;
        const slots = /cluster_slots_ok:(\d+)/.exec(info);
        if (slots === null || slots[1] !== '16384') return false;
      }
      return true;
    }, 30_000, 'the cluster to reach cluster_state:ok');
  } catch (error) {
    await stop();
    throw error;
  }
  return { nodes: servers.map((s) => ({ host: s.host, port: s.port })), servers, stop };
}

function run(program: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(program, args, { timeout: 60_000 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${program} ${args.join(' ')} failed: ${error.message}\n${stdout}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/**
 * Sends one command to 127.0.0.1:`port` over a fresh connection and returns
 * the reply as text (simple strings, errors, integers and bulk strings; this
 * is only for PING and CLUSTER INFO). Rejects on a connection error.
 */
export function command(port: number, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: HOST });
    let buffer = Buffer.alloc(0);
    socket.setTimeout(3000, () => socket.destroy(new Error('timed out')));
    socket.once('error', reject);
    socket.on('data', (chunk) => {
      buffer = Buffer.concat([buffer, chunk]);
      const text = buffer.toString('utf8');
      const lineEnd = text.indexOf('\r\n');
      if (lineEnd < 0) return;
      const head = text.slice(0, lineEnd);
      if (head[0] === '$') {
        const length = Number(head.slice(1));
        if (length < 0) return finish('');
        if (buffer.length < Buffer.byteLength(head) + 2 + length + 2) return;
        return finish(buffer.subarray(Buffer.byteLength(head) + 2, Buffer.byteLength(head) + 2 + length).toString('utf8'));
      }
      if (head[0] === '-') {
        socket.destroy();
        return reject(new Error(head.slice(1)));
      }
      finish(head.slice(1));
    });
    const finish = (reply: string) => {
      socket.destroy();
      resolve(reply);
    };
    socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`);
  });
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      if (await check()) return;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}${lastError instanceof Error ? `: ${lastError.message}` : ''}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * Where Redis tests can run: 'binary' (throwaway servers from this module),
 * 'url' (no binary, but REDIS_URL names a server to use; tests that stop or
 * cluster servers cannot run there) or 'none'.
 */
export type RedisTarget = { kind: 'binary' } | { kind: 'url'; url: string } | { kind: 'none' };

export function redisTarget(): RedisTarget {
  if (hasRedisServer()) return { kind: 'binary' };
  const url = process.env.REDIS_URL;
  if (url !== undefined && url !== '') return { kind: 'url', url };
  return { kind: 'none' };
}

/**
 * For a suite's `before` hook when what it needs is missing: on CI
 * (`CI=true`) the run must fail; elsewhere it warns visibly and skips.
 */
export function skipOrFail(context: Mocha.Context, reason: string): never {
  if (process.env.CI === 'true') throw new Error(`${reason} (CI=true: Redis tests must run, not be skipped)`);
  console.warn(`\n  ⚠ SKIPPED: ${reason}\n`);
  context.skip();
}

/**
 * For a suite's `before` hook: a Redis to test against, a throwaway
 * redis-server of our own when the binary is there (`server`, ours to stop),
 * else the one REDIS_URL names; with neither, skipOrFail with `reason`.
 */
export async function testRedis(context: Mocha.Context, reason: string): Promise<{ url: string; server: RedisServer | undefined }> {
  const target = redisTarget();
  if (target.kind === 'none') skipOrFail(context, `no redis-server binary on PATH and no REDIS_URL: ${reason}`);
  if (target.kind === 'url') return { url: target.url, server: undefined };
  const server = await startRedis();
  return { url: server.url, server };
}
