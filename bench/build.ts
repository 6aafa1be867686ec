/**
 * Compiles TypeScript to plain CommonJS for the benchmark's child processes,
 * so that what is measured is the library as `npm run build` emits it, with
 * no ts-node in the server processes. Each file is transpiled on its own
 * (no type check, that is `npm run build`'s and the tests' job), with the
 * compiler options of tsconfig.build.json, plus source maps so that CPU
 * profiles can name lines of the .ts sources. Nothing is written to dist/:
 * other work on the repository may be using it.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';

/** The repository: the nearest folder above this file whose package.json is koa-locked-session's. */
function findRoot(): string {
  for (let dir = __dirname; ; dir = dirname(dir)) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest) && (JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string }).name === 'koa-locked-session') return dir;
    if (dirname(dir) === dir) throw new Error('bench: cannot find the koa-locked-session repository above ' + __dirname);
  }
}

export const ROOT = findRoot();
export const BUILD = join(ROOT, 'bench', '.build');

function tsFiles(dir: string, skip: (path: string) => boolean): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (skip(path)) continue;
    if (statSync(path).isDirectory()) out.push(...tsFiles(path, skip));
    else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) out.push(path);
  }
  return out;
}

function compilerOptions(): ts.CompilerOptions {
  const config = ts.getParsedCommandLineOfConfigFile(join(ROOT, 'tsconfig.build.json'), {}, {
    ...ts.sys,
    onUnRecoverableConfigFileDiagnostic: (d) => {
      throw new Error(ts.flattenDiagnosticMessageText(d.messageText, '\n'));
    },
  });
  if (config === undefined) throw new Error('cannot read tsconfig.build.json');
  return { ...config.options, sourceMap: true, inlineSources: false, declaration: false, noEmit: false };
}

/** Transpiles every .ts file under `srcDir` into `outDir` (emptied first). */
export function transpileTree(srcDir: string, outDir: string, skip: (path: string) => boolean = () => false): string[] {
  const options = compilerOptions();
  rmSync(outDir, { recursive: true, force: true });
  const files = tsFiles(srcDir, skip);
  for (const file of files) {
    const rel = relative(srcDir, file).replace(/\.ts$/, '.js');
    const target = join(outDir, rel);
    const out = ts.transpileModule(readFileSync(file, 'utf8'), { compilerOptions: options, fileName: file, reportDiagnostics: false });
    mkdirSync(dirname(target), { recursive: true });
    // Point the source map at the original .ts file, wherever it lives.
    const map = JSON.parse(out.sourceMapText ?? '{}') as { sources?: string[]; sourceRoot?: string };
    map.sources = [file];
    map.sourceRoot = '';
    // Only the comment TypeScript appends on the last line is replaced.
    const code = out.outputText.replace(/\n\/\/# sourceMappingURL=[^\n]*\s*$/, '');
    writeFileSync(target, `${code}\n//# sourceMappingURL=${target.split('/').pop()}.map\n`);
    writeFileSync(`${target}.map`, JSON.stringify(map));
  }
  return files;
}

/**
 * Compiles the library sources in `srcDir` (default: the repository's src/)
 * and returns the path of the compiled entry point (index.js). Different
 * source folders get different output folders, so a scratch copy can be
 * measured side by side with src/.
 */
export function buildLibrary(srcDir: string): string {
  const abs = resolve(srcDir);
  const tag = abs === join(ROOT, 'src') ? 'src' : `lib-${createHash('sha1').update(abs).digest('hex').slice(0, 8)}`;
  const out = join(BUILD, tag);
  transpileTree(abs, out);
  return join(out, 'index.js');
}

/** Compiles bench/ itself (the child processes' code) to bench/.build/bench. */
export function buildBench(): string {
  const out = join(BUILD, 'bench');
  const benchDir = join(ROOT, 'bench');
  transpileTree(benchDir, out, (path) => path.startsWith(BUILD) || /\/\.(results|profiles)/.test(path) || path.endsWith('/run.ts'));
  return out;
}
