/**
 * Entry point of `npm run bench`; main.ts is the benchmark itself and
 * documents its options.
 *
 * ts-node would type-check the whole harness on every run (20 s and more on
 * a busy machine), so this file only compiles bench/*.ts to plain JS with
 * TypeScript's transpiler (bench/.build/bench) and runs that; `npm run bench`
 * runs this file with `--transpile-only` too (a second less of a quick run's
 * minute). The types are checked by `npx tsc --noEmit -p tsconfig.json`,
 * which includes bench/.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const ts = require('typescript');
const out = join(__dirname, '.build', 'bench');
mkdirSync(out, { recursive: true });
const { outputText } = ts.transpileModule(readFileSync(join(__dirname, 'build.ts'), 'utf8'), {
  compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
});
writeFileSync(join(out, 'build.js'), outputText);
// eslint-disable-next-line @typescript-eslint/no-require-imports
const dir: string = require(join(out, 'build.js')).buildBench();
// eslint-disable-next-line @typescript-eslint/no-require-imports
require(join(dir, 'main.js'));
