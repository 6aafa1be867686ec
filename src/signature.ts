import { timingSafeEqual } from 'node:crypto';
import { HmacSha1 } from './hmac-sha1';

/** Two buffers per signature length (27 bytes for Keygrip's SHA-1), reused so that a comparison allocates nothing. */
const comparing = new Map<number, [Buffer, Buffer]>();

/**
 * Whether the signature a client sent is the expected one (ASCII, as
 * Keygrip's base64url is), compared in constant time. `given` must fill its
 * buffer exactly as UTF-8: a non-ASCII character makes it longer, so it
 * never matches, and no byte of an earlier comparison is left over.
 */
export function sameInConstantTime(expected: string, given: string): boolean {
  const length = expected.length;
  if (given.length !== length) return false;
  let pair = comparing.get(length);
  if (pair === undefined) {
    pair = [Buffer.alloc(length), Buffer.alloc(length)];
    comparing.set(length, pair);
  }
  if (pair[1].write(given) !== length) return false;
  pair[0].write(expected);
  return timingSafeEqual(pair[0], pair[1]);
}

/** Signatures kept per generation: two generations hold the sessions active on a busy process, about 3 MB at most. */
const GENERATION_SIZE = 10_000;

/**
 * The signing key's signatures of recently seen cookie values. A session's
 * cookie is the same on each of its requests, so its HMAC is computed once
 * rather than twice per request (verify, then sign again on a write). Only
 * what the key itself computed is kept, never what a client sent, and a
 * new signing key starts afresh. Only cookies a client presented are
 * remembered: a new session's ID is signed without keeping it, since many
 * never come back (a crawler's, a one-off visit's), and a stream of those
 * would push out the sessions that do. Old entries go a generation at a time: a
 * full generation becomes the previous one, and the one before is dropped
 * (cheaper than evicting one by one: a Map iterated from a deleted head is
 * slow).
 */
export class SignatureMemo {
  /** The first of `app.keys`: a string, or bytes (Keygrip takes both). */
  private key: string | Uint8Array | undefined;
  /**
   * A copy of the key when it is bytes. Keygrip reads a key afresh for each
   * signature, so a Buffer rewritten in place signs as a new key: the same
   * object no longer means the same key.
   */
  private keyBytes: Uint8Array | undefined;
  /** HMAC-SHA1 under `key`, its padded blocks hashed once. */
  private hmac: HmacSha1 | undefined;
  private current = new Map<string, string>();
  private previous = new Map<string, string>();

  /**
   * The signature of `name=value` under `key`; `value` alone is the memo's
   * key, the name being fixed. `remember`: keep it when it had to be computed.
   */
  of(key: string | Uint8Array, name: string, value: string, remember: boolean): string {
    if (key !== this.key || (this.keyBytes !== undefined && Buffer.compare(key as Uint8Array, this.keyBytes) !== 0)) {
      this.current = new Map();
      this.previous = new Map();
      this.key = key;
      this.keyBytes = typeof key === 'string' ? undefined : Uint8Array.from(key);
      this.hmac = new HmacSha1(key);
    }
    let signature = this.current.get(value);
    if (signature !== undefined) return signature;
    signature = this.previous.get(value) ?? (this.hmac as HmacSha1).base64url(`${name}=${value}`);
    if (!remember) return signature;
    if (this.current.size >= GENERATION_SIZE) {
      this.previous = this.current;
      this.current = new Map();
    }
    this.current.set(value, signature);
    return signature;
  }
}
