import { inspect } from 'node:util';
import type { InspectOptionsStylized } from 'node:util';
import type { Failure } from './context';
import type { Change, StoredSession } from './stores/store';
import { assignOwn, copyValue, valueOf } from './values';

/** What the middleware lends a Session for the two operations that reach out. */
export interface SessionHooks {
  /** A fresh ID from the configured generator. */
  newId(): string;
  /** Removes the stored session `id` from the store (resolves once removed). */
  removeStored(id: string): Promise<void>;
  /** `method` changed the session after its commit began: the change is lost (see Session.#tooLate). */
  changedTooLate(method: string): void;
}

/**
 * Everything the middleware needs to commit a request's session. The
 * Session object is the handler's view of it.
 */
export interface SessionState {
  /** The current ID: changed by regenerate(), and by a set() after destroy(). */
  id: string;
  /** The ID whose stored record this request loaded; undefined for a new session. */
  readonly loadedId: string | undefined;
  /** Stored meta of the loaded record; touchedAt is -Infinity when no push time is known (StoredSession.foreign). */
  readonly createdAt: number;
  readonly touchedAt: number;
  /** The values by key; a loaded value may still be JSON text (see JsonText) until it is read. */
  readonly values: Map<string, unknown>;
  /** Every set/delete/clear since load (or since destroy()), in order, replayed at commit. */
  changes: Change[];
  regenerated: boolean;
  /** destroy() was called: the loaded record is gone from the store. */
  destroyed: boolean;
  /** A destroy() under way: the commit waits for it, awaited by the handler or not (see Session.destroy). */
  destroying: Promise<void> | undefined;
  /** The store failed to remove the session (and no destroy() since succeeded): the request fails with this. */
  removalFailure: RemovalFailure | undefined;
  /** After destroy(), the next set() starts a new session under a new ID. */
  needsNewId: boolean;
  /**
   * The ID this request came with, when a request ahead of it in line
   * removed that session (a logout, or a login) before this one could load
   * it: this request then runs on an empty session and commits nothing.
   */
  readonly removedAhead: string | undefined;
  /** The middleware has begun committing: a change now would be lost (see Session.#tooLate). */
  committing: boolean;
}

/**
 * A removal the store failed (see Session.destroy): the request fails with
 * its error, and commits the session as the first failed destroy() found
 * it. What the handler changed since that destroy() was called (while the
 * removal ran, or after it failed) goes with the failure: a login that
 * caught it and went on would otherwise be saved under the ID it meant to
 * retire (one an attacker may have planted).
 */
export interface RemovalFailure extends Failure {
  /** The session when the first failed destroy() was called: what the commit saves. */
  readonly before: SessionState;
}

/** The state of a new session under `id`, or of the session `loaded` from the store under `id`. */
export function newState(id: string, loaded?: StoredSession): SessionState {
  return {
    id,
    loadedId: loaded === undefined ? undefined : id,
    createdAt: loaded?.createdAt ?? 0,
    // No push time known (a record the library did not write): a push is due at once (see planCommit).
    touchedAt: loaded === undefined ? 0 : loaded.foreign === true ? Number.NEGATIVE_INFINITY : loaded.touchedAt,
    values: loaded === undefined ? new Map() : loaded.values,
    changes: [],
    regenerated: false,
    destroyed: false,
    destroying: undefined,
    removalFailure: undefined,
    needsNewId: false,
    removedAhead: undefined,
    committing: false,
  };
}

/** The state of a request whose session `removedId` a request ahead of it removed (see SessionState.removedAhead). */
export function stateAfterRemoval(id: string, removedId: string): SessionState {
  return { ...newState(id), removedAhead: removedId };
}

function checkKey(key: unknown): asserts key is string {
  if (typeof key !== 'string') throw new TypeError('koa-locked-session: session keys must be strings');
}

/**
 * The types of the session's values, for the app to declare by key:
 *
 *     declare module 'koa-locked-session' {
 *       interface SessionValues { userId: string; views: number }
 *     }
 *
 * Then `get('userId')` is a `string | undefined`, and `set('views', 'x')`
 * does not compile. Keys not declared take any value, as before. Types
 * only: at run time a value is checked as any other (see set()).
 */
