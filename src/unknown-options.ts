/**
 * Refuses an option that `known` does not list, to catch typos, naming it
 * with what it is called here when `renamed` has it (an option of a peer
 * library, say). `kind` is what the message calls them: 'option',
 * 'RedisStore option'.
 */
export function refuseUnknownOptions(
  options: object,
  known: ReadonlySet<string>,
  renamed: Readonly<Record<string, string>>,
  kind: string,
): void {
  for (const key of Object.keys(options)) {
    if (known.has(key)) continue;
    const hint = Object.hasOwn(renamed, key) ? ` (${renamed[key]})` : '';
    throw new TypeError(`koa-locked-session: unknown ${kind} ${key}${hint}`);
  }
}
