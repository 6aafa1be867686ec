import { performance } from 'node:perf_hooks';
import { Semaphore } from 'async-mutex';
import { SessionLockTimeoutError } from './errors';
import { trace } from './events';
import type { StoredSession } from './stores/store';

/** `'read'` is shared, `'write'` is exclusive. */
export type LockMode = 'read' | 'write';

/**
 * Gives a granted lock back. Calling it again does nothing. A writer may
 * hand over the session as it left it in the store (see ReadWriteLock.handedOver).
 */
export type Release = (handOver?: StoredSession) => void;

/**
 * What a caller makes of a granted lock, the moment it is granted (see
 * LockTable.acquire); `queued`: after waiting in line. It must not throw:
 * for a request that waited, it runs inside the release of the request
 * before it.
 */
export type WhenGranted<T> = (release: Release, queued: boolean) => T;

/**
 * A request in line for a lock. When its lockTimeout passes it gives up:
 * at the head of the line, waiting for the holders to leave, it leaves the
 * line at once, so that readers behind it can join the readers holding the
 * lock instead of waiting for a writer that is no longer there.
 */
interface Waiter {
  gaveUp: boolean;
  /** Leaves the line; set while the waiter is at its head, waiting for the holders to leave. */
  leave: (() => void) | undefined;
  /** Called once: true when the lock is granted, false when the waiter gave up first. */
  readonly settle: (granted: boolean) => void;
}

/**
 * One session's read/write lock. `readers` and `writing` say who holds it;
 * those who cannot have it at once queue in `line`, an async-mutex
 * semaphore of one unit, i.e. a mutex, which serves them in arrival order:
 * - The head of the line holds the line's unit until it is granted (a
 *   writer: until every holder has left; a reader: until the writer has),
 *   so readers that arrive after a waiting writer queue behind it: no
 *   writer starvation, first come first served.
 * - Only the head ever waits for the holders to leave, so one slot,
 *   `head`, is all the waiting the line does: the last holder out wakes it.
 * Most locks are never waited for, so the semaphore is made only when a
 * request first has to wait.
 *
 * A reader that changed the session makes its hold exclusive at commit
 * (see upgrade) ahead of the line: everyone in line came after it, and a
 * writer that queued behind its shared hold must find its changes saved,
 * not have them written over its own afterwards. Such readers wait outside
 * the line, in `upgraders`, and the head of the line waits for them too.
 */
class ReadWriteLock {
  private line: Semaphore | undefined;
  /** Set while the head of the line waits for the holders (and upgraders) to leave: what it waits for, and its wake-up. */
  private head: { readonly mode: LockMode; readonly wake: () => void } | undefined;
  /** The grants of the readers that gave up their shared hold for the exclusive one, in the order they asked (see upgrade); made when first needed. */
  private upgraders: (() => void)[] | undefined;
  private readers = 0;
  private writing = false;
  /** Requests holding or waiting for this lock. */
  users = 0;
  /**
   * The session as the writer that just gave the lock back left it in the
   * store (its commit read it back in the same step), for the next request
   * in line to start from instead of loading it again (see
   * LockTable.takeHandOver). Every writer's release replaces it, with
   * nothing when it left nothing.
   */
  handedOver: StoredSession | undefined;
  /**
   * Requests whose ticket (see SessionLocks.acquire) is at most this had
   * asked for the lock while a holder that removed the session from the
   * store still held it: see LockTable.removalStarted.
   */
  removedBefore = 0;
  /** Holders that removed the session and still hold the lock. */
  removersHolding = 0;
  /** A holder's destroy() has removed the session and said so (see LockTable.claimDestroyReport). */
  destroyReported = false;

  /**
   * Grants `mode` within this call when nobody would wait for it: the line
   * is empty and nobody holds the lock (or, for a reader, only readers do,
   * none of them waiting to make its hold exclusive). Most requests get
   * their lock this way, without a trip through the line.
   */
  tryTake(mode: LockMode): boolean {
    // The head of the line holds the line's unit: a free line means nobody is queued.
    if (this.line?.isLocked() === true || !this.isFreeFor(mode)) return false;
    this.hold(mode);
    return true;
  }

  /** Queues for `mode`: `waiter.settle` says when it is granted, or that the waiter gave up first. */
  queue(mode: LockMode, waiter: Waiter): void {
    const line = (this.line ??= new Semaphore(1));
    void line.acquire().then(([, nextInLine]) => this.atHead(mode, waiter, nextInLine));
  }

