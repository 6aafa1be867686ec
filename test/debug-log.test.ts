import { spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash } from 'node:crypto';
import path from 'node:path';
import request from 'supertest';

// chai 6 ships no type declarations and @types/chai is not a dev dependency.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { expect } = require('chai') as { expect: (actual: unknown, message?: string) => any };

type Res = request.Response;

const ROOT = path.resolve(__dirname, '..');
const FIXTURE = path.join(__dirname, 'fixtures', 'debug-app.ts');

/** What debug lines and events carry instead of an ID. */
const idHash = (id: string): string => createHash('sha256').update(id).digest('hex').slice(0, 16);

/** The debug-app child process: its stdout as JSON messages, its stderr as text. */
class DebugApp {
  readonly messages: Record<string, unknown>[] = [];
  stderr = '';
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly exited: Promise<number | null>;
  private waiters: Array<() => void> = [];

  constructor(env: NodeJS.ProcessEnv) {
    this.child = spawn(process.execPath, ['-r', 'ts-node/register', FIXTURE], {
      cwd: ROOT,
      // Type-checking the fixture in the child would only slow the start.
      env: { ...env, TS_NODE_TRANSPILE_ONLY: 'true' },
    });
    let pending = '';
    this.child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      pending += chunk;
      const lines = pending.split('\n');
      pending = lines.pop() as string;
      for (const line of lines) if (line.trim() !== '') this.messages.push(JSON.parse(line) as Record<string, unknown>);
      for (const wake of this.waiters.splice(0)) wake();
    });
    this.child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderr += chunk;
    });
    this.exited = new Promise((resolve) => this.child.once('exit', (code) => resolve(code)));
  }

  /** The first stdout message with `key`, once it arrives. */
  async message(key: string): Promise<Record<string, unknown>> {
    for (;;) {
      const found = this.messages.find((m) => key in m);
      if (found !== undefined) return found;
      const exited = await Promise.race([
        new Promise<false>((resolve) => this.waiters.push(() => resolve(false))),
        this.exited.then(() => true),
      ]);
      if (exited && !this.messages.some((m) => key in m)) {
        throw new Error(`debug-app exited before saying ${key}; stderr:\n${this.stderr}`);
      }
    }
  }

  async url(): Promise<string> {
    const { port } = await this.message('port');
    return `http://127.0.0.1:${String(port)}`;
  }

  /** Ends its stdin, which makes it close its server and exit. */
  async stop(): Promise<number | null> {
    this.child.stdin.end();
    return this.exited;
  }

  /** Every ID the app's handlers saw. */
  get idsSeen(): string[] {
    return this.messages.flatMap((m) => (Array.isArray(m.ids) ? (m.ids as string[]) : []));
  }

  /** The library's debug lines (util.debuglog prefixes each with the section name). */
  get debugLines(): string[] {
    return this.stderr.split('\n').filter((line) => line.startsWith('KOA-LOCKED-SESSION '));
  }
}

function setCookies(res: Res): string[] {
  const header = res.headers['set-cookie'] as unknown;
  if (header === undefined) return [];
  return Array.isArray(header) ? header : [String(header)];
}

function sessionIdOf(res: Res): string {
  const line = setCookies(res).find((c) => c.startsWith('session_id='));
  if (line === undefined) throw new Error('the response set no session cookie');
  return line.slice('session_id='.length).split(';')[0];
}

/** Debug lines that match `what` and name every one of `ids` by its hash. */
function linesAbout(app: DebugApp, what: RegExp, ...ids: string[]): string[] {
  return app.debugLines.filter((line) => what.test(line) && ids.every((id) => line.includes(idHash(id))));
}

describe('debug output with NODE_DEBUG=koa-locked-session', function () {
  // A child process that starts ts-node, on a shared machine.
  this.timeout(120_000);

  let app: DebugApp;
  /** The first session's ID, then the ID regenerate() gave it. */
  let first = '';
  let second = '';
  /** Every raw ID the client or the app saw. */
  const rawIds = new Set<string>();

  before(async () => {
    app = new DebugApp({ ...process.env, NODE_DEBUG: 'koa-locked-session' });
    const url = await app.url();
    const saved = await request(url).post('/save').expect(200);
    first = sessionIdOf(saved);
    const cookie = `session_id=${first}`;
    await request(url).get('/read').set('Cookie', cookie).expect(200, '1');

    // /bump waits for the write lock /hold keeps.
    const holding = request(url).post('/hold?ms=800').set('Cookie', cookie).then((res) => res);
    await app.message('holding');
    await request(url).post('/bump').set('Cookie', cookie).expect(200);
    expect((await holding).status).to.equal(200);

    const login = await request(url).post('/login').set('Cookie', cookie).expect(200);
    second = sessionIdOf(login);
    await request(url).post('/logout').set('Cookie', `session_id=${second}`).expect(200);
    await request(url).get('/read').set('Cookie', cookie).expect(200, 'nobody');
    await request(url).get('/read').set('Cookie', 'session_id=garbage').expect(200, 'nobody');

    expect(await app.stop()).to.equal(0);
    for (const id of [first, second, ...app.idsSeen]) rawIds.add(id);
  });

  after(async () => {
    await app?.stop();
  });

  it('the library writes debug lines to stderr', () => {
    expect(app.debugLines, app.stderr).to.not.be.empty;
  });

  it('loading a stored session is logged with its idHash', () => {
    expect(linesAbout(app, /\bload/i, first), app.debugLines.join('\n')).to.not.be.empty;
  });

  it("taking a session's lock is logged with its idHash", () => {
    expect(linesAbout(app, /\block/i, first), app.debugLines.join('\n')).to.not.be.empty;
  });

  it('waiting for a lock another request holds is logged with its idHash', () => {
    expect(linesAbout(app, /\bwait/i, first), app.debugLines.join('\n')).to.not.be.empty;
  });

  it('creating a session is logged with its idHash', () => {
    expect(linesAbout(app, /\bcreat/i, first), app.debugLines.join('\n')).to.not.be.empty;
  });

  it('committing a change to a stored session is logged with its idHash', () => {
    expect(linesAbout(app, /\b(commit|update|sav)/i, first), app.debugLines.join('\n')).to.not.be.empty;
  });

  it('regenerating a session is logged with the new idHash and the old one', () => {
    expect(linesAbout(app, /\bregenerat/i, second, first), app.debugLines.join('\n')).to.not.be.empty;
  });

  it('destroying a session is logged with its idHash', () => {
    expect(linesAbout(app, /\bdestroy/i, second), app.debugLines.join('\n')).to.not.be.empty;
  });

  it('no debug line ends with a space', () => {
    expect(app.debugLines.filter((line) => line !== line.trimEnd())).to.deep.equal([]);
  });

  it('no debug line contains a raw session ID', () => {
    expect(rawIds.size).to.be.greaterThan(3);
    for (const id of rawIds) expect(app.stderr.includes(id), `raw ID ${id} in stderr`).to.equal(false);
  });
});

describe('debug output without NODE_DEBUG', function () {
  this.timeout(120_000);

  it('the library writes nothing to stderr', async () => {
    const env = { ...process.env };
    delete env.NODE_DEBUG;
    const app = new DebugApp(env);
    try {
      const url = await app.url();
      const saved = await request(url).post('/save').expect(200);
      await request(url).post('/login').set('Cookie', `session_id=${sessionIdOf(saved)}`).expect(200);
    } finally {
      await app.stop();
    }
    expect(app.stderr).to.equal('');
  });
});
