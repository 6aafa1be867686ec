import { createHash, randomBytes } from 'node:crypto';
import type { Change, StoredSession } from './store';
import { assertLifetime } from './store';
import { JsonText } from '../values';

/*
 * How RedisStore keeps sessions in Redis, and the Lua scripts that change
 * them: each script runs as one step on the server, which is what makes a
 * commit atomic across processes. The store's methods (redis.ts) decide
 * when to run which.
 *
 * Layout: one hash per session, `${prefix}{${id}}`, expiring with the session.
 * Field `d:<key>` holds the JSON of one session value (`u:<key as JSON>` for
 * a key that is not well-formed UTF-16, see fieldOf); `m:c` and `m:t` hold
 * createdAt and touchedAt. The prefixes keep the library's meta apart from
 * the user's keys, so no key is reserved. The lock, when used, is
 * `${prefix}{${id}}:lock`, `${prefix}{${id}}:removed` remembers for a
 * while that the session was removed (see REMOVED_MEMORY_MS in redis.ts),
 * and `${prefix}{${id}}:removers` keeps the removals under way (see
 * RedisStore.removeUntilDone): the hash tag `{id}` puts them all in one
 * Cluster slot.
 */
const DATA = 'd:';
const ESCAPED_DATA = 'u:';
const CREATED = 'm:c';
const TOUCHED = 'm:t';
const LONE_SURROGATE = /\p{Cs}/u;

/**
 * The hash field of session key `key`. A key with a lone surrogate goes as
 * its JSON, which escapes it: Redis would turn it into U+FFFD.
 */
export function fieldOf(key: string): string {
  return LONE_SURROGATE.test(key) ? ESCAPED_DATA + JSON.stringify(key) : DATA + key;
}

/**
 * The session key of hash field `field` (see fieldOf); undefined for the
 * library's own fields, and for a field this library cannot have written
 * (one written by another tool): ignored, rather than failing every load
 * of the session.
 */
function keyOfField(field: string): string | undefined {
  if (field.startsWith(DATA)) return field.slice(DATA.length);
  if (!field.startsWith(ESCAPED_DATA)) return undefined;
  try {
    const key: unknown = JSON.parse(field.slice(ESCAPED_DATA.length));
    return typeof key === 'string' ? key : undefined;
  } catch {
    return undefined;
  }
}

export class Script {
  readonly sha: string;

  /** `keys`: how many of a call's first arguments are keys (KEYS[1..keys]). */
  constructor(readonly source: string, readonly keys = 1) {
    this.sha = createHash('sha1').update(source).digest('hex');
  }
}

/** Lua: HSET of the field, value pairs ARGV[first..] into KEYS[1], 100 pairs a call (unpack's stack is limited). */
function hsetArgsFrom(first: number): string {
  return `local n = #ARGV
local i = ${first}
while i <= n do
  local last = math.min(i + 199, n)
  redis.call('HSET', KEYS[1], unpack(ARGV, i, last))
  i = last + 1
end`;
}

/** KEYS[1] the session hash; ARGV[1] expiry ms; ARGV[2..] field, value pairs. Replaces the whole record. */
export const REPLACE = new Script(`
redis.call('DEL', KEYS[1])
${hsetArgsFrom(2)}
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
`);

/** What APPLY, APPLY_AND_READ and RETIRE answer, writing nothing, when the caller's lock is no longer its own. */
export const LOCK_LOST = -2;

/** The Lua check that the lock `lockKey` is still held with `token` ('' when the caller holds none): else answers LOCK_LOST. */
function lockCheck(lockKey: string, token: string): string {
  return `if ${token} ~= '' and redis.call('GET', ${lockKey}) ~= ${token} then return ${LOCK_LOST} end`;
}

/**
 * The source of APPLY and APPLY_AND_READ, which differ only in what they
 * answer once applied. KEYS[1] the session hash, KEYS[2] its lock; ARGV[1]
 * touchedAt; ARGV[2] expiry ms; ARGV[3] the token of the lock the caller
 * holds, or '' for none; ARGV[4..] the change log: 's' field json | 'd'
 * field | 'c'. The checks and the writes run as one step on the server, so
 * a session destroyed by any process is never brought back, commits to
 * different keys by different processes never overwrite each other, and a
 * holder whose lock expired (LOCK_LOST) writes nothing.
 */
