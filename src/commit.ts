import type { Expiry } from './expiry';
import type { HeldLock } from './hold';
import type { Eventually } from './lock';
import type { SessionState } from './session';
import type { Storage } from './storage';
import { SessionLockTimeoutError } from './errors';
import type { Reporter } from './events';
import { trace } from './events';

/** What the response does with the session cookie. */
export type CookieAction =
  | { readonly kind: 'none' }
  | { readonly kind: 'expire' }
  | { readonly kind: 'send'; readonly id: string; readonly expiresAt: number };

export const NO_COOKIE: CookieAction = { kind: 'none' };

/** What a request has to write at its end. */
export type CommitPlan =
  /** Nothing to store. */
  | 'none'
  /** destroy() already removed it: only the cookie is left to expire. */
  | 'expire'
  /** A session no store knows yet: first save. */
  | 'create'
  /** New ID for a stored session: save under the new ID, remove the old. */
  | 'regenerate'
  /** Changes to a stored session. */
  | 'update'
  /** No changes, but the idle expiry is due to be pushed out. */
  | 'push'
  /** Nothing to store, but the cookie is re-sent (rolling, or signed with an older key). */
  | 'refresh'
  /** Changes to a stored session when no cookie can go out any more: its expiry is left as stored. */
  | 'update-unpushed'
  /** Changes of a request whose session was removed ahead of it (SessionState.removedAhead): dropped, no cookie. */
  | 'interrupted';

/** `refreshCookie`: re-send the cookie of a live session even when nothing else would. */
export function planCommit(state: SessionState, expiry: Expiry, now: number, refreshCookie: boolean): CommitPlan {
  const changed = state.changes.length > 0;
  if (state.removedAhead !== undefined) return changed || state.destroyed ? 'interrupted' : 'none';
  if (state.destroyed) return changed ? 'create' : 'expire';
  if (state.loadedId === undefined) return changed ? 'create' : 'none';
  if (state.regenerated) return 'regenerate';
  if (changed) return 'update';
  if (expiry.pushDue(state.touchedAt, now)) return 'push';
  return refreshCookie ? 'refresh' : 'none';
}

/**
 * The plan once the response headers are out (a body streamed after
 * ctx.flushHeaders(), ctx.respond = false), when no cookie can be sent any
 * more. Changes to a stored session are still written, its expiry left as
 * stored (see updateUnpushed). A push or a refresh waits for a later
 * request. A new session, or a new ID, that the client could never learn
 * is not stored (`lostCookie` is called): a regenerate() leaves the session
 * as it was (never its new data under the old ID).
 */
export function withoutCookie(plan: CommitPlan, lostCookie: () => void): CommitPlan {
  switch (plan) {
    case 'update':
      return 'update-unpushed';
    case 'interrupted':
    case 'update-unpushed': // never planned by planCommit: listed for a complete switch
      return plan;
    case 'none':
    case 'expire':
    case 'push':
    case 'refresh':
      return 'none';
    case 'create':
    case 'regenerate':
      lostCookie();
      return 'none';
  }
}

export interface CommitScope {
  readonly state: SessionState;
  /** The request's lock on `state.loadedId`; undefined for a session loaded from nowhere. */
  readonly lock: HeldLock | undefined;
  readonly storage: Storage;
  readonly expiry: Expiry;
  /** Tells the app what the commit did, once the store holds it. */
  readonly report: Reporter;
}

/**
 * Carries out `plan` through the store and says what the cookie must do:
 * at once for a new session, or for an update or push under a write hold,
 * when the store answers at once (a MemoryStore); else through a promise.
 * Whenever a commit writes over data this request did not load itself, it
 * holds the exclusive lock and starts from the freshest stored copy: that
 * is what keeps concurrent requests from losing each other's updates.
 */
export function commit(scope: CommitScope, plan: CommitPlan, now: number): Eventually<CookieAction> {
  switch (plan) {
    case 'none':
      return NO_COOKIE;
    case 'expire':
      return { kind: 'expire' };
    case 'interrupted':
      return interrupted(scope);
    case 'create':
      return create(scope, now);
    case 'regenerate':
      return regenerate(scope, now);
    case 'update-unpushed':
      return updateUnpushed(scope, now);
    case 'refresh':
      return refresh(scope, now);
    case 'update':
    case 'push': {
      // A push alone is safe under a shared lock only where the store applies it atomically.
      const upgrading = plan === 'update' || !scope.storage.atomic ? scope.lock?.exclusive() : undefined;
      return upgrading === undefined ? applyChanges(scope, plan, now) : applyAfterUpgrade(scope, plan, upgrading);
    }
  }
}

/** A session no store knows yet: its first save. */
function create(scope: CommitScope, now: number): Eventually<CookieAction> {
  const { state, storage, expiry } = scope;
  const id = state.id; // a regenerate() too late, while the save is under way, must not change the ID the cookie carries
  const created = (): CookieAction => {
    scope.report('session:created', id);
    return { kind: 'send', id, expiresAt: expiry.endsAt(now, now) };
  };
  const saving = storage.save(id, { values: state.values, createdAt: now, touchedAt: now }, expiry.ttl(now, now));
  return saving instanceof Promise ? saving.then(created) : created();
}

