import { spawn } from 'node:child_process';
import path from 'node:path';

/**
 * Runs a Node script that can require('./src') (the TypeScript sources);
 * resolves with its exit code, or 'still running' when it has not exited
 * by itself within `timeoutMs` (it is killed then).
 */
export function runChild(script: string, timeoutMs: number): Promise<number | 'still running'> {
  const root = path.resolve(__dirname, '..', '..');
  const child = spawn(process.execPath, ['-r', 'ts-node/register/transpile-only', '-e', script], {
    cwd: root,
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      resolve('still running');
    }, timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve(code ?? -1);
    });
  });
}
