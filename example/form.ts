import type { Context } from 'koa';

const LIMIT = 16 * 1024;
const parsed = new WeakMap<Context, Record<string, string>>();

/**
 * The fields of a URL-encoded form body (`{}` for any other body), read once
 * per request however often it is asked for. Bodies over 16 KiB get a 413.
 */
export async function readForm(ctx: Context): Promise<Record<string, string>> {
  const known = parsed.get(ctx);
  if (known !== undefined) return known;
  let fields: Record<string, string> = {};
  if (ctx.is('application/x-www-form-urlencoded')) {
    if (Number(ctx.get('Content-Length')) > LIMIT) ctx.throw(413, 'That form is too large.');
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of ctx.req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > LIMIT) ctx.throw(413, 'That form is too large.');
      chunks.push(chunk);
    }
    // Object.fromEntries defines own properties: a field named __proto__ pollutes nothing.
    fields = Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString('utf8')));
  }
  parsed.set(ctx, fields);
  return fields;
}