async function refresh(scope: CommitScope, now: number): Promise<CookieAction> {
  const { state, storage, expiry } = scope;
  const loadedId = state.loadedId as string;
  // Re-sending the cookie of a session destroyed meanwhile would hand out a dead ID.
  const stored = await storage.load(loadedId, now);
  if (stored === undefined) return interrupted(scope);
  return { kind: 'send', id: loadedId, expiresAt: expiry.endsAt(stored.createdAt, stored.touchedAt) };
}

async function applyAfterUpgrade(scope: CommitScope, plan: 'update' | 'push', upgrading: Promise<void>): Promise<CookieAction> {
  try {
    await upgrading;
  } catch (error) {
    // A push only keeps the session alive: a request that changed nothing does not fail over it; a later one pushes.
    if (plan !== 'push' || !(error instanceof SessionLockTimeoutError)) throw error;
    trace('push-skipped', scope.state.loadedId);
    return NO_COOKIE;
  }
  // By the clock after the wait (see exclusiveAt).
  return applyChanges(scope, plan, Date.now());
}

/**
 * Makes the request's hold exclusive, and says what time it is then:
 * `planned` when the hold already was, else the clock after the wait. A
 * session can reach its end while a commit waits, and must then be found
 * gone, not read, carried on or written back as it was when planned.
 */
async function exclusiveAt(scope: CommitScope, planned: number): Promise<number> {
  const upgrading = scope.lock?.exclusive();
  if (upgrading === undefined) return planned;
  await upgrading;
  return Date.now();
}

/** The request's changes (none for a push) applied to the stored session, its expiry pushed: under the exclusive lock for changes. */
function applyChanges(scope: CommitScope, plan: 'update' | 'push', now: number): Eventually<CookieAction> {
  const { state, storage, expiry } = scope;
  const loadedId = state.loadedId as string;
  const ttl = expiry.ttl(state.createdAt, now);
  const applied = (stored: boolean): CookieAction => {
    if (!stored) return interrupted(scope);
    trace(plan, loadedId);
    return { kind: 'send', id: loadedId, expiresAt: expiry.endsAt(state.createdAt, now) };
  };
  const lock = scope.lock;
  if (storage.readsBack && lock?.hasWaiters() === true) {
    // The next request in line starts from what this commit leaves, read
    // back in the same step, instead of a round trip of its own to load it.
    return storage.applyAndRead(loadedId, state.changes, now, ttl).then((after) => {
      if (after !== undefined) lock.handOver(after);
      return applied(after !== undefined);
    });
  }
  const applying = storage.apply(loadedId, state.changes, now, ttl);
  // instanceof, not typeof 'boolean': a store written in plain JavaScript may answer at once with 1 or 0.
  return applying instanceof Promise ? applying.then(applied) : applied(applying);
}

/**
 * The new ID gets the freshest stored data plus this request's changes, and
 * a new absoluteTimeout lifetime (see Storage.move).
 */
async function regenerate(scope: CommitScope, planned: number): Promise<CookieAction> {
  const { state, storage, expiry } = scope;
  const oldId = state.loadedId as string;
  const newId = state.id; // as in create: a regenerate() too late does not change it
  const now = await exclusiveAt(scope, planned); // else an expired session could live on under the new ID
  if (!(await storage.move(oldId, newId, state.changes, now, expiry.ttl(now, now)))) return interrupted(scope);
  scope.lock?.markRemoved(); // for requests in line behind this one (see LockTable.removalStarted)
  scope.report('session:created', newId);
  scope.report('session:regenerated', newId, oldId);
  return { kind: 'send', id: newId, expiresAt: expiry.endsAt(now, now) };
}

/**
 * Changes to a stored session on a response whose headers are already out.
 * The session's times and expiry stay as stored: pushing the store's expiry
 * without the cookie's would leave the cookie to expire first, logging the
 * user out early, and the next request would not see a push as due.
 */
async function updateUnpushed(scope: CommitScope, planned: number): Promise<CookieAction> {
  const { state, storage, expiry } = scope;
  const loadedId = state.loadedId as string;
  const now = await exclusiveAt(scope, planned);
  // Read again under the exclusive lock: a request may have pushed the expiry since this one loaded.
  const stored = await storage.load(loadedId, now);
  if (stored === undefined) return interrupted(scope);
  const ttl = expiry.ttl(stored.createdAt, stored.touchedAt, now);
  // Written with the stored push time as its own.
  if (!(await storage.apply(loadedId, state.changes, stored.touchedAt, ttl))) return interrupted(scope);
  trace('update-unpushed', loadedId);
  return NO_COOKIE;
}

/**
 * Another request destroyed or regenerated this session while we ran.
 * Writing now would bring back a logged-out session, so this request's
 * changes are dropped and no cookie goes out for the old ID.
 */
function interrupted(scope: CommitScope): CookieAction {
  scope.report('session:interrupted', scope.state.loadedId ?? scope.state.removedAhead);
  return NO_COOKIE;
}
