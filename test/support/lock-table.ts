import { LockTable } from '../../src/lock';
import type { LockMode, Release, WhenGranted } from '../../src/lock';

/** For a spy on LockTable.acquire: what the plain three-argument call gives, the release function itself. */
export const keepRelease: WhenGranted<Release> = (release) => release;

/** A LockTable seen through `await`: acquire always gives a promise, whether the lock was granted at once or not. */
export interface AwaitedLockTable {
  acquire(id: string, mode: LockMode, timeoutMs: number): Promise<Release>;
  /** Makes a shared hold exclusive (see LockTable.upgrade): the shared hold's release is not called after it. */
  upgrade(id: string, timeoutMs: number): Promise<Release>;
  readonly size: number;
}

export function awaitedLockTable(table = new LockTable()): AwaitedLockTable {
  return {
    acquire: (id, mode, timeoutMs) => Promise.resolve(table.acquire(id, mode, timeoutMs)),
    upgrade: (id, timeoutMs) => Promise.resolve(table.upgrade(id, timeoutMs)),
    get size() {
      return table.size;
    },
  };
}