export interface SessionValues {}

/** The keys the app has declared in SessionValues. */
type DeclaredKey = keyof SessionValues & string;

/**
 * What set() takes under `key`: its declared type, or any value for a key
 * not declared. Resolved at once when the app declares nothing, so that
 * code generic over the key (`<K extends string>`) compiles as before.
 */
type SessionValue<K extends string> = [DeclaredKey] extends [never] ? unknown : K extends DeclaredKey ? SessionValues[K] : unknown;

/** The session of one request: `ctx.session`. */
export class Session {
  readonly #state: SessionState;
  readonly #hooks: SessionHooks;
  readonly #isNew: boolean;

  constructor(state: SessionState, hooks: SessionHooks) {
    this.#state = state;
    this.#hooks = hooks;
    this.#isNew = state.loadedId === undefined;
  }

  /**
   * A change once the commit has begun (code after `await next()` in an
   * outer middleware, a task the handler did not await) can no longer be
   * saved. Throwing then would lose the response's cookie, or crash the
   * process from a task nobody awaits: the middleware warns instead, and
   * this says it is too late. set(), delete() and clear() then change
   * nothing: a commit that waits for the exclusive lock reads the change log
   * after its wait, so a change let in meanwhile would be saved after all,
   * and one after a failed removal would reach the session the handler
   * meant to retire (see RemovalFailure).
   */
  #tooLate(method: string): boolean {
    if (!this.#state.committing) return false;
    this.#hooks.changedTooLate(method);
    return true;
  }

  /** The session ID (64 lowercase hex characters with the default generator). */
  get id(): string {
    return this.#state.id;
  }

  /** True when no stored session was loaded for this request. */
  get isNew(): boolean {
    return this.#isNew;
  }

  /** True when this request has changes to commit. */
  get changed(): boolean {
    return this.#state.changes.length > 0;
  }