  /** Gives `mode` back; the last holder out lets in the first reader making its hold exclusive, else wakes the head of the line. */
  give(mode: LockMode): void {
    if (mode === 'write') this.writing = false;
    else if (--this.readers > 0) return;
    const upgrader = this.upgraders?.shift();
    if (upgrader === undefined) return this.wakeHead();
    this.writing = true;
    upgrader();
  }

  /**
   * Gives up a shared hold for the exclusive one, before anyone in line:
   * true when granted within this call, else `granted` is called once the
   * other readers have left (or made their holds exclusive in turn, each
   * after the one before it). A reader keeping its shared hold while it
   * waited would wait for ever for another doing the same.
   */
  upgrade(granted: () => void): boolean {
    const upgraders = (this.upgraders ??= []);
    upgraders.push(granted);
    this.give('read');
    return !upgraders.includes(granted);
  }

  /** An upgrade that gave up before it was granted no longer holds up the head of the line (see isFreeFor). */
  dropUpgrade(granted: () => void): void {
    const at = this.upgraders?.indexOf(granted) ?? -1;
    if (at >= 0) this.upgraders?.splice(at, 1);
    if (this.head !== undefined && this.isFreeFor(this.head.mode)) this.wakeHead();
  }

  private get upgrading(): boolean {
    return this.upgraders !== undefined && this.upgraders.length > 0;
  }

  private wakeHead(): void {
    const head = this.head;
    this.head = undefined;
    head?.wake();
  }

  /**
   * The waiter is at the head of the line. async-mutex cannot drop a
   * waiter from its line, so one that gave up still comes to the head, and
   * leaves it to the next in line. A writer, or a reader while a writer
   * holds the lock, stays at the head until the holders leave.
   */
  private atHead(mode: LockMode, waiter: Waiter, nextInLine: () => void): void {
    if (waiter.gaveUp) {
      nextInLine();
      return waiter.settle(false);
    }
    if (this.isFreeFor(mode)) return this.grant(mode, waiter, nextInLine);
    this.head = {
      mode,
      wake: () => {
        waiter.leave = undefined;
        this.grant(mode, waiter, nextInLine);
      },
    };
    waiter.leave = () => {
      waiter.leave = undefined;
      this.head = undefined;
      nextInLine();
      waiter.settle(false);
    };
  }

  private grant(mode: LockMode, waiter: Waiter, nextInLine: () => void): void {
    this.hold(mode);
    nextInLine();
    waiter.settle(true);
  }

  private isFreeFor(mode: LockMode): boolean {
    if (this.writing || this.upgrading) return false;
    return mode === 'read' || this.readers === 0;
  }

  private hold(mode: LockMode): void {
    if (mode === 'read') this.readers++;
    else this.writing = true;
  }
}

/**
 * How long after a session's remover let go of it a request that comes
 * with its ID still counts as one sent before the removal (see
 * LockTable.removedLately): as RedisStore's CLOCK_MARGIN_MS.
 */
const RECENT_REMOVAL_MS = 500;

/**
 * One read/write lock per session ID, alive only while some request holds
 * or waits for it: the entry is deleted when its last user leaves, so memory
 * does not grow with the number of distinct sessions ever seen.
 */
export class LockTable {
  private readonly entries = new Map<string, ReadWriteLock>();
  /** Requests that have asked for a lock so far: each one's number is its ticket (see removalStarted). */
  private tickets = 0;
  /**
   * When the removers of sessions removed lately let go of them, oldest
   * first: see removedLately. On the monotonic clock (performance.now()):
   * a wall clock set back would keep them "lately" removed, and the map
   * unpruned, for as long as it was set back.
   */
  private readonly removals = new Map<string, number>();

  /** See servingMark. */
  private readonly servingMarks = new Map<string, object>();

  /** The ticket of a request about to ask for a lock. */
  nextTicket(): number {
    return ++this.tickets;
  }

  /**
   * One object per cookie name: middlewares of this table with that cookie
   * serve the same session of a request, and one nested in another must
   * not ask for the lock its outer one holds (it would wait for ever).
   */
  servingMark(cookieName: string): object {
    let mark = this.servingMarks.get(cookieName);
    if (mark === undefined) {
      mark = {};
      this.servingMarks.set(cookieName, mark);
    }
    return mark;
  }

  /** The cookies of the middlewares on this table other than `cookieName` (see servingMark). */
  otherCookies(cookieName: string): string[] {
    return [...this.servingMarks.keys()].filter((name) => name !== cookieName);
  }

