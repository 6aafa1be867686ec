/** A child process spoken to over IPC with request/response messages. */
import { fork, type ChildProcess } from 'node:child_process';

interface Reply {
  id: number;
  ok: boolean;
  result?: unknown;
  error?: string;
}

const running = new Set<ChildProcess>();

/** Ends every child this process started (on exit, Ctrl-C, a crash). */
export function killChildren(): void {
  for (const child of running) {
    if (child.exitCode === null && child.pid !== undefined) child.kill('SIGKILL');
  }
  running.clear();
}
process.on('exit', killChildren);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    killChildren();
    process.exit(130);
  });
}

export class Child {
  private readonly process: ChildProcess;
  private readonly waiting = new Map<number, { resolve(value: unknown): void; reject(error: Error): void }>();
  private nextId = 1;
  private readonly ready: Promise<void>;
  private exited: Error | undefined;

  constructor(
    readonly label: string,
    script: string,
    env: Record<string, string | undefined>,
    execArgv: string[] = ['--expose-gc'],
  ) {
    this.process = fork(script, [], {
      env: { ...process.env, NODE_OPTIONS: '', ...env },
      execArgv,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    running.add(this.process);
    this.ready = new Promise((resolve, reject) => {
      this.waiting.set(0, { resolve: () => resolve(), reject });
    });
    this.process.on('message', (reply: Reply) => {
      const waiter = this.waiting.get(reply.id);
      if (waiter === undefined) return;
      this.waiting.delete(reply.id);
      if (reply.ok) waiter.resolve(reply.result);
      else waiter.reject(new Error(`${label}: ${reply.error}`));
    });
    this.process.on('exit', (code, signal) => {
      running.delete(this.process);
      this.exited = new Error(`${label}: process exited (${signal ?? code})`);
      for (const waiter of this.waiting.values()) waiter.reject(this.exited);
      this.waiting.clear();
    });
  }

  async call<T = unknown>(type: string, params: object = {}, timeoutMs = 600_000): Promise<T> {
    await this.ready;
    if (this.exited !== undefined) throw this.exited;
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error(`${this.label}: no answer to ${type} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(id, {
        resolve: (value) => {
          clearTimeout(timer);
          resolve(value as T);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      this.process.send({ id, type, ...params });
    });
  }

  async exit(): Promise<void> {
    if (this.exited !== undefined) return;
    const gone = new Promise<void>((resolve) => this.process.once('exit', () => resolve()));
    await this.call('exit', {}, 10_000).catch(() => undefined);
    const timer = setTimeout(() => this.process.kill('SIGKILL'), 5_000);
    await gone;
    clearTimeout(timer);
  }
}