  /** A copy of the value under `key`: changing it does not change the session. */
  get<K extends DeclaredKey>(key: K): SessionValues[K] | undefined;
  get<T = unknown>(key: string): T | undefined;
  get(key: string): unknown {
    return valueOf(this.#state.values.get(key));
  }

  /**
   * Stores a copy of `value` under `key`. Throws a TypeError, keeping the
   * previous value, for anything JSON would not carry back unchanged.
   */
  set<K extends DeclaredKey>(key: K, value: SessionValues[K]): void;
  set<K extends string>(key: K, value: SessionValue<K>): void;
  set(key: string, value: unknown): void {
    if (this.#tooLate('set')) return;
    checkKey(key);
    const copy = copyValue(value, key);
    const state = this.#state;
    if (state.needsNewId) {
      state.id = this.#hooks.newId();
      state.needsNewId = false;
    }
    state.values.set(key, copy);
    state.changes.push({ op: 'set', key, value: copy });
  }

  has(key: string): boolean {
    return this.#state.values.has(key);
  }

  delete(key: string): void {
    if (this.#tooLate('delete')) return;
    checkKey(key);
    // Deleting what this request cannot see is no change at all.
    if (!this.#state.values.delete(key)) return;
    this.#state.changes.push({ op: 'delete', key });
  }

  /** Empties the data; the (empty) session stays, with its cookie. */
  clear(): void {
    if (this.#tooLate('clear')) return;
    if (this.#state.values.size === 0) return;
    this.#state.values.clear();
    this.#state.changes.push({ op: 'clear' });
  }

  keys(): string[] {
    return [...this.#state.values.keys()];
  }

  /** A copy of the data. */
  toJSON(): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const [key, slot] of this.#state.values) assignOwn(out, key, valueOf(slot));
    return out;
  }

  /**
   * What `console.log(ctx.session)` and `util.inspect` show: the flags and
   * a copy of the data. Not the ID: it is the user's credential, and logs
   * are read by more people than the database is.
   */
  [inspect.custom](_depth: number, options: InspectOptionsStylized, inspectValue: typeof inspect): string {
    return `Session ${inspectValue({ isNew: this.#isNew, changed: this.changed, data: this.toJSON() }, options)}`;
  }

  /**
   * Gives the session a fresh ID at once, keeping its data. The old ID is
   * removed from the store before the response is sent, and the response
   * carries the new one. Call it after login and any privilege change.
   */
  regenerate(): Promise<void> {
    if (typeof arguments[0] === 'function') throw callbackRefused('regenerate');
    return this.#regenerate();
  }

  async #regenerate(): Promise<void> {
    const state = this.#state;
    this.#tooLate('regenerate');
    state.id = this.#hooks.newId();
    state.needsNewId = false;
    if (!state.destroyed) state.regenerated = true;
  }

  /**
   * Removes the session from the store (resolves once it is removed) and
   * empties it; the response expires the cookie. A later set() starts a new
   * session under a new ID. The commit waits for it even when the handler
   * does not, and a failure to remove fails the request.
   */
  destroy(): Promise<void> {
    if (typeof arguments[0] === 'function') throw callbackRefused('destroy');
    this.#tooLate('destroy');
    const state = this.#state;
    // Kept until it settles: a second call meanwhile waits for the same removal, and the commit waits
    // for one the handler did not await, so a logout that forgot `await` still expires the cookie.
    if (state.destroying !== undefined) {
      // What the handler did since the first call (a set() starting the new session) goes too.
      if (!state.committing) emptyForDestroy(state);
    } else {
      const destroying = this.#destroy();
      state.destroying = destroying;
      // Also marks a rejection as handled: the middleware takes a failure up (removalFailure), so a
      // handler that forgot `await` fails its request, not the process; nor does a destroy() from a
      // task the handler did not await, once the commit began (too late for the cookie: a warning).
      const settled = (): void => {
        state.destroying = undefined;
      };
      destroying.then(settled, settled);
    }
    return state.destroying;
  }

  async #destroy(): Promise<void> {
    const state = this.#state;
    const removing = state.loadedId !== undefined && !state.destroyed ? state.loadedId : undefined;
    // Emptied at once, as regenerate() changes the ID at once: what the handler does next, with
    // `await` or without, belongs to the session after it (a set() starts one under a new ID).
    const before = removing === undefined ? undefined : { ...state, values: new Map(state.values) };
    // Too late (the commit began): the commit may still read the change log and data after this, so
    // they are left to it, and emptied only once the removal is done, as before destroy() emptied at once.
    const late = state.committing;
    if (!late) emptyForDestroy(state);
    if (before !== undefined) {
      try {
        await this.#hooks.removeStored(before.loadedId as string);
      } catch (error) {
        // Not removed: the session is as it was, and what the handler did since goes with the request's failure.
        restore(state, before);
        state.removalFailure = { error, before: state.removalFailure?.before ?? before };
        throw error;
      }
    }
    if (late) emptyForDestroy(state);
    state.removalFailure = undefined;
    state.destroyed = true;
    state.regenerated = false; // a regenerate() meanwhile names the new session, as it does after destroy()
  }
}

/** What every destroy() call does at once: the session is empty, and a set() starts one under a new ID. */
function emptyForDestroy(state: SessionState): void {
  state.regenerated = false;
  state.needsNewId = true;
  state.values.clear();
  state.changes = [];
}

/** Before the commit: the session as the failed removal found it, when one failed (see RemovalFailure). */
export function undoChangesSinceFailedRemoval(state: SessionState): void {
  if (state.removalFailure !== undefined) restore(state, state.removalFailure.before);
}

/** Puts back what destroy() emptied, from `before` (a copy of the state when destroy() was called), which stays as it is. */
function restore(state: SessionState, before: SessionState): void {
  state.id = before.id;
  state.regenerated = before.regenerated;
  state.needsNewId = before.needsNewId;
  state.changes = [...before.changes];
  state.values.clear();
  for (const [key, slot] of before.values) state.values.set(key, slot);
}

/**
 * express-session's regenerate(cb) and destroy(cb), and koa-session's
 * regenerate(cb), call back when done: here the callback would never be
 * called, and what it does (a set() after a login) never done. Thrown at
 * once, not as a rejection, which code that does not await would leave
 * unhandled.
 */
function callbackRefused(method: string): TypeError {
  return new TypeError(`koa-locked-session: ctx.session.${method}() takes no callback; it returns a promise: await ctx.session.${method}(), then go on`);
}