  /** How many sessions have a lock held or waited for right now. */
  get size(): number {
    return this.entries.size;
  }

  /** Whether more than one request holds or waits for `id`'s lock: for a writer, who holds it alone, others are waiting. */
  isWaitedFor(id: string): boolean {
    return (this.entries.get(id)?.users ?? 0) > 1;
  }

  /**
   * What the writer before handed over for `id` (see
   * ReadWriteLock.handedOver), taken by the next request the line lets
   * in, the moment it is granted: that one starts from it, nobody later
   * does. A request that reaches the head of the line first having given
   * up drops it (see dropWaiter), and then nobody does. A request that
   * joins readers later, or another reader of the same group, loads the
   * session, and sees what other processes wrote since.
   */
  takeHandOver(id: string): StoredSession | undefined {
    const lock = this.entries.get(id);
    if (lock === undefined) return undefined;
    const handedOver = lock.handedOver;
    lock.handedOver = undefined;
    return handedOver;
  }

  /**
   * Notes that a request holding `id`'s lock has removed the session from
   * the store (a logout, or a login's regenerate or destroy-and-set). Any
   * request that finds the session gone while the remover still holds the
   * lock (queued behind it, or a reader sharing it) must not start a
   * session of its own: its cookie would replace the one the logout or
   * login sends. See removalDone for those that asked before it let go.
   */
  removalStarted(id: string): void {
    const lock = this.entries.get(id);
    if (lock !== undefined) lock.removersHolding++;
  }

  /**
   * The remover gives the lock back: requests with the tickets handed out
   * so far asked while it held the lock, and are still behind the removal
   * when they get their turn.
   */
  removalDone(id: string): void {
    this.rememberRemoval(id, performance.now());
    const lock = this.entries.get(id);
    if (lock === undefined) return;
    lock.removersHolding--;
    lock.removedBefore = this.tickets;
  }

  /**
   * True for the first holder of `id`'s lock whose destroy() removed the
   * session, false for the others: two logouts at once (in read mode, or
   * one queued behind the other) remove one session, and the app hears of
   * it once.
   */
  claimDestroyReport(id: string): boolean {
    const lock = this.entries.get(id);
    if (lock === undefined) return true;
    if (lock.destroyReported) return false;
    lock.destroyReported = true;
    return true;
  }

  /**
   * Whether the request with `ticket` asked for `id`'s lock, or finds the
   * session gone, while a holder that removed it held the lock, or just
   * after (see removedLately).
   */
  removedAfterAsking(id: string, ticket: number): boolean {
    const lock = this.entries.get(id);
    if (lock !== undefined && (lock.removersHolding > 0 || ticket <= lock.removedBefore)) return true;
    return this.removedLately(id, performance.now());
  }

  /**
   * Whether `id`'s remover let go of it less than RECENT_REMOVAL_MS ago.
   * A request that comes with the removed ID then was sent before its
   * client heard of the logout or the login (another tab's request still
   * on its way): it is behind the removal as much as one that waited in
   * line, and a session it started would send a cookie that replaces the
   * one the login just sent. RedisStore.removedSince gives other processes
   * the same margin.
   */
  private removedLately(id: string, now: number): boolean {
    const at = this.removals.get(id);
    return at !== undefined && now - at <= RECENT_REMOVAL_MS;
  }

  /** Notes that `id`'s remover let go of it at `now`, forgetting removals older than RECENT_REMOVAL_MS. */
  private rememberRemoval(id: string, now: number): void {
    this.removals.delete(id); // re-added last, keeping the map in time order
    this.removals.set(id, now);
    for (const [old, at] of this.removals) {
      if (now - at <= RECENT_REMOVAL_MS) break;
      this.removals.delete(old);
    }
  }

