import type { Context } from 'koa';
import type { Failure } from './context';
import { takeBackSession } from './context';
import type { CookieAction, CommitPlan } from './commit';
import { NO_COOKIE, commit, planCommit, withoutCookie } from './commit';
import type { CookieRead, SessionCookie } from './cookie';
import { keepCookieOnError } from './error-headers';
import type { Reporter } from './events';
import { report, reportIfTimedOut, tellAppOf } from './events';
import type { Expiry } from './expiry';
import { generateId } from './ids';
import type { Eventually } from './lock';
import type { Opened } from './opening';
import type { ResolvedOptions } from './options';
import { Session, undoChangesSinceFailedRemoval } from './session';
import type { Storage } from './storage';
import type { Warnings } from './warnings';

/** What one session middleware gives each of its requests. */
export interface RequestParts {
  readonly options: ResolvedOptions;
  readonly expiry: Expiry;
  readonly storage: Storage;
  readonly sessionCookie: SessionCookie;
  readonly warnings: Warnings;
  readonly changedTooLate: (method: string) => void;
  readonly lostCookie: () => void;
}

/**
 * One request's part in its session's life, once the session is open
 * (locked and loaded): what its handler did, the commit and unlock, the
 * cookie. The middleware (middleware.ts) takes these steps in order.
 */
export class SessionRequest {
  readonly session: Session;
  /** What the handler threw: its changes are committed all the same, like a statement already made. */
  private failure: Failure | undefined;
  /**
   * What a listener threw once the store had changed (a session created,
   * regenerated, destroyed): kept until the cookie that goes with the
   * change is on the response, so that it cannot keep the client from it.
   */
  private listenerFailure: Failure | undefined;
  /** A failed removal the request does not fail with: the app hears of it once the cookie is sent. */
  private unheardRemovalFailure: Failure | undefined;
  /** The token of the removals this request made while holding the lock (see unlockNow). */
  private removalToken: string | undefined;
  /** Once the middleware is done there is no cookie left to keep: a listener's error goes to the caller. */
  private finished = false;
  /** Whether a replaced ctx.session was taken back (see unfinishedWork). */
  private tookBack = false;

  constructor(
    private readonly ctx: Context,
    private readonly opened: Opened,
    private readonly parts: RequestParts,
  ) {
    this.session = new Session(opened.state, {
      newId: parts.options.genid,
      removeStored: (id) => this.removeStored(id),
      changedTooLate: parts.changedTooLate,
    });
  }

  /** Tells the app of an event; see listenerFailure. */
  private readonly tell: Reporter = (event, id, oldId) => {
    if (this.finished) return report(this.ctx, event, id, oldId);
    try {
      report(this.ctx, event, id, oldId);
    } catch (error) {
      if (this.listenerFailure === undefined) this.listenerFailure = { error };
      else tellAppOf(this.ctx, error);
    }
  };

  private async removeStored(id: string): Promise<void> {
    const lock = this.opened.lock;
    // Marked first: a store may drop the session before it answers, and a request sharing
    // the lock that finds it gone meanwhile must already see why (see LockTable.removalStarted).
    lock?.markRemoved();
    // Holding the lock, it says when it is done (see unlockNow): other processes wait for that.
    if (lock?.removedTheSession === true) this.removalToken ??= generateId();
    await this.parts.storage.remove(id, this.removalToken);
    if (lock === undefined || lock.claimDestroyReport()) this.tell('session:destroyed', id);
  }

  /** The handler threw `error`. */
  handlerFailed(error: unknown): void {
    this.failure = { error };
  }

  /**
   * What the handler left under way, for the middleware to wait for before
   * the commit: first a replaced ctx.session to take back (see takeBack),
   * then each destroy() it did not await, so that the commit sees the
   * session gone. Undefined once nothing is.
   */
  unfinishedWork(): Promise<void> | undefined {
    const { ctx, session } = this;
    // Taken back once: a ctx.session that does not keep what is put in it (an accessor of koa-session's
    // left installed in front) would never read back as this session.
    if (!this.tookBack && ctx.session !== session) {
      this.tookBack = true;
      return takeBackSession(ctx, session, this.parts.warnings);
    }
    return this.opened.state.destroying?.catch(() => undefined);
  }

  /** After the handler and what it left under way: the session as it left it, ready to commit. */
  settle(): void {
    const { ctx, session } = this;
    const state = this.opened.state;
    // The store failed to remove the session: the request fails (SPEC: a store failure is a 503), whether
    // the handler awaited destroy() or not, caught its error or not. The session is committed as the first
    // failed destroy() found it (see RemovalFailure).
    // With the headers out, failing would only keep Koa from sending the body (a stream would hang), and the handler's
    // own error goes first: either way the app hears of it once the commit is done (see failedCommit and failIfFailed).
    const removalFailure = state.removalFailure;
    undoChangesSinceFailedRemoval(state);
    if (removalFailure !== undefined && removalFailure.error !== this.failure?.error) {
      if (this.failure === undefined && !ctx.res.headersSent) this.failure = removalFailure;
      else this.unheardRemovalFailure = removalFailure;
    }
    for (const assigned of Object.keys(session)) this.parts.warnings.property(assigned); // ctx.session.views = 1, as koa-session is used
  }

