/**
 * The default MemoryStore is reached directly by the middleware: values stay
 * JSON text until a handler reads them, and commits replay on that text.
 * What users see must not change: data round-trips exactly whether or not
 * it was read, and a subclass's overridden methods are still called.
 */
import { MemoryStore } from '../src';
import type { Change, SessionData } from '../src';
import { Jar, closeAll, expect, start } from './support/app';

afterEach(closeAll);

const PROFILE = { name: 'Ada', tags: ['x', { deep: null }], nested: { a: { b: [1, 2.5, -3] } } };

/** A value with a key named __proto__, which JSON.parse and a plain assignment treat differently. */
const PROTO_VALUE = JSON.parse('{"__proto__": {"polluted": true}, "ok": 1}') as Record<string, unknown>;

describe('MemoryStore, reached directly by the middleware', () => {
  it('values a handler never reads come through updates and regenerate exactly', async () => {
    const store = new MemoryStore();
    const t = await start({ store }, async (ctx) => {
      const s = ctx.session;
      switch (ctx.path) {
        case '/init':
          s.set('profile', PROFILE);
          s.set('__proto__', PROTO_VALUE);
          s.set('n', 0);
          break;
        case '/inc':
          s.set('n', (s.get<number>('n') ?? 0) + 1);
          break;
        case '/login':
          await s.regenerate();
          break;
        case '/dump': {
          const first = s.get<typeof PROFILE>('profile');
          if (first !== undefined) first.tags.push('changed');
          ctx.body = { data: s.toJSON(), second: s.get('profile'), keys: s.keys() };
          break;
        }
      }
      ctx.body ??= 'ok';
    });
    store.close();
    const jar = new Jar();
    const send = async (method: 'get' | 'post', path: string) =>
      jar.take(await t.http[method](path).set('Cookie', jar.header()).expect(200));

    await send('post', '/init');
    const firstId = jar.get();
    await send('post', '/inc');
    await send('post', '/inc');
    await send('post', '/login');
    const newId = jar.get() as string;
    expect(newId).to.not.equal(firstId);
    expect(await store.get(firstId as string)).to.equal(undefined);

    const expected = `{"profile":${JSON.stringify(PROFILE)},"__proto__":${JSON.stringify(PROTO_VALUE)},"n":2}`;
    const res = await send('get', '/dump');
    expect(res.body.second, 'a second get() is not changed by changes to the first').to.deep.equal(PROFILE);
    expect(res.body.keys).to.deep.equal(['profile', '__proto__', 'n']);
    expect(JSON.stringify(res.body.data)).to.equal(expected);

    const stored = (await store.get(newId)) as { data: SessionData };
    expect(JSON.stringify(stored.data)).to.equal(expected);
    expect(Object.prototype.hasOwnProperty.call(stored.data, '__proto__')).to.equal(true);
    expect(({} as Record<string, unknown>).polluted).to.equal(undefined);
  });

  it("a subclass's overridden methods are called for every load and commit", async () => {
    const calls: string[] = [];
    class CountingStore extends MemoryStore {
      override async get(id: string): Promise<SessionData | undefined> {
        calls.push('get');
        return super.get(id);
      }
      override async set(id: string, data: SessionData, maxAgeMs: number): Promise<void> {
        calls.push('set');
        return super.set(id, data, maxAgeMs);
      }
      override async applyChanges(id: string, changes: readonly Change[], touchedAt: number, maxAgeMs: number): Promise<boolean> {
        calls.push('applyChanges');
        return super.applyChanges(id, changes, touchedAt, maxAgeMs);
      }
    }
    const store = new CountingStore();
    const t = await start({ store }, async (ctx) => {
      if (ctx.path === '/inc') ctx.session.set('n', (ctx.session.get<number>('n') ?? 0) + 1);
      ctx.body = String(ctx.session.get('n'));
    });
    store.close();
    const jar = new Jar();
    jar.take(await t.http.post('/inc').expect(200, '1'));
    jar.take(await t.http.post('/inc').set('Cookie', jar.header()).expect(200, '2'));
    await t.http.get('/').set('Cookie', jar.header()).expect(200, '2');
    expect(calls).to.deep.equal(['set', 'get', 'applyChanges', 'get']);
  });
});
