import { createHash } from 'node:crypto';
import type { Server } from 'node:http';
import Koa from 'koa';
import type { Context } from 'koa';
import request from 'supertest';
import { MemoryStore, SessionLockTimeoutError, SessionStoreError, session } from '../src';
import type { Change, SessionData, SessionEvent, SessionEventName, SessionOptions, Store } from '../src';

// chai 6 ships no type declarations and @types/chai is not a dev dependency.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { expect } = require('chai') as { expect: (actual: unknown, message?: string) => any };

type Res = request.Response;
type Handler = (ctx: Context) => unknown;

const EVENTS: SessionEventName[] = [
  'session:created',
  'session:regenerated',
  'session:destroyed',
  'session:missed',
  'session:invalid',
  'session:interrupted',
  'session:lock-timeout',
];

const sha256 = (id: string): string => createHash('sha256').update(id).digest('hex');
/** What events carry instead of an ID. */
const idHash = (id: string): string => sha256(id).slice(0, 16);
const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

interface Deferred {
  promise: Promise<void>;
  resolve(): void;
}

function deferred(): Deferred {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

/** One event as the app heard it, with what was true at that moment. */
interface Heard {
  name: SessionEventName;
  payload: SessionEvent;
  path: string;
  headersSent: boolean;
  /** What the test's probe found in the store when the event was emitted. */
  probe: Promise<unknown>;
}

interface Running {
  app: Koa;
  server: Server;
  store: Store & { close(): void };
  heard: Heard[];
  errors: unknown[];
  /** Every ID a handler saw as ctx.session.id, before and after it ran. */
  seen: Set<string>;
  /** Set by a test: what to look up in the store when an event is emitted. */
  probe: (event: Heard) => Promise<unknown>;
  /** Resolved when a request to `path` asks for its session's lock. */
  asked(path: string): Deferred;
  /** Resolved when a request to `path` reaches its handler (so it holds its lock). */
  reached(path: string): Deferred;
}

/** One deferred per key, made on first use. */
function once(): (key: string) => Deferred {
  const made = new Map<string, Deferred>();
  return (key) => {
    let found = made.get(key);
    if (found === undefined) made.set(key, (found = deferred()));
    return found;
  };
}

const running: Running[] = [];

afterEach(async () => {
  for (const run of running.splice(0)) {
    run.server.closeAllConnections();
    await new Promise((resolve) => run.server.close(resolve));
    run.store.close();
  }
});

const save: Handler = (ctx) => ctx.session.set('user', 'ada');
const read: Handler = (ctx) => ctx.session.get('user') ?? 'nobody';

/**
 * An app with the session middleware and routes for every event, listening
 * to every event on a real port.
 */
function start(options: SessionOptions = {}, extraRoutes: Record<string, Handler> = {}, keys?: string[]): Running {
  const app = new Koa();
  app.silent = true;
  if (keys !== undefined) app.keys = keys;
  const store = (options.store as Running['store'] | undefined) ?? new MemoryStore();
  const run: Running = {
    app,
    server: undefined as unknown as Server,
    store,
    heard: [],
    errors: [],
    seen: new Set(),
    probe: async () => undefined,
    asked: once(),
    reached: once(),
  };
  app.on('error', (error: unknown) => run.errors.push(error));
  for (const name of EVENTS) {
    app.on(name, (payload: SessionEvent) => {
      const event = {
        name,
        payload,
        path: payload.ctx.path,
        headersSent: payload.ctx.res.headersSent,
        probe: Promise.resolve(undefined as unknown),
      };
      event.probe = run.probe(event);
      run.heard.push(event);
    });
  }
  app.use(
    session({
      lockMode: (ctx) => {
        run.asked(ctx.path).resolve();
        return ctx.method === 'GET' ? 'read' : 'write';
      },
      ...options,
      store,
    }),
  );
  const routes: Record<string, Handler> = {
    '/save': save,
    '/read': read,
    '/update': (ctx) => ctx.session.set('visits', (ctx.session.get<number>('visits') ?? 0) + 1),
    '/login': (ctx) => ctx.session.regenerate(),
    '/logout': (ctx) => ctx.session.destroy(),
    '/logout-and-back': async (ctx) => {
      await ctx.session.destroy();
      ctx.session.set('user', 'grace');
    },
    // A read that changes the session once a concurrent /logout has asked for the lock (?streamed: then answers on ctx.res itself).
    '/slow-set': async (ctx) => {
      await run.asked('/logout').promise;
      await delay(50);
      ctx.session.set('late', true);
      if (ctx.query.streamed !== undefined) {
        ctx.respond = false;
        ctx.res.writeHead(200).end('streamed');
      }
    },
    // A read that regenerates once a concurrent /hold has asked for the lock.
    '/slow-regenerate': async (ctx) => {
      await run.asked('/hold').promise;
      await delay(50);
      await ctx.session.regenerate();
    },
    '/hold': async (ctx) => {
      await delay(Number(ctx.query.ms ?? 1500));
      ctx.session.set('held', true);
    },
    ...extraRoutes,
  };
  app.use(async (ctx) => {
    const handler = routes[ctx.path];
    if (handler === undefined) ctx.throw(404);
    run.seen.add(ctx.session.id);
    run.reached(ctx.path).resolve();
    const body = await handler(ctx);
    run.seen.add(ctx.session.id);
    if (ctx.body === undefined) ctx.body = body ?? 'ok';
  });
  run.server = app.listen(0);
  running.push(run);
  return run;
}

function setCookies(res: Res): string[] {
  const header = res.headers['set-cookie'] as unknown;
  if (header === undefined) return [];
  return Array.isArray(header) ? header : [String(header)];
}

function sessionIdOf(res: Res): string | undefined {
  const line = setCookies(res).find((c) => c.startsWith('session_id='));
  return line === undefined ? undefined : line.slice('session_id='.length).split(';')[0];
}

function cookieHeader(res: Res): string {
  const pairs = setCookies(res).map((c) => c.split(';')[0]);
  expect(pairs, 'the response set no cookie').to.not.be.empty;
  return pairs.join('; ');
}

function named(run: Running, name: SessionEventName): Heard[] {
  return run.heard.filter((event) => event.name === name);
}

/** Starts a request now (supertest only sends once then() is called). */
function send(test: request.Test): Promise<Res> {
  return test.then((res) => res);
}

/** A stored session's read races a logout: the read commits after the session is gone (`streamed`: its response went out before). */
async function interruptRead(run: Running, cookie: string, streamed = false): Promise<{ read: Res; logout: Res }> {
  const pending = send(request(run.server).get(streamed ? '/slow-set?streamed' : '/slow-set').set('Cookie', cookie));
  // /slow-set holds its shared lock while /logout, a read too, removes the session (destroy() acts at once).
  await run.reached('/slow-set').promise;
  const logout = await request(run.server).get('/logout').set('Cookie', cookie);
  const read = await pending;
  return { read, logout };
}

/** /hold keeps the write lock longer than lockTimeout while a second write waits for it. */
async function timeOutLock(run: Running, cookie: string): Promise<{ waiter: Res; holder: Res }> {
  const pending = send(request(run.server).post('/hold').set('Cookie', cookie));
  await run.reached('/hold').promise;
  const waiter = await request(run.server).post('/update').set('Cookie', cookie);
  const holder = await pending;
  return { waiter, holder };
}

describe('session:created', () => {
  it('the first save of a new session emits session:created with the idHash of its ID', async () => {
    const run = start();
    const res = await request(run.server).post('/save').expect(200);
    const id = sessionIdOf(res) as string;
    const created = named(run, 'session:created');
    expect(created).to.have.length(1);
    expect(created[0].payload.idHash).to.equal(idHash(id));
    expect(created[0].payload.ctx.path).to.equal('/save');
  });

  it('session:created is emitted once the store holds the session', async () => {
    const run = start();
    run.probe = (event) => run.store.get(event.payload.ctx.session.id);
    await request(run.server).post('/save').expect(200);
    const [created] = named(run, 'session:created');
    expect(await created.probe).to.not.equal(undefined);
  });

  it('a new session that is never changed emits no session:created', async () => {
    const run = start();
    await request(run.server).get('/read').expect(200, 'nobody');
    expect(run.heard).to.deep.equal([]);
  });

  it('an update of a stored session emits no session:created', async () => {
    const run = start();
    const saved = await request(run.server).post('/save').expect(200);
    await request(run.server).post('/update').set('Cookie', cookieHeader(saved)).expect(200);
    expect(named(run, 'session:created')).to.have.length(1);
  });

  it('regenerate() emits session:created for the new ID', async () => {
    const run = start();
    const saved = await request(run.server).post('/save').expect(200);
    const login = await request(run.server).post('/login').set('Cookie', cookieHeader(saved)).expect(200);
    const created = named(run, 'session:created');
    expect(created.map((e) => e.payload.idHash)).to.deep.equal([idHash(sessionIdOf(saved) as string), idHash(sessionIdOf(login) as string)]);
  });

  it('a set() after destroy() emits session:created for the new ID', async () => {
    const run = start();
    const saved = await request(run.server).post('/save').expect(200);
    const back = await request(run.server).post('/logout-and-back').set('Cookie', cookieHeader(saved)).expect(200);
    const newId = sessionIdOf(back) as string;
    expect(newId).to.match(/^[0-9a-f]{64}$/).and.not.equal(sessionIdOf(saved));
    const created = named(run, 'session:created');
    expect(created.map((e) => e.payload.idHash)).to.deep.equal([idHash(sessionIdOf(saved) as string), idHash(newId)]);
  });
});

describe('session:regenerated', () => {
  it('regenerate() emits session:regenerated with the new idHash, and the old one as oldIdHash', async () => {
    const run = start();
    const saved = await request(run.server).post('/save').expect(200);
    const login = await request(run.server).post('/login').set('Cookie', cookieHeader(saved)).expect(200);
    const regenerated = named(run, 'session:regenerated');
    expect(regenerated).to.have.length(1);
    expect(regenerated[0].payload.idHash).to.equal(idHash(sessionIdOf(login) as string));
    expect(regenerated[0].payload.oldIdHash).to.equal(idHash(sessionIdOf(saved) as string));
    expect(regenerated[0].payload.ctx.path).to.equal('/login');
  });

  it('session:regenerated is emitted once the old ID is gone from the store and the new one is there', async () => {
    const run = start();
    const saved = await request(run.server).post('/save').expect(200);
    const oldId = sessionIdOf(saved) as string;
    run.probe = async (event) => ({
      old: await run.store.get(oldId),
      current: await run.store.get(event.payload.ctx.session.id),
    });
    await request(run.server).post('/login').set('Cookie', cookieHeader(saved)).expect(200);
    const [regenerated] = named(run, 'session:regenerated');
    const found = (await regenerated.probe) as { old: unknown; current: unknown };
    expect(found.old).to.equal(undefined);
    expect(found.current).to.not.equal(undefined);
  });
});

describe('session:destroyed', () => {
  it('destroy() of a stored session emits session:destroyed with its idHash', async () => {
    const run = start();
    const saved = await request(run.server).post('/save').expect(200);
    await request(run.server).post('/logout').set('Cookie', cookieHeader(saved)).expect(200);
    const destroyed = named(run, 'session:destroyed');
    expect(destroyed).to.have.length(1);
    expect(destroyed[0].payload.idHash).to.equal(idHash(sessionIdOf(saved) as string));
    expect(destroyed[0].payload.ctx.path).to.equal('/logout');
  });

  it('session:destroyed is emitted once the store no longer holds the session', async () => {
    const run = start();
    const saved = await request(run.server).post('/save').expect(200);
    const id = sessionIdOf(saved) as string;
    run.probe = () => run.store.get(id);
    await request(run.server).post('/logout').set('Cookie', cookieHeader(saved)).expect(200);
    const [destroyed] = named(run, 'session:destroyed');
    expect(await destroyed.probe).to.equal(undefined);
  });

  /**
   * Two read-mode GET /logout-together of one saved session, both holding
   * the shared lock with the session loaded before either destroys it.
   * Resolves to their statuses, sorted.
   */
  async function twoLogoutsAtOnce(store?: Running['store']): Promise<{ run: Running; id: string; statuses: number[] }> {
    let arrived = 0;
    const bothLoaded = deferred();
    const run = start(store === undefined ? {} : { store }, {
      '/logout-together': async (ctx) => {
        if (++arrived === 2) bothLoaded.resolve();
        await bothLoaded.promise;
        await ctx.session.destroy();
      },
    });
    const saved = await request(run.server).post('/save').expect(200);
    if (store instanceof FailingOnce) store.failNext = true;
    const logouts = [1, 2].map(() => request(run.server).get('/logout-together').set('Cookie', cookieHeader(saved)));
    const statuses = (await Promise.all(logouts)).map((res) => res.status).sort();
    expect(arrived).to.equal(2);
    return { run, id: sessionIdOf(saved) as string, statuses };
  }

  /** A MemoryStore whose next destroy() fails, when told. */
  class FailingOnce extends MemoryStore {
    failNext = false;
    override async destroy(id: string): Promise<void> {
      if (!this.failNext) return super.destroy(id);
      this.failNext = false;
      throw new Error('store down');
    }
  }

  it('two read-mode logouts of one session at once emit one session:destroyed', async () => {
    const { run, id, statuses } = await twoLogoutsAtOnce();
    expect(statuses).to.deep.equal([200, 200]);
    expect(named(run, 'session:destroyed')).to.have.length(1);
    expect(await run.store.get(id)).to.equal(undefined);
  });

  it('when the first of two logouts at once fails in the store and the second removes the session, session:destroyed is emitted once', async () => {
    const { run, id, statuses } = await twoLogoutsAtOnce(new FailingOnce());
    expect(statuses).to.deep.equal([200, 503]);
    expect(named(run, 'session:destroyed')).to.have.length(1);
    expect(await run.store.get(id)).to.equal(undefined);
  });

  it('destroy() of a session that was never saved emits no session:destroyed', async () => {
    const run = start();
    await request(run.server).post('/logout').expect(200);
    expect(named(run, 'session:destroyed')).to.deep.equal([]);
  });
});

describe('session:missed', () => {
  it('a well-formed cookie that names no stored session emits session:missed with its idHash', async () => {
    const run = start();
    const unknown = 'c0ffee'.repeat(10) + 'c0ff';
    await request(run.server).get('/read').set('Cookie', `session_id=${unknown}`).expect(200, 'nobody');
    const missed = named(run, 'session:missed');
    expect(missed).to.have.length(1);
    expect(missed[0].payload.idHash).to.equal(idHash(unknown));
    expect(named(run, 'session:invalid')).to.deep.equal([]);
  });

  it('the cookie of an expired session emits session:missed', async () => {
    const run = start({ maxAge: 150 });
    const saved = await request(run.server).post('/save').expect(200);
    await delay(400);
    await request(run.server).get('/read').set('Cookie', cookieHeader(saved)).expect(200, 'nobody');
    const missed = named(run, 'session:missed');
    expect(missed.map((e) => e.payload.idHash)).to.deep.equal([idHash(sessionIdOf(saved) as string)]);
  });

  it('a correctly signed cookie that names no stored session emits session:missed, not session:invalid', async () => {
    const keys = ['first key'];
    const saved = await request(start({}, {}, keys).server).post('/save').expect(200);
    const other = start({}, {}, keys); // same keys, another store: the signature holds, the ID is unknown there
    await request(other.server).get('/read').set('Cookie', cookieHeader(saved)).expect(200, 'nobody');
    expect(named(other, 'session:missed').map((e) => e.payload.idHash)).to.deep.equal([idHash(sessionIdOf(saved) as string)]);
    expect(named(other, 'session:invalid')).to.deep.equal([]);
  });

  it('the cookie of a live session emits neither session:missed nor session:invalid', async () => {
    const run = start();
    const saved = await request(run.server).post('/save').expect(200);
    await request(run.server).get('/read').set('Cookie', cookieHeader(saved)).expect(200, 'ada');
    expect(run.heard.map((e) => e.name)).to.deep.equal(['session:created']);
  });
});

describe('session:invalid', () => {
  it('a malformed cookie emits session:invalid without an idHash', async () => {
    const run = start();
    await request(run.server).get('/read').set('Cookie', 'session_id=not-an-id').expect(200, 'nobody');
    const invalid = named(run, 'session:invalid');
    expect(invalid).to.have.length(1);
    expect(invalid[0].payload).to.not.have.property('idHash');
    expect(invalid[0].payload.ctx.path).to.equal('/read');
    expect(named(run, 'session:missed')).to.deep.equal([]);
  });

  it('an ID in upper-case hex is malformed and emits session:invalid', async () => {
    const run = start();
    const saved = await request(run.server).post('/save').expect(200);
    const upper = (sessionIdOf(saved) as string).toUpperCase();
    await request(run.server).get('/read').set('Cookie', `session_id=${upper}`).expect(200, 'nobody');
    expect(named(run, 'session:invalid')).to.have.length(1);
  });

  it('a cookie without its signature in signed mode emits session:invalid', async () => {
    const run = start({}, {}, ['a key']);
    const saved = await request(run.server).post('/save').expect(200);
    await request(run.server).get('/read').set('Cookie', `session_id=${sessionIdOf(saved)}`).expect(200, 'nobody');
    const invalid = named(run, 'session:invalid');
    expect(invalid).to.have.length(1);
    expect(invalid[0].payload).to.not.have.property('idHash');
  });

  it('a cookie with a wrong signature emits session:invalid', async () => {
    const run = start({}, {}, ['a key']);
    const saved = await request(run.server).post('/save').expect(200);
    const forged = `session_id=${sessionIdOf(saved)}; session_id.sig=${'A'.repeat(27)}`;
    await request(run.server).get('/read').set('Cookie', forged).expect(200, 'nobody');
    const invalid = named(run, 'session:invalid');
    expect(invalid).to.have.length(1);
    expect(invalid[0].payload).to.not.have.property('idHash');
  });

  it('an empty cookie value (session_id=) is no cookie at all: it emits no session:invalid', async () => {
    const run = start();
    await request(run.server).get('/read').set('Cookie', 'session_id=').expect(200, 'nobody');
    expect(run.heard.map((e) => e.name)).to.deep.equal([]);
  });
});

describe('session:interrupted', () => {
  it('a read that commits after a concurrent logout emits session:interrupted with the idHash of its session', async () => {
    const run = start();
    const saved = await request(run.server).post('/save').expect(200);
    const { read } = await interruptRead(run, cookieHeader(saved));
    expect(read.status).to.equal(200);
    expect(sessionIdOf(read)).to.equal(undefined);
    const interrupted = named(run, 'session:interrupted');
    expect(interrupted).to.have.length(1);
    expect(interrupted[0].payload.idHash).to.equal(idHash(sessionIdOf(saved) as string));
    expect(interrupted[0].payload.ctx.path).to.equal('/slow-set');
  });

  it('session:interrupted comes after the session:destroyed of the request that ended the session', async () => {
    const run = start();
    const saved = await request(run.server).post('/save').expect(200);
    await interruptRead(run, cookieHeader(saved));
    expect(run.heard.map((e) => `${e.name} ${e.path}`)).to.deep.equal([
      'session:created /save',
      'session:destroyed /logout',
      'session:interrupted /slow-set',
    ]);
  });

  it('a read whose response went out before it commits, after a concurrent logout, emits session:interrupted and stores nothing', async () => {
    const run = start();
    const saved = await request(run.server).post('/save').expect(200);
    const id = sessionIdOf(saved) as string;
    const { read } = await interruptRead(run, cookieHeader(saved), true);
    expect(read.text).to.equal('streamed');
    await delay(50); // the read commits after its response
    expect(await run.store.get(id), 'the logged-out session').to.equal(undefined);
    const interrupted = named(run, 'session:interrupted');
    expect(interrupted.map((e) => [e.path, e.payload.idHash])).to.deep.equal([['/slow-set', idHash(id)]]);
  });

  it('a request queued behind a logout of its session, that then changes it, emits session:interrupted with the idHash of that session', async () => {
    const run: Running = start({}, {
      '/slow-logout': async (ctx) => {
        await ctx.session.destroy();
        await run.asked('/update').promise; // the update is in line behind this logout
      },
    });
    const saved = await request(run.server).post('/save').expect(200);
    const cookie = cookieHeader(saved);
    const logout = send(request(run.server).post('/slow-logout').set('Cookie', cookie));
    await run.reached('/slow-logout').promise;
    const queued = await request(run.server).post('/update').set('Cookie', cookie);
    expect((await logout).status).to.equal(200);
    expect(queued.status).to.equal(200);
    expect(sessionIdOf(queued), 'Set-Cookie of the queued request').to.equal(undefined);
    const interrupted = named(run, 'session:interrupted');
    expect(interrupted.map((e) => [e.path, e.payload.idHash])).to.deep.equal([['/update', idHash(sessionIdOf(saved) as string)]]);
  });
});

describe('session:lock-timeout', () => {
  it('a request that waits longer than lockTimeout emits session:lock-timeout with the idHash of its session', async () => {
    const run = start({ lockTimeout: 200 });
    const saved = await request(run.server).post('/save').expect(200);
    const { waiter, holder } = await timeOutLock(run, cookieHeader(saved));
    expect(waiter.status).to.equal(503);
    expect(holder.status).to.equal(200);
    const timeouts = named(run, 'session:lock-timeout');
    expect(timeouts).to.have.length(1);
    expect(timeouts[0].payload.idHash).to.equal(idHash(sessionIdOf(saved) as string));
    expect(timeouts[0].payload.ctx.path).to.equal('/update');
    expect(waiter.text, "Koa's status text, not the library's message").to.equal('Service Unavailable');
    const [error] = run.errors as SessionLockTimeoutError[];
    expect(error).to.be.instanceOf(SessionLockTimeoutError);
    expect([error.code, error.status, error.statusCode, error.expose]).to.deep.equal(['ESESSIONLOCKTIMEOUT', 503, 503, false]);
  });

  it("a session:lock-timeout listener that throws fails the request with the listener's error instead, as Node's emitter would have it", async () => {
    const run = start({ lockTimeout: 200 });
    const saved = await request(run.server).post('/save').expect(200);
    const listenerError = new Error('session:lock-timeout listener failed');
    run.app.on('session:lock-timeout', () => {
      throw listenerError;
    });
    const { waiter, holder } = await timeOutLock(run, cookieHeader(saved));
    expect(waiter.status).to.equal(500);
    expect(holder.status).to.equal(200);
    expect(run.errors).to.deep.equal([listenerError]);
    expect(named(run, 'session:lock-timeout')).to.have.length(1);
  });
});

describe('session:lock-timeout at commit', () => {
  it('a read that regenerates and times out waiting to commit emits session:lock-timeout with the idHash of the session it loaded', async () => {
    const run = start({ lockTimeout: 200 });
    const saved = await request(run.server).post('/save').expect(200);
    const cookie = cookieHeader(saved);
    const reading = send(request(run.server).get('/slow-regenerate').set('Cookie', cookie));
    await run.reached('/slow-regenerate').promise;
    // GET /hold shares the lock with the read and keeps it past lockTimeout: the regenerate's commit waits for it to leave.
    const holder = await request(run.server).get('/hold').set('Cookie', cookie);
    const read = await reading;
    expect(holder.status).to.equal(200);
    expect(read.status).to.equal(503);
    const timeouts = named(run, 'session:lock-timeout');
    expect(timeouts).to.have.length(1);
    expect(timeouts[0].payload.ctx.path).to.equal('/slow-regenerate');
    expect(timeouts[0].payload.idHash).to.equal(idHash(sessionIdOf(saved) as string));
  });
});

describe('a listener that throws after the store changed', () => {
  /** Makes every `name` listener after the test's own throw, as a metrics client whose backend is down would. */
  function failing(run: Running, name: SessionEventName): Error {
    const error = new Error(`${name} listener failed`);
    run.app.on(name, () => {
      throw error;
    });
    return error;
  }

  it('session:regenerated: the login fails with its error, but the response carries the new ID, which holds the session', async () => {
    const run = start();
    const saved = await request(run.server).post('/save').expect(200);
    const oldId = sessionIdOf(saved) as string;
    const error = failing(run, 'session:regenerated');

    const login = await request(run.server).post('/login').set('Cookie', cookieHeader(saved)).expect(500);
    const newId = sessionIdOf(login);
    expect(newId, 'the new ID on the error response').to.match(/^[0-9a-f]{64}$/).and.not.equal(oldId);
    expect(run.errors).to.include(error);
    await request(run.server).get('/read').set('Cookie', cookieHeader(login)).expect(200, 'ada');
    await request(run.server).get('/read').set('Cookie', cookieHeader(saved)).expect(200, 'nobody');
  });

  it('session:created: the request fails with its error, but the new session it stored is the one its cookie names', async () => {
    const run = start();
    const error = failing(run, 'session:created');

    const saved = await request(run.server).post('/save').expect(500);
    expect(sessionIdOf(saved), 'the new ID on the error response').to.match(/^[0-9a-f]{64}$/);
    expect(run.errors).to.include(error);
    await request(run.server).get('/read').set('Cookie', cookieHeader(saved)).expect(200, 'ada');
  });

  it('session:destroyed: destroy() completes and the handler goes on; the request fails with the error and expires the cookie', async () => {
    const run = start();
    const saved = await request(run.server).post('/save').expect(200);
    const id = sessionIdOf(saved) as string;
    const error = failing(run, 'session:destroyed');

    const back = await request(run.server).post('/logout-and-back').set('Cookie', cookieHeader(saved)).expect(500);
    const newId = sessionIdOf(back);
    expect(newId, 'the session the handler started after destroy()').to.match(/^[0-9a-f]{64}$/).and.not.equal(id);
    expect(run.errors).to.include(error);
    expect(await run.store.get(id), 'the destroyed session').to.equal(undefined);
    await request(run.server).get('/read').set('Cookie', cookieHeader(back)).expect(200, 'grace');

    const saved2 = await request(run.server).post('/save').expect(200);
    const logout = await request(run.server).post('/logout').set('Cookie', cookieHeader(saved2)).expect(500);
    expect(sessionIdOf(logout), 'the cookie expired on the error response').to.equal('');
  });

  it("session:destroyed in a handler that then fails: the request fails with the handler's error, expires the cookie, and the app hears both errors", async () => {
    const handlerError = Object.assign(new Error('handler failed'), { status: 400, expose: true });
    const run = start({}, {
      '/logout-then-fail': async (ctx) => {
        await ctx.session.destroy();
        throw handlerError;
      },
    });
    const saved = await request(run.server).post('/save').expect(200);
    const error = failing(run, 'session:destroyed');

    const res = await request(run.server).post('/logout-then-fail').set('Cookie', cookieHeader(saved)).expect(400);
    expect(sessionIdOf(res), 'the cookie expired on the error response').to.equal('');
    expect(run.errors).to.have.members([error, handlerError]);
  });

  it('session:destroyed on a response whose headers were already sent: the body still goes out whole, and the app hears the error', async () => {
    const run = start({}, {
      '/logout-flushed': async (ctx) => {
        await ctx.session.destroy();
        ctx.status = 200;
        ctx.flushHeaders();
        ctx.body = 'bye';
      },
    });
    const saved = await request(run.server).post('/save').expect(200);
    const error = failing(run, 'session:destroyed');

    const res = await request(run.server).post('/logout-flushed').set('Cookie', cookieHeader(saved)).timeout(3_000);
    expect([res.status, res.text]).to.deep.equal([200, 'bye']);
    expect(await run.store.get(sessionIdOf(saved) as string), 'the destroyed session').to.equal(undefined);
    expect(run.errors).to.deep.equal([error]);
  });

  it('when two listeners throw in one request, the request fails with the first error and the app hears the second', async () => {
    const run = start();
    const saved = await request(run.server).post('/save').expect(200);
    const created = failing(run, 'session:created');
    const regenerated = failing(run, 'session:regenerated');

    const login = await request(run.server).post('/login').set('Cookie', cookieHeader(saved)).expect(500);
    expect(sessionIdOf(login), 'the new ID on the error response').to.match(/^[0-9a-f]{64}$/);
    expect(run.errors).to.include(created);
    expect(run.errors).to.include(regenerated);
  });

  it('a destroy() after the session middleware is done (in a middleware around it) rejects with a throwing listener’s error, as emit throws it', async () => {
    const app = new Koa();
    app.silent = true;
    const store = new MemoryStore();
    let outcome = 'pending';
    app.use(async (ctx, next) => {
      await next();
      if (ctx.path === '/logout') {
        await ctx.session.destroy().then(
          () => (outcome = 'resolved'),
          (error: Error) => (outcome = `rejected: ${error.message}`),
        );
      }
    });
    app.use(session({ store }));
    app.use((ctx) => {
      if (ctx.path === '/save') ctx.session.set('user', 'ada');
      ctx.body = 'ok';
    });
    app.on('session:destroyed', () => {
      throw new Error('metrics backend down');
    });
    const server = app.listen(0);
    try {
      const saved = await request(server).post('/save').expect(200);
      await request(server).post('/logout').set('Cookie', cookieHeader(saved)).expect(200);
      expect(outcome).to.equal('rejected: metrics backend down');
      expect(await store.get(sessionIdOf(saved) as string), 'the session is removed all the same').to.equal(undefined);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      store.close();
    }
  });

  it("when the commit fails after such a listener threw, the request fails with the commit's error and the app still hears the listener's", async () => {
    // Removes sessions, but cannot save one.
    class NoSavesStore extends MemoryStore {
      override async set(): Promise<void> {
        throw new Error('out of space');
      }
    }
    const store = new NoSavesStore();
    const run = start({ store });
    const id = 'e'.repeat(64);
    await MemoryStore.prototype.set.call(store, id, { data: { user: 'ada' }, createdAt: Date.now(), touchedAt: Date.now() }, 60_000);
    const error = failing(run, 'session:destroyed');

    await request(run.server).post('/logout-and-back').set('Cookie', `session_id=${id}`).expect(503);
    expect(await store.get(id), 'the destroyed session').to.equal(undefined);
    expect(run.errors).to.include(error);
    expect(run.errors.some((e) => e instanceof SessionStoreError), 'the failed save').to.equal(true);
  });

  /** A MemoryStore whose removals or commits fail. */
  class BrokenStore extends MemoryStore {
    constructor(private readonly broken: 'destroy' | 'applyChanges') {
      super();
    }

    override async destroy(id: string): Promise<void> {
      if (this.broken === 'destroy') throw new Error('store down');
      return super.destroy(id);
    }

    override async applyChanges(id: string, changes: readonly Change[], touchedAt: number, maxAgeMs: number): Promise<boolean> {
      if (this.broken === 'applyChanges') throw new Error('store down');
      return super.applyChanges(id, changes, touchedAt, maxAgeMs);
    }
  }

  const AFTER_A_HANDLER_ERROR: Array<[string, 'destroy' | 'applyChanges', Handler, number]> = [
    [
      "when ctx.session = null cannot be carried out after the handler threw, the request fails with the handler's error and the app hears the store's",
      'destroy',
      (ctx) => {
        (ctx as { session: unknown }).session = null;
        throw new Error('handler failed');
      },
      500,
    ],
    [
      "when the commit fails after the handler threw, the request fails with the commit's error and the app still hears the handler's",
      'applyChanges',
      (ctx) => {
        ctx.session.set('user', 'grace');
        throw new Error('handler failed');
      },
      503,
    ],
  ];
  for (const [title, broken, handler, status] of AFTER_A_HANDLER_ERROR) {
    it(title, async () => {
      const run = start({ store: new BrokenStore(broken) }, { '/then-fail': handler });
      const saved = await request(run.server).post('/save').expect(200);
      await request(run.server).post('/then-fail').set('Cookie', cookieHeader(saved)).expect(status);
      expect(run.errors.map((e) => (e as Error).message)).to.include('handler failed');
      expect(run.errors.some((e) => e instanceof SessionStoreError), `the failed ${broken}`).to.equal(true);
    });
  }

  const THROWN_VALUES: Array<[string, unknown, string[]]> = [
    ['an object', { status: 409, message: 'conflict' }, ['non-error thrown: {"status":409,"message":"conflict"}']],
    ['undefined (which Koa ignores)', undefined, []],
  ];
  for (const [what, thrown, told] of THROWN_VALUES) {
    it(`when the commit fails after the handler threw ${what}, not an Error, the request still fails with the commit's 503, and Koa's own listener hears it as Koa's ctx.onerror would`, async () => {
      const run = start({ store: new BrokenStore('applyChanges') }, {
        '/then-throw-value': (ctx) => {
          ctx.session.set('user', 'grace');
          throw thrown;
        },
      });
      // As an app that adds no listener of its own has it: Koa's onerror (which throws for a value that is
      // not an Error) first; a recorder after it.
      run.app.removeAllListeners('error');
      run.app.on('error', (error: Error) => run.app.onerror(error));
      run.app.on('error', (error: unknown) => run.errors.push(error));
      const saved = await request(run.server).post('/save').expect(200);

      const res = await request(run.server).post('/then-throw-value').set('Cookie', cookieHeader(saved));

      expect(res.status).to.equal(503);
      expect(run.errors.every((e) => e instanceof Error), 'every error the app heard is an Error').to.equal(true);
      const heard = run.errors.map((e) => (e as Error).message);
      expect(heard.filter((message) => message.startsWith('non-error thrown'))).to.deep.equal(told);
      expect(run.errors.some((e) => e instanceof SessionStoreError), 'the failed commit').to.equal(true);
    });
  }
});

describe('events with hashIds', () => {
  it('with hashIds, idHash is still the hash of the ID in the cookie', async () => {
    const run = start({ hashIds: true });
    const saved = await request(run.server).post('/save').expect(200);
    const login = await request(run.server).post('/login').set('Cookie', cookieHeader(saved)).expect(200);
    const regenerated = named(run, 'session:regenerated');
    expect(regenerated[0].payload.idHash).to.equal(idHash(sessionIdOf(login) as string));
    expect(regenerated[0].payload.oldIdHash).to.equal(idHash(sessionIdOf(saved) as string));
  });
});

/**
 * Drives one app through every event: created, regenerated, destroyed,
 * missed, invalid, interrupted and lock-timeout. Returns every raw ID the
 * client or a handler saw.
 */
async function everyEvent(run: Running): Promise<string[]> {
  const ids = new Set<string>();
  const remember = (res: Res) => {
    const id = sessionIdOf(res);
    if (id) ids.add(id);
    return res;
  };
  const a = remember(await request(run.server).post('/save').expect(200));
  const b = remember(await request(run.server).post('/login').set('Cookie', cookieHeader(a)).expect(200));
  // A well-formed ID that names no session (the pre-login one, sent at once, counts as sent before the login).
  const unknown = 'c0ffee'.repeat(10) + 'c0ff';
  ids.add(unknown);
  await request(run.server).get('/read').set('Cookie', `session_id=${unknown}`).expect(200, 'nobody');
  await request(run.server).get('/read').set('Cookie', 'session_id=forged').expect(200, 'nobody');
  await interruptRead(run, cookieHeader(b));
  const c = remember(await request(run.server).post('/save').expect(200));
  const { waiter } = await timeOutLock(run, cookieHeader(c));
  expect(waiter.status).to.equal(503);
  expect(new Set(run.heard.map((e) => e.name))).to.have.keys(EVENTS);
  return [...ids, ...run.seen];
}

describe('events, all together', () => {
  it('no event payload contains a raw session ID', async () => {
    const run = start({ lockTimeout: 200 });
    const ids = await everyEvent(run);
    expect(ids.length).to.be.greaterThan(3);
    for (const event of run.heard) {
      const { ctx, ...rest } = event.payload;
      expect(ctx).to.not.equal(undefined);
      const serialized = JSON.stringify(rest);
      for (const id of ids) expect(serialized.includes(id), `${event.name} carries a raw ID: ${serialized}`).to.equal(false);
    }
  });

  it('every event is emitted before its response is sent', async () => {
    const run = start({ lockTimeout: 200 });
    await everyEvent(run);
    for (const event of run.heard) expect(event.headersSent, `${event.name} came after the response`).to.equal(false);
  });

  it("every event's ctx is the context of the request it is about", async () => {
    const run = start({ lockTimeout: 200 });
    await everyEvent(run);
    expect(run.heard.map((e) => `${e.name} ${e.path}`)).to.deep.equal([
      'session:created /save',
      'session:created /login',
      'session:regenerated /login',
      'session:missed /read',
      'session:invalid /read',
      'session:destroyed /logout',
      'session:interrupted /slow-set',
      'session:created /save',
      'session:lock-timeout /update',
    ]);
  });

  it('an app with no listeners runs the same requests without events', async () => {
    const app = new Koa();
    app.silent = true;
    app.use(session());
    app.use(async (ctx) => {
      if (ctx.path === '/save') ctx.session.set('user', 'ada');
      if (ctx.path === '/login') await ctx.session.regenerate();
      ctx.body = ctx.session.get('user') ?? 'nobody';
    });
    const server = app.listen(0);
    try {
      const saved = await request(server).post('/save').expect(200, 'ada');
      await request(server).post('/login').set('Cookie', cookieHeader(saved)).expect(200, 'ada');
      await request(server).get('/read').set('Cookie', 'session_id=forged').expect(200, 'nobody');
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe('no raw ID in error messages', () => {
  it("a lock timeout's error message contains no raw session ID", async () => {
    const run = start({ lockTimeout: 200 });
    const saved = await request(run.server).post('/save').expect(200);
    const id = sessionIdOf(saved) as string;
    await timeOutLock(run, cookieHeader(saved));
    const timeouts = run.errors.filter((e) => e instanceof SessionLockTimeoutError) as SessionLockTimeoutError[];
    expect(timeouts).to.have.length(1);
    expect(timeouts[0].message).to.not.include(id);
    expect(String(timeouts[0].stack)).to.not.include(id);
  });

  it("a store failure's error message contains no raw session ID", async () => {
    const store = new FailingStore();
    const run = start({ store });
    const id = 'd'.repeat(64);
    await request(run.server).get('/read').set('Cookie', `session_id=${id}`).expect(503);
    const [error] = run.errors as SessionStoreError[];
    expect(error).to.be.instanceOf(SessionStoreError);
    expect(error.message).to.not.include(id);
    expect(String(error.stack)).to.not.include(id);
  });

  it("a store failure's cause is the store's own error, unchanged", async () => {
    const store = new FailingStore();
    const run = start({ store });
    const id = 'e'.repeat(64);
    await request(run.server).get('/read').set('Cookie', `session_id=${id}`).expect(503);
    const [error] = run.errors as SessionStoreError[];
    expect(error.cause).to.equal(store.thrown[0]);
    expect((error.cause as Error).message).to.equal(`cannot read ${id}`);
  });
});

/** A store whose every call fails with an error that names the ID it was given. */
class FailingStore implements Store {
  readonly thrown: Error[] = [];

  private fail(what: string, id: string): never {
    const error = new Error(`cannot ${what} ${id}`);
    this.thrown.push(error);
    throw error;
  }

  async get(id: string): Promise<SessionData | undefined> {
    return this.fail('read', id);
  }

  async set(id: string): Promise<void> {
    this.fail('write', id);
  }

  async destroy(id: string): Promise<void> {
    this.fail('remove', id);
  }

  close(): void {}
}