function applySource(answer: string): string {
  return `
${lockCheck('KEYS[2]', 'ARGV[3]')}
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local i = 4
while i <= #ARGV do
  local op = ARGV[i]
  if op == 's' then
    redis.call('HSET', KEYS[1], ARGV[i + 1], ARGV[i + 2])
    i = i + 3
  elseif op == 'd' then
    redis.call('HDEL', KEYS[1], ARGV[i + 1])
    i = i + 2
  else
    local doomed = {}
    for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
      local kind = string.sub(field, 1, 2)
      if kind == '${DATA}' or kind == '${ESCAPED_DATA}' then
        doomed[#doomed + 1] = field
        if #doomed == 200 then
          redis.call('HDEL', KEYS[1], unpack(doomed))
          doomed = {}
        end
      end
    end
    if #doomed > 0 then redis.call('HDEL', KEYS[1], unpack(doomed)) end
    i = i + 1
  end
end
-- The push time and expiry never move back: a later push another process made meanwhile stays.
local pushed = tonumber(redis.call('HGET', KEYS[1], '${TOUCHED}'))
-- A hash the library did not write: created at its first push, from which absoluteTimeout counts.
if pushed == nil then redis.call('HSETNX', KEYS[1], '${CREATED}', ARGV[1]) end
if pushed == nil or tonumber(ARGV[1]) >= pushed then
  redis.call('HSET', KEYS[1], '${TOUCHED}', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return ${answer}
`;
}

/** Answers 1 once applied, 0 when the session is gone. */
export const APPLY = new Script(applySource('1'), 2);

/** Answers the session's fields as they are once applied (HGETALL's flat list), 0 when it is gone. */
export const APPLY_AND_READ = new Script(applySource("redis.call('HGETALL', KEYS[1])"), 2);

/**
 * KEYS[1] a session hash, KEYS[2] its removal mark; ARGV[1] how long the
 * mark stays, in ms; ARGV[2] the removal time. Removes the session.
 */
export const DESTROY = new Script(`
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[1])
return 1
`, 2);

/**
 * KEYS[1] a session hash, KEYS[2] its removal mark, KEYS[3] its lock;
 * ARGV[1] how long the mark stays, in ms; ARGV[2] the removal time, made
 * this call's own by a random fraction (see retireStamp); ARGV[3] the
 * token of the lock the caller holds, or ''; ARGV[4..] the session's
 * fields and values as they were read (HGETALL's pairs, in any order).
 * Removes the session only if it is still exactly that: answers 1 once
 * removed (also when this very call removed it before: ioredis sends a
 * command again on a new connection when the old one dropped before its
 * reply), 0 when it is gone, -1 when it changed, LOCK_LOST when the
 * caller's lock expired.
 */
export const RETIRE = new Script(`
local current = redis.call('HGETALL', KEYS[1])
local mark = redis.call('GET', KEYS[2])
-- Its caller gave up on it, and its undoing ran first (see UNRETIRE): the session stays.
if mark == 'undone:' .. ARGV[2] then return 0 end
-- Before the lock check: the first run removed it under the lock, which may have expired since.
if #current == 0 and mark == ARGV[2] then return 1 end
${lockCheck('KEYS[3]', 'ARGV[3]')}
if #current == 0 then return 0 end
if #current ~= #ARGV - 3 then return -1 end
local expected = {}
for i = 4, #ARGV, 2 do expected[ARGV[i]] = ARGV[i + 1] end
for i = 1, #current, 2 do
  if expected[current[i]] ~= current[i + 1] then return -1 end
end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[1])
return 1
`, 3);

/**
 * KEYS[1] a session hash, KEYS[2] its removal mark; ARGV[1] expiry ms;
 * ARGV[2] the removal time a RETIRE was sent with; ARGV[3] how long the
 * mark stays, in ms; ARGV[4..] the fields and values RETIRE was sent with.
 * Its caller gave up waiting for RETIRE's answer, but ioredis may still
 * send it, before this or, from a Cluster client, after: marked undone,
 * RETIRE leaves the session be, and one that ran already is put back
 * (answers 1). A removal that came after RETIRE (a logout) stands.
 */
export const UNRETIRE = new Script(`
local mark = redis.call('GET', KEYS[2])
if mark and mark ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[2], 'undone:' .. ARGV[2], 'PX', ARGV[3])
if mark ~= ARGV[2] or redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
${hsetArgsFrom(4)}
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
`, 2);

/*
 * The removals under way of one session (see RedisStore.removeUntilDone)
 * are a sorted set of their requests' tokens, kept as long as a removal
 * mark: a removal under way scores the time it stops counting as one
 * (when it was made, its process's clock, plus the remover's lockTtl, not
 * renewed: its process may end first), a request that said it is done
 * scores ENDED, for good. The key lasts as long as the longest of those
 * (a removal mark's minute, or a remover's longer lockTtl) from its last
 * change, never less. Neither the end of a removal that never reached
 * Redis (a command the client dropped at a failed reconnection) nor a
 * removal that reaches Redis after its request's end (it timed out in the
 * client, or was sent again) can then take another's place or stay under way.
 */

/** The score of a request that said it is done: below any time, so REMOVED_AT never counts it again. */
const ENDED = 0;

