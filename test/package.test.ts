/**
 * SPEC "Package" and "Exports", as a user of the published package sees
 * them: the project is packed with `npm pack` (which must build it through
 * `prepare`), the tarball is installed into a fresh directory next to koa,
 * and plain Node 20 (CommonJS and ESM) and tsc use it from there.
 */
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from './support/app';

const ROOT = join(__dirname, '..');
const MODULES = join(ROOT, 'node_modules');

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], cwd: string, timeout = 120_000): Promise<Ran> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd, timeout, maxBuffer: 16 * 1024 * 1024, env: { ...process.env, NODE_OPTIONS: '' } }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : 1;
      resolve({ code, stdout, stderr });
    });
  });
}

async function mustRun(cmd: string, args: string[], cwd: string, timeout?: number): Promise<string> {
  const result = await run(cmd, args, cwd, timeout);
  if (result.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${result.code}):\n${result.stdout}\n${result.stderr}`);
  return result.stdout;
}

/** Runs `source` with node in the consumer directory and parses the last line it prints as JSON. */
async function nodeJson(dir: string, file: string, source: string): Promise<Record<string, unknown>> {
  writeFileSync(join(dir, file), source);
  const out = await mustRun(process.execPath, [file], dir, 60_000);
  const lines = out.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]) as Record<string, unknown>;
}

const EXPORTED = [
  'session', 'withStore', 'getSession', 'fromContext', 'MemoryStore', 'createMemoryStore',
  'RedisStore', 'SessionLockTimeoutError', 'SessionStoreError',
];

describe('Package: packed with npm pack and installed into a fresh project', function () {
  this.timeout(180_000);

  let work: string;
  let consumer: string;
  let tarball: string;

  before(async function () {
    this.timeout(180_000);
    work = mkdtempSync(join(tmpdir(), 'kls-package-'));

    // A checkout without dist/: npm pack must build it through `prepare`.
    const checkout = join(work, 'checkout');
    for (const entry of ['package.json', 'tsconfig.json', 'tsconfig.build.json', 'README.md', 'LICENSE', 'src', 'esm']) {
      if (existsSync(join(ROOT, entry))) cpSync(join(ROOT, entry), join(checkout, entry), { recursive: true });
    }
    symlinkSync(MODULES, join(checkout, 'node_modules'), 'dir');
    expect(existsSync(join(checkout, 'dist'))).to.equal(false);

    const packs = join(work, 'packs');
    mkdirSync(packs);
    const out = await mustRun('npm', ['pack', '--pack-destination', packs], checkout, 150_000);
    const name = out.trim().split('\n').pop() as string;
    tarball = join(packs, name);
    expect(existsSync(tarball), `tarball ${tarball}`).to.equal(true);

    consumer = join(work, 'consumer');
    mkdirSync(consumer);
    writeFileSync(join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true }));
    // Offline: koa and the package's dependencies come from this checkout's node_modules (the npm
    // cache need not hold their registry metadata); --ignore-scripts: koa has a build step of its own.
    const { dependencies = {} } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> };
    const local = ['koa', ...Object.keys(dependencies)].map((dependency) => join(MODULES, dependency));
    await mustRun('npm', ['install', '--no-audit', '--no-fund', '--offline', '--ignore-scripts', tarball, ...local], consumer, 120_000);
    // Type declarations for tsc (koa's, node's).
    symlinkSync(join(MODULES, '@types'), join(consumer, 'node_modules', '@types'), 'dir');
  });

  after(() => {
    if (work !== undefined) rmSync(work, { recursive: true, force: true });
  });

  it('npm pack builds the package: the tarball has the compiled CommonJS and its .d.ts', () => {
    const installed = join(consumer, 'node_modules', 'koa-locked-session');
    expect(existsSync(join(installed, 'dist', 'index.js'))).to.equal(true);
    expect(existsSync(join(installed, 'dist', 'index.d.ts'))).to.equal(true);
    expect(existsSync(join(installed, 'esm', 'index.d.mts')), 'the ESM entry\'s declarations').to.equal(true);
    expect(readdirSync(join(installed, 'dist')).filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))).to.deep.equal([]);
  });

  it('the tarball has the LICENSE, and its source maps carry the sources they point to (src/ is not shipped)', () => {
    const installed = join(consumer, 'node_modules', 'koa-locked-session');
    expect(readFileSync(join(installed, 'LICENSE'), 'utf8')).to.match(/^MIT License/);
    const map = JSON.parse(readFileSync(join(installed, 'dist', 'middleware.js.map'), 'utf8')) as { sources: string[]; sourcesContent?: string[] };
    expect(existsSync(join(installed, 'src')), 'src/ shipped').to.equal(false);
    expect(map.sources).to.deep.equal(['../src/middleware.ts']);
    expect(map.sourcesContent?.[0]).to.include('export function session(');
  });

  it('the package is named koa-locked-session and declares its dependencies, peers and Node version as the SPEC says', () => {
    const pkg = JSON.parse(readFileSync(join(consumer, 'node_modules', 'koa-locked-session', 'package.json'), 'utf8'));
    expect(pkg.name).to.equal('koa-locked-session');
    expect(Object.keys(pkg.dependencies ?? {}).sort()).to.deep.equal(['async-mutex', 'cookies']);
    expect(pkg.peerDependencies).to.have.property('koa');
    expect(pkg.peerDependencies).to.have.property('ioredis');
    expect(pkg.peerDependenciesMeta?.ioredis?.optional).to.equal(true);
    expect(pkg.dependencies).to.not.have.property('koa');
    expect(pkg.dependencies).to.not.have.property('ioredis');
    expect(pkg.engines?.node).to.equal('>=20');
  });

  it('require() gives every SPEC export, and .default is session itself', async () => {
    const result = await nodeJson(consumer, 'check.cjs', `
      const lib = require('koa-locked-session');
      const names = ${JSON.stringify(EXPORTED)};
      console.log(JSON.stringify({
        types: Object.fromEntries(names.map((n) => [n, typeof lib[n]])),
        defaultIsSession: lib.default === lib.session,
        fromContextIsGetSession: lib.fromContext === lib.getSession || typeof lib.fromContext === 'function',
        middleware: typeof lib.session(),
        memory: (() => { const s = lib.createMemoryStore(); const ok = s instanceof lib.MemoryStore; s.close(); return ok; })(),
        storeError: (() => { const e = new lib.SessionStoreError('load', new Error('x')); return [e instanceof Error, e.status, e.code]; })(),
        lockError: (() => { const e = new lib.SessionLockTimeoutError(5); return [e instanceof Error, e.status, e.code]; })(),
      }));
    `);
    expect(result.types).to.deep.equal(Object.fromEntries(EXPORTED.map((n) => [n, 'function'])));
    expect(result.defaultIsSession).to.equal(true);
    expect(result.middleware).to.equal('function');
    expect(result.memory).to.equal(true);
    expect(result.storeError).to.deep.equal([true, 503, 'ESESSIONSTORE']);
    expect(result.lockError).to.deep.equal([true, 503, 'ESESSIONLOCKTIMEOUT']);
  });

  it('loading the package does not need ioredis (it is not installed here)', async () => {
    const result = await nodeJson(consumer, 'noredis.cjs', `
      let redis = 'missing';
      try { require.resolve('ioredis'); redis = 'present'; } catch {}
      const lib = require('koa-locked-session');
      console.log(JSON.stringify({ redis, session: typeof lib.session }));
    `);
    expect(result).to.deep.equal({ redis: 'missing', session: 'function' });
  });

  it('ESM: the default import is the session factory itself, and the named exports are there', async () => {
    const result = await nodeJson(consumer, 'check.mjs', `
      import session, { session as named, withStore, getSession, fromContext, MemoryStore, createMemoryStore,
        RedisStore, SessionLockTimeoutError, SessionStoreError } from 'koa-locked-session';
      import * as ns from 'koa-locked-session';
      const named_ = { session: named, withStore, getSession, fromContext, MemoryStore, createMemoryStore,
        RedisStore, SessionLockTimeoutError, SessionStoreError };
      console.log(JSON.stringify({
        defaultIsNamed: session === named,
        defaultType: typeof session,
        middleware: typeof session(),
        types: Object.fromEntries(Object.entries(named_).map(([k, v]) => [k, typeof v])),
        namespace: ${JSON.stringify(EXPORTED)}.filter((n) => typeof ns[n] !== 'function'),
        nsDefault: ns.default === named,
      }));
    `);
    expect(result.defaultIsNamed).to.equal(true);
    expect(result.defaultType).to.equal('function');
    expect(result.middleware).to.equal('function');
    expect(result.types).to.deep.equal(Object.fromEntries(EXPORTED.map((n) => [n, 'function'])));
    expect(result.namespace).to.deep.equal([]);
    expect(result.nsDefault).to.equal(true);
  });

  const appSource = (imports: string) => `
    ${imports}
    const app = new Koa();
    app.use(session());
    app.use((ctx) => {
      if (ctx.method === 'POST') ctx.session.set('n', (ctx.session.get('n') ?? 0) + 1);
      ctx.body = { n: ctx.session.get('n') ?? null };
    });
    const server = app.listen(0, '127.0.0.1', async () => {
      const url = 'http://127.0.0.1:' + server.address().port + '/';
      const first = await fetch(url, { method: 'POST' });
      const cookie = first.headers.get('set-cookie').split(';')[0];
      const second = await fetch(url, { method: 'POST', headers: { cookie } });
      const read = await fetch(url, { headers: { cookie } });
      server.close();
      console.log(JSON.stringify({ cookie: cookie.split('=')[0], body: await read.json(), statuses: [first.status, second.status] }));
    });
  `;

  it('ESM: a Koa app using the installed package keeps a session across requests', async () => {
    const result = await nodeJson(consumer, 'app.mjs', appSource(`import Koa from 'koa'; import session from 'koa-locked-session';`));
    expect(result).to.deep.equal({ cookie: 'session_id', body: { n: 2 }, statuses: [200, 200] });
  });

  it('CommonJS: a Koa app using the installed package keeps a session across requests', async () => {
    const result = await nodeJson(consumer, 'app.cjs', appSource(`const Koa = require('koa'); const { session } = require('koa-locked-session');`));
    expect(result).to.deep.equal({ cookie: 'session_id', body: { n: 2 }, statuses: [200, 200] });
  });

  describe('TypeScript', () => {
    const tsc = join(MODULES, '.bin', 'tsc');
    const source = (withImport: boolean) => `
      import Koa from 'koa';
      ${withImport ? "import session, { getSession, withStore, MemoryStore } from 'koa-locked-session';\nimport type { Session, Store, SessionData, SessionOptions, LockMode } from 'koa-locked-session';" : ''}
      const app = new Koa();
      ${withImport ? 'const opts: SessionOptions = { maxAge: 1000, lockMode: (ctx): LockMode => (ctx.method === "GET" ? "read" : "write") };\n      app.use(session(opts));\n      const store: Store = new MemoryStore();\n      app.use(withStore(store));' : ''}
      app.use(async (ctx) => {
        const x: number | undefined = ctx.session.get<number>('x');
        const plain = ctx.session.get('x');
        ctx.session.set('x', (x ?? 0) + 1 + (plain === undefined ? 0 : 1));
        ${withImport ? '// @ts-expect-error ctx.session is a Session, not any: it has no such method\n        ctx.session.nosuchmethod();' : ''}
        ${withImport ? 'const same: Session = getSession(ctx);\n        const data: SessionData = same.toJSON();\n        ctx.body = { id: ctx.session.id, isNew: ctx.session.isNew, data };' : 'ctx.body = x;'}
      });
    `;

    /** `type: 'module'` makes app.ts an ES module under node16/nodenext; `extra` is appended to app.ts. */
    async function typecheck(dir: string, moduleKind: string, resolution: string, withImport: boolean, opts: { type?: 'module'; extra?: string } = {}): Promise<Ran> {
      const project = join(consumer, dir);
      mkdirSync(project);
      writeFileSync(join(project, 'app.ts'), source(withImport) + (opts.extra ?? ''));
      if (opts.type !== undefined) writeFileSync(join(project, 'package.json'), JSON.stringify({ name: dir, private: true, type: opts.type }));
      writeFileSync(join(project, 'tsconfig.json'), JSON.stringify({
        compilerOptions: {
          strict: true, noEmit: true, esModuleInterop: true, skipLibCheck: true, target: 'ES2022',
          module: moduleKind, moduleResolution: resolution, types: ['node'], typeRoots: [join(consumer, 'node_modules', '@types')],
        },
        files: ['app.ts'],
      }));
      return run(tsc, ['-p', project], project, 90_000);
    }

    // Code generic over the key, in an app that declares no value types (see SessionValues), compiles as it always did.
    const genericOverKey = 'export const put = <K extends string>(s: Session, key: K, value: unknown): void => s.set(key, value);';

    it('ctx.session.get("x") compiles with no cast after app.use(session()) (module commonjs, resolution node)', async () => {
      const result = await typecheck('ts-node10', 'commonjs', 'node', true, { extra: genericOverKey });
      expect(result.code, result.stdout + result.stderr).to.equal(0);
    });

    it('it also compiles with module and moduleResolution node16 (the exports map\'s types)', async () => {
      const result = await typecheck('ts-node16', 'node16', 'node16', true, { extra: genericOverKey });
      expect(result.code, result.stdout + result.stderr).to.equal(0);
    });

    // For importers resolved through the exports map's "import" condition (its own .d.mts): the
    // default import is session itself, the value exports are exactly the CommonJS build's, and
    // every type src/index.ts exports is there too.
    const exportedTypes = [...readFileSync(join(ROOT, 'src', 'index.ts'), 'utf8').matchAll(/export type \{([^}]*)\}/g)]
      .flatMap((m) => m[1].split(',').map((name) => name.trim()).filter(Boolean));
    const importSideChecks = `
      import { session as named } from 'koa-locked-session';
      import * as esmNs from 'koa-locked-session';
      type Cjs = typeof import('koa-locked-session', { with: { 'resolution-mode': 'require' } });
      type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
      export const defaultIsSession: Same<typeof session, typeof named> = true;
      export const sameValueNames: Same<Exclude<keyof typeof esmNs, 'default'>, Exclude<keyof Cjs, 'default'>> = true;
      export type EveryExportedType = [${exportedTypes.map((name) => `esmNs.${name}`).join(', ')}];
    `;

    for (const kind of ['nodenext', 'node16']) {
      it(`ESM ("type": "module", module and moduleResolution ${kind}): the default import session() and the named imports type-check`, async () => {
        expect(exportedTypes).to.include.members(['Store', 'SessionData', 'SessionOptions', 'LockMode']);
        const result = await typecheck(`ts-esm-${kind}`, kind, kind, true, { type: 'module', extra: importSideChecks });
        expect(result.code, result.stdout + result.stderr).to.equal(0);
      });
    }

    it('it also compiles with module esnext and moduleResolution bundler', async () => {
      const result = await typecheck('ts-bundler', 'esnext', 'bundler', true, { extra: importSideChecks });
      expect(result.code, result.stdout + result.stderr).to.equal(0);
    });

    // The app declares its values' types once; @ts-expect-error fails the check when a line it marks compiles.
    const declaredValues = `
      import type { SessionValues } from 'koa-locked-session';
      declare module 'koa-locked-session' {
        interface SessionValues { userId: string; views: number }
      }
      // A helper generic over the declared keys.
      export const remember = <K extends keyof SessionValues>(s: Session, key: K, value: SessionValues[K]): void => s.set(key, value);
      app.use(async (ctx) => {
        const userId: string | undefined = ctx.session.get('userId');
        ctx.session.set('views', (ctx.session.get('views') ?? 0) + 1);
        ctx.session.set('notDeclared', { any: ['value', 1] });
        const flag: boolean | undefined = ctx.session.get<boolean>('flag');
        // @ts-expect-error a declared key takes only its declared type
        ctx.session.set('views', 'many');
        // @ts-expect-error get() of a declared key is of the declared type
        const wrong: number | undefined = ctx.session.get('userId');
        ctx.body = { userId, flag, wrong };
      });
    `;
    for (const [dir, kind, type] of [['ts-values-cjs', 'commonjs', undefined], ['ts-values-esm', 'node16', 'module']] as const) {
      it(`values typed by the app through SessionValues: get() returns, and set() takes, the declared types (module ${kind}${type === undefined ? '' : ', ESM'})`, async () => {
        const resolution = kind === 'commonjs' ? 'node' : kind;
        const result = await typecheck(dir, kind, resolution, true, { type, extra: declaredValues });
        expect(result.code, result.stdout + result.stderr).to.equal(0);
      });
    }

    it('(control) without the package, ctx.session does not compile', async () => {
      const result = await typecheck('ts-control', 'commonjs', 'node', false);
      expect(result.code).to.not.equal(0);
      expect(result.stdout).to.include('app.ts');
    });
  });
});
