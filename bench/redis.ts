/**
 * A throwaway redis-server on a free loopback port, with no persistence,
 * for the Redis contenders. Never the system's Redis on 6379.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';

export interface ThrowawayRedis {
  port: number;
  /** Empties every database between windows. */
  flush(): Promise<void>;
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

/** Sends one inline command and waits for the first line of the answer. */
function command(port: number, line: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let answer = '';
    socket.setEncoding('utf8');
    socket.once('error', reject);
    socket.on('connect', () => socket.write(`${line}\r\n`));
    socket.on('data', (chunk: string) => {
      answer += chunk;
      if (answer.includes('\r\n')) {
        socket.end();
        resolve(answer.split('\r\n')[0]);
      }
    });
  });
}

export async function startRedis(): Promise<ThrowawayRedis> {
  const port = await freePort();
  const child: ChildProcess = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'yes', '--loglevel', 'warning'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  process.on('exit', () => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  let failed: Error | undefined;
  child.once('error', (error) => (failed = error));
  const deadline = Date.now() + 5000;
  for (;;) {
    if (failed !== undefined) throw failed;
    if (child.exitCode !== null) throw new Error(`redis-server exited with ${child.exitCode}`);
    try {
      if ((await command(port, 'PING')) === '+PONG') break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error('redis-server did not answer PING within 5 s');
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const stopped = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    port,
    async flush() {
      const answer = await command(port, 'FLUSHALL');
      if (answer !== '+OK') throw new Error(`FLUSHALL answered ${answer}`);
    },
    async stop() {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
      await stopped;
      clearTimeout(timer);
    },
  };
}
