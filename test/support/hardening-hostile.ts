/**
 * Hostile Cookie headers for the hardening tests: recipes that fast-check
 * generates and shrinks, printed readably, and turned into bytes against
 * the real session IDs (and signatures) of the test's victim sessions.
 */
import fc from 'fast-check';

/** How a cookie value is derived from a victim's real ID. */
export type Tweak =
  | 'exact' // the ID itself (legitimate when unsigned: whoever has the ID has the session)
  | 'upper' // upper-case hex
  | 'mixed' // one letter upper-cased
  | 'truncate' // 63 characters
  | 'extend' // 65 characters
  | 'flip' // one hex digit changed: well-formed, names no session
  | 'quoted' // "ID"
  | 'quoted-open' // "ID (no closing quote)
  | 'percent' // every character %-encoded
  | 'padded' // ' ID '
  | 'nul' // ID followed by %00
  | 'doubled'; // ID twice

/** How a signature cookie value is made (signed mode). */
export type SigTweak = 'own' | 'truncate' | 'flip' | 'other' | 'empty' | 'foreign-key' | 'upper';

export type ValueRecipe =
  | { readonly kind: 'victim'; readonly victim: number; readonly tweak: Tweak }
  | { readonly kind: 'sig'; readonly victim: number; readonly of: number; readonly tweak: SigTweak }
  | { readonly kind: 'hex'; readonly length: number; readonly upper: boolean; readonly digits: string }
  | { readonly kind: 'text'; readonly text: string }
  | { readonly kind: 'huge'; readonly size: number; readonly fill: string };

export interface CookieRecipe {
  readonly name: string;
  readonly value: ValueRecipe;
  /** Leave out the '=' (a bare name). */
  readonly bare: boolean;
}

export interface HeaderRecipe {
  readonly cookies: readonly CookieRecipe[];
  readonly separator: string;
  /** Send the cookies as several Cookie header lines instead of one. */
  readonly split: boolean;
}

export interface Victim {
  readonly id: string;
  /** The session_id.sig value the server issued (signed mode), else ''. */
  readonly sig: string;
}

export interface Signer {
  sign(data: string): string;
}

function flipHex(s: string, at: number): string {
  const i = at % s.length;
  const c = s[i];
  const next = c === '0' ? '1' : '0';
  return s.slice(0, i) + next + s.slice(i + 1);
}

function flipB64(s: string): string {
  if (s.length === 0) return 'A';
  const c = s[s.length - 2] ?? s[0];
  const swapped = c === 'A' ? 'B' : 'A';
  return s.length >= 2 ? s.slice(0, -2) + swapped + s.slice(-1) : swapped;
}

export function tweakId(id: string, tweak: Tweak): string {
  switch (tweak) {
    case 'exact':
      return id;
    case 'upper':
      return id.toUpperCase();
    case 'mixed': {
      const i = [...id].findIndex((c) => c >= 'a' && c <= 'f');
      return i < 0 ? `${id.slice(0, -1)}A` : id.slice(0, i) + id[i].toUpperCase() + id.slice(i + 1);
    }
    case 'truncate':
      return id.slice(0, 63);
    case 'extend':
      return `${id}0`;
    case 'flip':
      return flipHex(id, 17);
    case 'quoted':
      return `"${id}"`;
    case 'quoted-open':
      return `"${id}`;
    case 'percent':
      return [...id].map((c) => `%${c.charCodeAt(0).toString(16)}`).join('');
    case 'padded':
      return ` ${id} `;
    case 'nul':
      return `${id}%00`;
    case 'doubled':
      return id + id;
  }
}

function sigValue(recipe: Extract<ValueRecipe, { kind: 'sig' }>, victims: readonly Victim[], foreign: Signer): string {
  const victim = victims[recipe.victim % victims.length];
  const other = victims[recipe.of % victims.length];
  switch (recipe.tweak) {
    case 'own':
      return victim.sig;
    case 'truncate':
      return victim.sig.slice(0, -1);
    case 'flip':
      return flipB64(victim.sig);
    case 'other':
      return other === victim ? flipB64(victim.sig) : other.sig;
    case 'empty':
      return '';
    case 'foreign-key':
      return foreign.sign(`session_id=${victim.id}`);
    case 'upper':
      return victim.sig.toUpperCase();
  }
}

/** The value a recipe stands for, given the victims (and, signed, how to sign with a foreign key). */
export function valueOf(recipe: ValueRecipe, victims: readonly Victim[], foreign: Signer): string {
  switch (recipe.kind) {
    case 'victim':
      return tweakId(victims[recipe.victim % victims.length].id, recipe.tweak);
    case 'sig':
      return sigValue(recipe, victims, foreign);
    case 'hex': {
      const digits = recipe.digits.repeat(Math.ceil(recipe.length / Math.max(1, recipe.digits.length))).slice(0, recipe.length);
      return recipe.upper ? digits.toUpperCase() : digits;
    }
    case 'text':
      return recipe.text;
    case 'huge':
      return recipe.fill.repeat(Math.ceil(recipe.size / recipe.fill.length)).slice(0, recipe.size);
  }
}

