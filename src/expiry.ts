/**
 * The expiry rules: `maxAge` is an idle lifetime, `absoluteTimeout` a hard
 * one counted from creation. Every push of the idle expiry is a store write
 * and a Set-Cookie, so a push is made only when more than a tenth of
 * `maxAge` has passed since the last one.
 */
export class Expiry {
  constructor(
    private readonly maxAge: number,
    private readonly absoluteTimeout: number | undefined,
  ) {}

  /** When a session created at `createdAt` and pushed at `touchedAt` ends (ms since epoch). */
  endsAt(createdAt: number, touchedAt: number): number {
    const idleEnd = touchedAt + this.maxAge;
    return this.absoluteTimeout === undefined ? idleEnd : Math.min(idleEnd, createdAt + this.absoluteTimeout);
  }

  isLive(record: { readonly createdAt: number; readonly touchedAt: number }, now: number): boolean {
    return this.endsAt(record.createdAt, record.touchedAt) > now;
  }

  /** The store lifetime (ms) from `now` (by default, `touchedAt`) of a session created at `createdAt` and last pushed at `touchedAt`. */
  ttl(createdAt: number, touchedAt: number, now = touchedAt): number {
    return Math.max(1, this.endsAt(createdAt, touchedAt) - now);
  }

  pushDue(touchedAt: number, now: number): boolean {
    return now - touchedAt > this.maxAge / 10;
  }
}