  /**
   * Commits what the request did, then lets go of the lock: at once when
   * both answer at once (a MemoryStore, a lock nobody waits for), as most
   * requests find them. A failed commit fails the request, unless the
   * headers are out: then the response stands, and the app hears of it.
   */
  commitAndUnlock(cookie: CookieRead): Eventually<CookieAction> {
    const { ctx, parts } = this;
    const state = this.opened.state;
    state.committing = true;
    const now = Date.now();
    const refreshCookie = parts.options.rolling || (cookie.state === 'valid' && cookie.resign);
    const planned = planCommit(state, parts.expiry, now, refreshCookie);
    const sentBeforeCommit = ctx.res.headersSent; // a streamed body, ctx.respond = false: see withoutCookie
    const plan = sentBeforeCommit ? withoutCookie(planned, parts.lostCookie) : planned;
    let committing: Eventually<CookieAction>;
    try {
      committing = plan === 'none' ? NO_COOKIE : this.commit(plan, now, sentBeforeCommit);
    } catch (caught) {
      return this.failedCommit(caught, sentBeforeCommit);
    }
    if (committing instanceof Promise) {
      return committing.then(
        (action) => this.unlock(action),
        (caught: unknown) => this.failedCommit(caught, sentBeforeCommit),
      );
    }
    return this.unlock(committing);
  }

  private commit(plan: Exclude<CommitPlan, 'none'>, now: number, sentBeforeCommit: boolean): Eventually<CookieAction> {
    const { state, lock } = this.opened;
    const { storage, expiry, sessionCookie } = this.parts;
    // Refuse before writing anything when the cookie could not be sent (an interrupted commit sends none).
    if (!sentBeforeCommit && plan !== 'interrupted') sessionCookie.assertCanBeSent(this.ctx);
    return commit({ state, lock, storage, expiry, report: this.tell }, plan, now);
  }

  /**
   * Throws the commit's error, having told the app of the others; with the
   * headers out, tells the app of it instead, and the response stands
   * without a cookie. Lets go of the lock either way.
   */
  private failedCommit(caught: unknown, sentBeforeCommit: boolean): CookieAction {
    const { ctx } = this;
    try {
      const error = reportIfTimedOut(ctx, this.opened.state.loadedId ?? this.opened.state.id, caught);
      if (!sentBeforeCommit) {
        // The request fails with the commit's error; the app still hears of the others.
        for (const other of [this.unheardRemovalFailure, this.failure, this.listenerFailure]) if (other !== undefined) tellAppOf(ctx, other.error);
        throw error;
      }
      // With the headers out, failing the request would only keep Koa from sending its body
      // (a stream would hang): the response stands, and the app hears of the failure.
      tellAppOf(ctx, error);
      return NO_COOKIE;
    } finally {
      // Let go of whatever an 'error' listener throws; not held up by handing back a cross-process
      // lock either (see releaseAndThrow in opening.ts).
      void this.unlockNow();
    }
  }

  /**
   * Lets go of the lock once `action` is committed; waits for a
   * cross-process lock to be handed back, unless the request fails anyway
   * (a failed removal, say): as after a failed commit, with the store not
   * answering that would take as long again.
   */
  private unlock(action: CookieAction): Eventually<CookieAction> {
    const releasing = this.unlockNow();
    return releasing === undefined || this.failure !== undefined ? action : releasing.then(() => action);
  }

  /** Lets go of the lock now; a promise while a cross-process lock is handed back. */
  private unlockNow(): Promise<void> | undefined {
    const { lock } = this.opened;
    if (lock === undefined) return undefined;
    // In this process, whoever asked for the session before this request let go of it was in line
    // behind its removal (see HeldLock.release in hold.ts); a RedisStore's mark tells other processes the same.
    if (this.removalToken !== undefined || lock.removedTheSession) this.parts.storage.removalDone(lock.id, this.removalToken);
    return lock.release();
  }

  /** Does with the cookie what the commit says the response must do. */
  sendCookie(action: CookieAction, signed: boolean): void {
    const { ctx, parts } = this;
    if (!ctx.res.headersSent) {
      parts.sessionCookie.send(ctx, action, signed);
      if (action.kind !== 'none') keepCookieOnError(ctx, parts.sessionCookie);
    } else if (action.kind !== 'none') {
      // Sent during the commit, by a task the handler did not await: what was committed stays, without its cookie.
      parts.warnings.headersSentInCommit();
    }
  }

  /** Once the cookie is on the response: fails the request with what failed, or tells the app of it. */
  failIfFailed(): void {
    const { ctx } = this;
    if (this.unheardRemovalFailure !== undefined) tellAppOf(ctx, this.unheardRemovalFailure.error);
    if (this.listenerFailure !== undefined) {
      // The handler's own error goes first; with the headers out, failing would only cut the response short.
      if (this.failure === undefined && !ctx.res.headersSent) this.failure = this.listenerFailure;
      else tellAppOf(ctx, this.listenerFailure.error);
    }
    if (this.failure !== undefined) throw this.failure.error;
  }

  /** The middleware is done with this request. */
  finish(): void {
    this.finished = true;
  }
}
