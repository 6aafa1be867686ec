import { LockTable } from '../../src/lock';
import type { LockMode, Release } from '../../src/lock';

/** A LockTable seen through `await`: acquire always gives a promise, whether the lock was granted at once or not. */
export interface AwaitedLockTable {
  acquire(id: string, mode: LockMode, timeoutMs: number): Promise<Release>;
  readonly size: number;
}

export function awaitedLockTable(table = new LockTable()): AwaitedLockTable {
  return {
    acquire: (id, mode, timeoutMs) => Promise.resolve(table.acquire(id, mode, timeoutMs)),
    get size() {
      return table.size;
    },
  };
}