/** Lua: KEYS[n] lasts at least `ms` (a Lua expression, in ms) from now, and never less than it already does. */
const lastsAtLeast = (n: number, ms: string) => `if redis.call('PTTL', KEYS[${n}]) < ${ms} then redis.call('PEXPIRE', KEYS[${n}], ${ms}) end`;

/**
 * DESTROY by a request that goes on running: its token ARGV[4] is under
 * way in KEYS[3] for ARGV[3] ms from ARGV[2], unless that request is done.
 */
export const DESTROY_UNDER_WAY = new Script(`
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[1])
redis.call('ZADD', KEYS[3], 'NX', tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[4])
${lastsAtLeast(3, 'math.max(tonumber(ARGV[1]), tonumber(ARGV[3]))')}
return 1
`, 3);

/** KEYS[1] a removal mark; ARGV[1] how long it stays, in ms; ARGV[2] the time. Moves the mark's time on, if there is one. */
export const RESTAMP = new Script(`return redis.call('SET', KEYS[1], ARGV[2], 'XX', 'PX', ARGV[1])`);

/**
 * RESTAMP, and the request with token ARGV[3] done with its removals in
 * KEYS[2] (see ENDED), kept for as long as a removal of that request
 * (ARGV[4]: its lockTtl) could still arrive and count.
 */
export const RESTAMP_UNDER_WAY = new Script(`
redis.call('ZADD', KEYS[2], ${ENDED}, ARGV[3])
${lastsAtLeast(2, 'math.max(tonumber(ARGV[1]), tonumber(ARGV[4]))')}
return redis.call('SET', KEYS[1], ARGV[2], 'XX', 'PX', ARGV[1])
`, 2);

/**
 * KEYS[1] a removal mark, KEYS[2] its removals under way; ARGV[1] the
 * time: the removal time the mark holds (false, a nil reply, when there is
 * none), and how many removals are under way then.
 */
export const REMOVED_AT = new Script(`return { redis.call('GET', KEYS[1]), redis.call('ZCOUNT', KEYS[2], '(' .. ARGV[1], '+inf') }`, 2);

/**
 * RETIRE's removal time: now, with a random fraction of a millisecond that
 * no other removal's mark holds, so that RETIRE can tell its own mark.
 * Still a time to RedisStore.removedSince (redis.ts), in any version.
 */
export function retireStamp(): string {
  return `${Date.now()}.${randomBytes(4).readUInt32BE()}`;
}

/**
 * KEYS[1] the lock; ARGV[1] token; ARGV[2] ttl ms. A lock that already
 * holds the token is the caller's: ioredis sends a command again on a new
 * connection when the old one dropped before its reply, so the first SET
 * may have landed.
 */
export const LOCK = new Script(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 'OK'
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
`);

/** Only the holder may extend or delete its lock: another token means it expired and someone else has it. */
export const RENEW = new Script(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`);
export const UNLOCK = new Script(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`);

export function expiryMs(maxAgeMs: number): number {
  assertLifetime('RedisStore', maxAgeMs);
  return Math.ceil(maxAgeMs);
}

/** REPLACE's arguments up to the fields, which the caller pushes in pairs. */
export function replaceArgs(createdAt: number, touchedAt: number, maxAgeMs: number): (string | number)[] {
  return [expiryMs(maxAgeMs), CREATED, createdAt, TOUCHED, touchedAt];
}

/** APPLY's arguments: the push time, the expiry, the token of the lock held (or ''), and the change log. */
export function applyArgs(changes: readonly Change[], touchedAt: number, maxAgeMs: number, token: string): (string | number)[] {
  const args: (string | number)[] = [touchedAt, expiryMs(maxAgeMs), token];
  for (const change of changes) {
    if (change.op === 'set') {
      const json = JSON.stringify(change.value);
      if (json === undefined) args.push('d', fieldOf(change.key));
      else args.push('s', fieldOf(change.key), json);
    } else if (change.op === 'delete') {
      args.push('d', fieldOf(change.key));
    } else {
      args.push('c');
    }
  }
  return args;
}

/** A session hash's fields (as HGETALL gives them) as a session, its values left as JSON text; undefined when there are none. */
export function sessionOfFields(fields: Record<string, string>, now: number): StoredSession | undefined {
  const names = Object.keys(fields);
  if (names.length === 0) return undefined;
  const values = new Map<string, unknown>();
  for (const name of names) {
    const key = keyOfField(name);
    if (key !== undefined) values.set(key, new JsonText(fields[name] as string));
  }
  const touchedAt = fields[TOUCHED];
  const createdAt = Number(fields[CREATED] ?? now);
  // A hash the library did not write (no push time): see StoredSession.foreign.
  return touchedAt === undefined ? { values, createdAt, touchedAt: now, foreign: true } : { values, createdAt, touchedAt: Number(touchedAt) };
}
