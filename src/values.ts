/**
 * What a session value may be: exactly what JSON carries unchanged, so that
 * what a handler `set()`s is what it `get()`s back, in this request and the
 * next. Checking and copying are one walk, done once per `set()`.
 */

/**
 * A deep copy of `value`, the session value under `key`; throws a
 * TypeError naming where in it (`session value "cart".items[2].price`) it
 * is not JSON-safe.
 */
export function copyValue(value: unknown, key: string): unknown {
  return copy(value, new Walk(key));
}

/** A deep copy of a value that was already checked (no checks, no errors). */
export function cloneChecked<T>(value: T): T {
  if (typeof value !== 'object' || value === null) return value;
  if (Array.isArray(value)) return value.map(cloneChecked) as T;
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value)) {
    assignOwn(out, key, cloneChecked((value as Record<string, unknown>)[key]));
  }
  return out as T;
}

/**
 * A stored value not decoded yet. MemoryStore and RedisStore keep each
 * value as JSON text and hand it over as such; a session decodes a value
 * only when its handler reads it. A handler value is never an instance of
 * this class (set() refuses them).
 */
export class JsonText {
  constructor(readonly json: string) {}
}

/** What a session holds under a key: the value itself, or its JSON text. */
export type Slot = unknown;

/** A fresh copy of the value held in `slot`. */
export function valueOf(slot: Slot): unknown {
  return slot instanceof JsonText ? parseJson(slot.json) : cloneChecked(slot);
}

/** The value held in `slot`, decoded if need be (not copied). */
export function decoded(slot: Slot): unknown {
  return slot instanceof JsonText ? parseJson(slot.json) : slot;
}

/** A JSON string with nothing escaped in it: its value is the text between the quotes. */
const PLAIN_JSON_STRING = /^"[^"\\\u0000-\u001f]*"$/;
/** A JSON number: Number() reads it as JSON.parse does, and Number() refuses nothing that matches. */
const JSON_NUMBER = /^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?$/;

/**
 * JSON.parse(json), quicker for the values sessions mostly hold: V8's
 * JSON.parse costs about 90 ns on a short string or number, the checks
 * and the slice or Number() a third of that. Anything else, malformed
 * text included, goes to JSON.parse.
 */
export function parseJson(json: string): unknown {
  const first = json.charCodeAt(0);
  if (first === 0x22 && PLAIN_JSON_STRING.test(json)) return json.slice(1, -1);
  if ((first === 0x2d || (first >= 0x30 && first <= 0x39)) && JSON_NUMBER.test(json)) return Number(json);
  return JSON.parse(json);
}

/** The JSON text of the value held in `slot`. */
export function jsonOf(slot: Slot): string {
  return slot instanceof JsonText ? slot.json : (JSON.stringify(slot) as string);
}

/** A session's values as a record's data: a plain object, every value decoded, a key named __proto__ kept as a key. */
export function dataOfValues(values: ReadonlyMap<string, Slot>): Record<string, unknown> {
  const data: Record<string, unknown> = {};
  for (const [key, slot] of values) assignOwn(data, key, decoded(slot));
  return data;
}

/**
 * `out[key] = v` that also works for the key `__proto__`, which a plain
 * assignment would turn into a prototype change instead of a property.
 */
export function assignOwn(out: Record<string, unknown>, key: string, v: unknown): void {
  if (key === '__proto__') {
    Object.defineProperty(out, key, { value: v, writable: true, enumerable: true, configurable: true });
  } else {
    out[key] = v;
  }
}

/**
 * Where the walk over a value is: the objects it is inside (to find
 * circular references) and the steps taken to get there, which are spelled
 * out only when something is refused.
 */
class Walk {
  readonly ancestors: object[] = [];
  readonly steps: (string | number)[] = [];

  constructor(private readonly key: string) {}