  /**
   * Takes `mode` on `id`'s lock. Returns the release function itself when
   * the lock is granted at once; otherwise a promise of it, which rejects
   * with SessionLockTimeoutError after `timeoutMs` (`Infinity` waits for
   * ever).
   *
   * With `whenGranted`, what it makes of the release function instead,
   * called the moment the lock is granted. A caller that builds on the
   * grant does so there, so that a request that waits costs one promise,
   * not one per layer above.
   */
  acquire(id: string, mode: LockMode, timeoutMs: number): Eventually<Release>;
  acquire<T>(id: string, mode: LockMode, timeoutMs: number, whenGranted: WhenGranted<T>): Eventually<T>;
  acquire<T>(id: string, mode: LockMode, timeoutMs: number, whenGranted?: WhenGranted<T>): Eventually<T | Release> {
    let lock = this.entries.get(id);
    if (lock === undefined) {
      lock = new ReadWriteLock();
      this.entries.set(id, lock);
    }
    lock.users++;
    if (lock.tryTake(mode)) return handOut(whenGranted, this.releaser(id, lock, mode), false);
    trace('lock-wait', id, mode);
    return new Promise<T | Release>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const waiter: Waiter = {
        gaveUp: false,
        leave: undefined,
        settle: (granted) => {
          if (!granted) return this.dropWaiter(id, lock);
          clearTimeout(timer);
          resolve(handOut(whenGranted, this.releaser(id, lock, mode), true));
        },
      };
      // A waiter without a timeout never gives up, so it always ends granted.
      if (timeoutMs !== Infinity) {
        timer = setTimeout(() => {
          waiter.gaveUp = true;
          reject(new SessionLockTimeoutError(timeoutMs));
          waiter.leave?.();
        }, timeoutMs);
      }
      lock.queue(mode, waiter);
    });
  }

  /**
   * Makes the caller's shared hold on `id` exclusive, ahead of the requests
   * in line (see ReadWriteLock.upgrade): the release of the exclusive hold,
   * at once when the caller was the last reader, else a promise of it. The
   * caller's shared hold is gone either way (its release must not be
   * called); after `timeoutMs` the promise rejects with
   * SessionLockTimeoutError, and the caller holds nothing.
   */
  upgrade(id: string, timeoutMs: number): Eventually<Release> {
    const lock = this.entries.get(id) as ReadWriteLock; // the caller's hold keeps it in the table
    let resolveGrant: (() => void) | undefined;
    const granted = (): void => resolveGrant?.();
    if (lock.upgrade(granted)) return this.releaser(id, lock, 'write');
    trace('lock-wait', id, 'write');
    return new Promise<Release>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      resolveGrant = () => {
        clearTimeout(timer);
        resolve(this.releaser(id, lock, 'write'));
      };
      if (timeoutMs !== Infinity) {
        timer = setTimeout(() => {
          lock.dropUpgrade(granted);
          this.leave(id, lock);
          reject(new SessionLockTimeoutError(timeoutMs));
        }, timeoutMs);
      }
    });
  }

  /** A waiter that gave up leaves the lock it never held. */
  private dropWaiter(id: string, lock: ReadWriteLock): void {
    // Dropped: what a writer handed over was meant for the next request in line, perhaps this one,
    // and a later one must not start from it (one that finds nothing handed over loads the session).
    lock.handedOver = undefined;
    this.leave(id, lock);
  }

  private releaser(id: string, lock: ReadWriteLock, mode: LockMode): Release {
    let done = false;
    return (handOver) => {
      if (done) return;
      done = true;
      // The last user drops the whole entry: nobody is left to hand it to.
      if (this.leave(id, lock)) return;
      if (mode === 'write') lock.handedOver = handOver;
      lock.give(mode);
    };
  }

  /** One user fewer for `id`'s lock; the last drops the entry (true then). */
  private leave(id: string, lock: ReadWriteLock): boolean {
    if (--lock.users > 0) return false;
    this.entries.delete(id);
    return true;
  }
}

function handOut<T>(whenGranted: WhenGranted<T> | undefined, release: Release, queued: boolean): T | Release {
  return whenGranted === undefined ? release : whenGranted(release, queued);
}

/**
 * A value now, or a promise of it when it has to be waited for. The
 * request path (lock, load, commit) returns these so that a request that
 * need not wait pays for no promise round trip; callers `await` only when
 * they get a promise.
 */
export type Eventually<T> = T | Promise<T>;

/** The lock tables of each store, by whether the store sees hashed IDs: see lockTableOf. */
const tablesByStore = new WeakMap<object, Map<boolean, LockTable>>();

/**
 * The lock table that every middleware on `store` shares: two session()
 * middlewares on one store (one per router, say) lock the same sessions, so
 * they must wait for each other as requests of one middleware do. One with
 * `hashIds` and one without keep a given ID's session under different keys:
 * different records, so different tables (a hand-over must not cross).
 */
export function lockTableOf(store: object, hashIds: boolean): LockTable {
  let tables = tablesByStore.get(store);
  if (tables === undefined) {
    tables = new Map();
    tablesByStore.set(store, tables);
  }
  let table = tables.get(hashIds);
  if (table === undefined) {
    table = new LockTable();
    tables.set(hashIds, table);
  }
  return table;
}
