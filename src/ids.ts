import * as crypto from 'node:crypto';

const ID_BYTES = 32;
/** Random bytes are drawn for this many IDs at a time: one call to the CSPRNG instead of 128. */
const POOL_BYTES = ID_BYTES * 128;
let pool = Buffer.alloc(0);
let poolOffset = 0;

/** 32 random bytes from `crypto`, as 64 lowercase hex characters. No bytes are ever used twice. */
export function generateId(): string {
  if (poolOffset + ID_BYTES > pool.length) {
    pool = crypto.randomBytes(POOL_BYTES);
    poolOffset = 0;
  }
  const id = pool.toString('hex', poolOffset, poolOffset + ID_BYTES);
  poolOffset += ID_BYTES;
  return id;
}

/*
 * An ID is checked by its length and a search for a character it may not
 * hold. The same check as /^[0-9a-f]{64}$/ in a regular expression would
 * be: V8 runs a counted repetition with a backtrack entry per character,
 * which outgrows its preallocated stack on every call (a malloc and a copy).
 */
const NOT_HEX = /[^0-9a-f]/;
const NOT_URL_SAFE = /[^A-Za-z0-9_-]/;

/** True for an ID the default generator could have made: 64 lowercase hex characters. */
function isDefaultId(value: string): boolean {
  return value.length === 64 && !NOT_HEX.test(value);
}

/** True for an ID a custom `genid` may make: 22-256 characters of [A-Za-z0-9_-]. */
function isCustomId(value: string): boolean {
  return value.length >= 22 && value.length <= 256 && !NOT_URL_SAFE.test(value);
}

/** The check a cookie value must pass before it may reach the store. */
export function idCheck(customGenerator: boolean): (value: string) => boolean {
  return customGenerator ? isCustomId : isDefaultId;
}

/** Wraps a user's `genid` so every ID it makes is checked. */
export function checkedGenerator(genid: () => string): () => string {
  return () => {
    const id = genid();
    if (typeof id !== 'string' || !isCustomId(id)) {
      throw new TypeError('koa-locked-session: genid must return 22-256 characters of [A-Za-z0-9_-]');
    }
    return id;
  };
}

/** One-shot `crypto.hash` (Node 20.12 and later): well under half the cost of a Hash object for a short string. */
const oneShotHash: typeof crypto.hash | undefined = typeof crypto.hash === 'function' ? crypto.hash : undefined;

/** SHA-256 of `id`, as 64 lowercase hex characters (the store key under `hashIds`). */
export function sha256Hex(id: string): string {
  return oneShotHash !== undefined ? oneShotHash('sha256', id, 'hex') : crypto.createHash('sha256').update(id).digest('hex');
}

/** What events and debug lines carry instead of the ID: 16 hex chars of its SHA-256. */
export function idHash(id: string): string {
  return sha256Hex(id).slice(0, 16);
}
