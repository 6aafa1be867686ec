import { createHash, randomBytes } from 'node:crypto';

/** 32 random bytes from `crypto`, as 64 lowercase hex characters. */
export function generateId(): string {
  return randomBytes(32).toString('hex');
}

const DEFAULT_ID = /^[0-9a-f]{64}$/;
const CUSTOM_ID = /^[A-Za-z0-9_-]{22,256}$/;

/** The pattern a cookie value must match before it may reach the store. */
export function idPattern(customGenerator: boolean): RegExp {
  return customGenerator ? CUSTOM_ID : DEFAULT_ID;
}

/** Wraps a user's `genid` so every ID it makes is checked. */
export function checkedGenerator(genid: () => string): () => string {
  return () => {
    const id = genid();
    if (typeof id !== 'string' || !CUSTOM_ID.test(id)) {
      throw new TypeError('koa-locked-session: genid must return 22-256 characters of [A-Za-z0-9_-]');
    }
    return id;
  };
}

export function sha256Hex(id: string): string {
  return createHash('sha256').update(id).digest('hex');
}

/** What events and debug lines carry instead of the ID: 16 hex chars of its SHA-256. */
export function idHash(id: string): string {
  return sha256Hex(id).slice(0, 16);
}