export function showValue(recipe: ValueRecipe): string {
  switch (recipe.kind) {
    case 'victim':
      return `<victim ${recipe.victim} ID, ${recipe.tweak}>`;
    case 'sig':
      return `<victim ${recipe.victim} signature, ${recipe.tweak}${recipe.tweak === 'other' ? ` (of victim ${recipe.of})` : ''}>`;
    case 'hex':
      return `<${recipe.length} ${recipe.upper ? 'upper' : 'lower'}-case hex>`;
    case 'text':
      return JSON.stringify(recipe.text);
    case 'huge':
      return `<${recipe.size} × ${JSON.stringify(recipe.fill)}>`;
  }
}

export function showHeader(recipe: HeaderRecipe): string {
  const parts = recipe.cookies.map((c) => (c.bare ? JSON.stringify(c.name) : `${JSON.stringify(c.name)}=${showValue(c.value)}`));
  return `Cookie${recipe.split ? ' (one header line each)' : ''}: ${parts.join(` ${JSON.stringify(recipe.separator)} `)}`;
}

/** The Cookie header line(s) as bytes (UTF-8: non-ASCII goes on the wire as is). */
export function headerBytes(recipe: HeaderRecipe, victims: readonly Victim[], foreign: Signer): { lines: Buffer; text: string; values: string[] } {
  const pairs = recipe.cookies.map((c) => (c.bare ? c.name : `${c.name}=${valueOf(c.value, victims, foreign)}`));
  const values = recipe.cookies.filter((c) => !c.bare).map((c) => valueOf(c.value, victims, foreign));
  const text = recipe.split ? pairs.map((p) => `Cookie: ${p}`).join('\r\n') : `Cookie: ${pairs.join(recipe.separator)}`;
  return { lines: Buffer.from(text, 'utf8'), text, values };
}

// ---------------------------------------------------------------- arbitraries

/** No CR or LF: those would end the header line (a different test). */
const headerSafe = (s: string) => !/[\r\n]/.test(s);

const hexDigit = fc.constantFrom(...'0123456789abcdef');

export const valueRecipe = (victims: number, signed: boolean): fc.Arbitrary<ValueRecipe> => {
  const sig = fc.record({ kind: fc.constant('sig' as const), victim: fc.nat({ max: victims - 1 }), of: fc.nat({ max: victims - 1 }), tweak: fc.constantFrom<SigTweak>('own', 'truncate', 'flip', 'other', 'empty', 'foreign-key', 'upper') });
  return fc.oneof(
    { weight: 5, arbitrary: fc.record({ kind: fc.constant('victim' as const), victim: fc.nat({ max: victims - 1 }), tweak: fc.constantFrom<Tweak>('exact', 'upper', 'mixed', 'truncate', 'extend', 'flip', 'quoted', 'quoted-open', 'percent', 'padded', 'nul', 'doubled') }) },
    ...(signed ? [{ weight: 4, arbitrary: sig as fc.Arbitrary<ValueRecipe> }] : []),
    { weight: 3, arbitrary: fc.record({ kind: fc.constant('hex' as const), length: fc.constantFrom(0, 1, 32, 63, 64, 65, 128), upper: fc.boolean(), digits: fc.string({ unit: hexDigit, minLength: 1, maxLength: 8 }) }) },
    {
      weight: 4,
      arbitrary: fc.record({
        kind: fc.constant('text' as const),
        text: fc.oneof(
          fc.string({ unit: 'binary', maxLength: 40 }),
          fc.string({ unit: 'binary-ascii', maxLength: 40 }),
          fc.string({ unit: fc.constantFrom('%', '"', ';', ',', '=', ' ', '\\', '\t', 'a', '0', 'é', '€', '🙂', '\u0000', '\u007f', '\u00ff'), maxLength: 30 }),
          fc.constantFrom('', '""', '"', '%', '%zz', '%00', 'deleted', 'undefined', 'null', '__proto__', 'j:{}', 's:abc.def'),
        ).filter(headerSafe),
      }),
    },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('huge' as const), size: fc.constantFrom(1000, 4096, 8192), fill: fc.constantFrom('a', '0', 'f0', 'é', '%41') }) },
  );
};

const cookieName = fc.oneof(
  { weight: 8, arbitrary: fc.constant('session_id') },
  { weight: 3, arbitrary: fc.constant('session_id.sig') },
  { weight: 2, arbitrary: fc.constantFrom('SESSION_ID', ' session_id', 'session_id ', 'session_id.sig.sig', 'xsession_id', 'session', '', '$Version', 'session_id\u00e9') },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme-ascii', maxLength: 8 }).filter((s) => headerSafe(s) && !s.includes(';') && !s.includes('=')) },
);

export const headerRecipe = (victims: number, signed: boolean): fc.Arbitrary<HeaderRecipe> =>
  fc.record({
    cookies: fc.array(fc.record({ name: cookieName, value: valueRecipe(victims, signed), bare: fc.nat({ max: 15 }).map((n) => n === 15) }), { minLength: 1, maxLength: 6 }),
    separator: fc.constantFrom('; ', ';', ', ', ' ; ', ';;', '; ; '),
    split: fc.nat({ max: 7 }).map((n) => n === 7),
  });
