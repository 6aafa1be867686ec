import { createHash, createHmac } from 'node:crypto';

/** Keygrip's signature format: HMAC-SHA1, base64 without padding, '+' and '/' as '-' and '_'. */
export function keygripSignature(key: string | Uint8Array, data: string): string {
  return createHmac('sha1', key).update(data).digest('base64url');
}

/**
 * HMAC-SHA1 under one key, with the key's two padded blocks hashed once, up
 * front (the precomputation RFC 2104 suggests). Signing a new session's
 * cookie then costs three SHA-1 blocks of integer arithmetic; through
 * `crypto.createHmac` it cost a native object, OpenSSL's set-up of the key
 * and five blocks, together a fifth of all the work of a new signed
 * session. node:crypto cannot resume a saved hash state cheaply
 * (`Hash#copy` costs more than `createHmac`). A property test holds it to
 * `crypto.createHmac` for any key and message.
 *
 * Messages longer than a cookie's go to `crypto.createHmac`, so the scratch
 * space stays small and is never regrown to what a client sent.
 */
export class HmacSha1 {
  /** The SHA-1 state after the key's inner and outer padded blocks. */
  private readonly innerStart: Int32Array;
  private readonly outerStart: Int32Array;
  private readonly key: Buffer;

  constructor(key: string | Uint8Array) {
    this.key = Buffer.from(key);
    // A key longer than a block is hashed first, as HMAC specifies.
    const bytes = this.key.length > BLOCK ? createHash('sha1').update(this.key).digest() : this.key;
    this.innerStart = hashedPad(bytes, 0x36);
    this.outerStart = hashedPad(bytes, 0x5c);
  }

  /** The HMAC of `data` as UTF-8, in base64url without padding: Keygrip's signature format. */
  base64url(data: string): string {
    if (data.length > MAX_DATA_LENGTH) return keygripSignature(this.key, data);
    const length = message.write(data, 0);
    const end = padded(length);
    copyState(this.innerStart, state);
    for (let offset = 0; offset < end; offset += BLOCK) {
      loadBlock(message, offset);
      compress(state);
    }
    // The outer hash's message is the inner digest: 20 bytes, padded to one block, straight into the schedule.
    copyState(state, words);
    words[5] = 0x80000000 | 0;
    for (let t = 6; t < 15; t++) words[t] = 0;
    words[15] = (BLOCK + DIGEST) * 8;
    copyState(this.outerStart, state);
    compress(state);
    for (let i = 0; i < 5; i++) {
      digest[4 * i] = state[i] >>> 24;
      digest[4 * i + 1] = state[i] >>> 16;
      digest[4 * i + 2] = state[i] >>> 8;
      digest[4 * i + 3] = state[i];
    }
    return digest.toString('base64url');
  }
}

const BLOCK = 64;
const DIGEST = 20;
/** In UTF-16 units: a cookie header line's worth, far more than `name=<session ID>` takes. */
export const MAX_DATA_LENGTH = 4096;
const INITIAL_STATE = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0];

// Scratch space shared by every HmacSha1: a signature is computed synchronously, start to end.
const words = new Int32Array(80);
const state = new Int32Array(5);
const digest = Buffer.alloc(DIGEST);
// UTF-8 takes at most 3 bytes per UTF-16 unit; the padding at most 72 more.
const message = Buffer.alloc(MAX_DATA_LENGTH * 3 + 72);

function hashedPad(key: Uint8Array, pad: number): Int32Array {
  const block = Buffer.alloc(BLOCK, pad);
  for (let i = 0; i < key.length; i++) block[i] ^= key[i];
  const start = Int32Array.from(INITIAL_STATE);
  loadBlock(block, 0);
  compress(start);
  return start;
}

/**
 * Pads the `length` bytes at the start of `message` as SHA-1 does, for a
 * message that follows one block (the key's): 0x80, zeros, and the length
 * in bits in the last 8 bytes of a block. Returns the padded length.
 */
function padded(length: number): number {
  const end = (((length + 8) >> 6) + 1) * BLOCK;
  const bits = (BLOCK + length) * 8;
  message[length] = 0x80;
  for (let i = length + 1; i < end - 4; i++) message[i] = 0;
  message[end - 4] = bits >>> 24;
  message[end - 3] = bits >>> 16;
  message[end - 2] = bits >>> 8;
  message[end - 1] = bits;
  return end;
}

/**
 * Copies a SHA-1 state's five words. Plain loops here and in `padded`, not
 * a typed array's `set` and `fill` or Buffer's `write…BE`: those are calls
 * out of compiled code, a quarter of a signature's instructions.
 */
function copyState(from: Int32Array, to: Int32Array): void {
  for (let i = 0; i < 5; i++) to[i] = from[i];
}

function loadBlock(bytes: Uint8Array, offset: number): void {
  for (let t = 0; t < 16; t++, offset += 4) {
    words[t] = (bytes[offset] << 24) | (bytes[offset + 1] << 16) | (bytes[offset + 2] << 8) | bytes[offset + 3];
  }
}

/** SHA-1's compression of the block in words[0..15] into `h` (FIPS 180-4, 6.1.2). */
function compress(h: Int32Array): void {
  const w = words;
  for (let t = 16; t < 80; t++) {
    const x = w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16];
    w[t] = (x << 1) | (x >>> 31);
  }
  let a = h[0];
  let b = h[1];
  let c = h[2];
  let d = h[3];
  let e = h[4];
  let t = 0;
  // Four stages of 20 rounds, one loop each, so no round branches on its stage.
  for (; t < 20; t++) {
    const next = (((a << 5) | (a >>> 27)) + ((b & c) | (~b & d)) + e + 0x5a827999 + w[t]) | 0;
    e = d; d = c; c = (b << 30) | (b >>> 2); b = a; a = next;
  }
  for (; t < 40; t++) {
    const next = (((a << 5) | (a >>> 27)) + (b ^ c ^ d) + e + 0x6ed9eba1 + w[t]) | 0;
    e = d; d = c; c = (b << 30) | (b >>> 2); b = a; a = next;
  }
  for (; t < 60; t++) {
    const next = (((a << 5) | (a >>> 27)) + ((b & c) | (b & d) | (c & d)) + e + (0x8f1bbcdc | 0) + w[t]) | 0;
    e = d; d = c; c = (b << 30) | (b >>> 2); b = a; a = next;
  }
  for (; t < 80; t++) {
    const next = (((a << 5) | (a >>> 27)) + (b ^ c ^ d) + e + (0xca62c1d6 | 0) + w[t]) | 0;
    e = d; d = c; c = (b << 30) | (b >>> 2); b = a; a = next;
  }
  h[0] = (h[0] + a) | 0;
  h[1] = (h[1] + b) | 0;
  h[2] = (h[2] + c) | 0;
  h[3] = (h[3] + d) | 0;
  h[4] = (h[4] + e) | 0;
}