  /** The error for what was found here, as `why` it is refused; its place cut to 200 characters. */
  refuse(what: string, why = 'which JSON cannot carry unchanged'): TypeError {
    let where = `session value ${JSON.stringify(this.key)}`;
    for (const step of this.steps) where += typeof step === 'number' ? `[${step}]` : `.${step}`;
    return new TypeError(`koa-locked-session: ${where.slice(0, 200)} is ${what}, ${why}`);
  }
}

function copy(value: unknown, walk: Walk): unknown {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return value;
    case 'number':
      if (!Number.isFinite(value)) throw walk.refuse(`a non-finite number (${value})`);
      return value === 0 ? 0 : value; // -0 comes back as 0, as JSON carries it
    case 'object':
      return value === null ? null : copyObject(value, walk);
    default:
      throw walk.refuse(typeof value === 'undefined' ? 'undefined' : `a ${typeof value}`);
  }
}

/**
 * How deep objects and arrays may nest in a value. Far deeper than data
 * needs; much deeper, and the walks over a value (this one, JSON's, a
 * copy's) would overflow the stack with a RangeError instead of refusing.
 */
const MAX_DEPTH = 1000;

/** copy() of the value at `step` of the one being walked. */
function copyStep(value: unknown, walk: Walk, step: string | number): unknown {
  walk.steps.push(step);
  const copied = copy(value, walk);
  walk.steps.pop();
  return copied;
}

/**
 * A realm's own Array.prototype: this one's, or another vm context's (as
 * Jest's test environment makes them), which is itself an array, unlike a
 * subclass's prototype.
 */
function isArrayPrototype(proto: unknown): boolean {
  return proto === Array.prototype || Array.isArray(proto);
}

/**
 * A realm's own Object.prototype: this one's, or another vm context's (the
 * end of its prototype chain, whose constructor is that realm's Object).
 */
export function isObjectPrototype(proto: unknown): boolean {
  if (proto === Object.prototype) return true;
  if (typeof proto !== 'object' || proto === null || Object.getPrototypeOf(proto) !== null) return false;
  const constructor: unknown = Object.getOwnPropertyDescriptor(proto, 'constructor')?.value;
  return typeof constructor === 'function' && constructor.prototype === proto && constructor.name === 'Object';
}

function copyObject(value: object, walk: Walk): unknown {
  const { ancestors } = walk;
  if (ancestors.length === MAX_DEPTH) throw walk.refuse(`nested deeper than ${MAX_DEPTH} objects or arrays`, 'the most a session value may nest');
  if (ancestors.includes(value)) throw walk.refuse('a circular reference');
  if (Object.getOwnPropertySymbols(value).length > 0) throw walk.refuse('an object with symbol keys');
  const proto: unknown = Object.getPrototypeOf(value);
  ancestors.push(value);
  try {
    if (Array.isArray(value)) {
      if (!isArrayPrototype(proto)) throw walk.refuse('an array subclass');
      // Own property names: the indices and `length`; anything else JSON would leave out.
      if (Object.keys(value).length !== value.length || Object.getOwnPropertyNames(value).length !== value.length + 1) {
        throw walk.refuse('a sparse array or an array with extra properties');
      }
      const out = new Array<unknown>(value.length);
      for (let i = 0; i < value.length; i++) out[i] = copyStep(value[i], walk, i);
      return out;
    }
    if (proto !== null && !isObjectPrototype(proto)) {
      const name = (value as { constructor?: { name?: string } }).constructor?.name ?? 'object';
      throw walk.refuse(`an instance of ${name}`);
    }
    if (typeof (value as { toJSON?: unknown }).toJSON === 'function') {
      throw walk.refuse('an object with a toJSON method');
    }
    const keys = Object.keys(value);
    if (Object.getOwnPropertyNames(value).length !== keys.length) {
      throw walk.refuse('an object with non-enumerable properties (JSON leaves them out)');
    }
    const out: Record<string, unknown> = {};
    for (const key of keys) assignOwn(out, key, copyStep((value as Record<string, unknown>)[key], walk, key));
    return out;
  } finally {
    ancestors.pop();
  }
}
