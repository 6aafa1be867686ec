/**
 * Summarises a V8 .cpuprofile: where the samples fell, the top functions by
 * self time, and this library's functions by self and inclusive time, with
 * compiled locations mapped back to the .ts sources through source maps.
 *
 *   npx ts-node bench/profile.ts bench/.profiles/ours-W1.cpuprofile [more…]
 */
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { relative } from 'node:path';
import { ROOT } from './build';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
  positionTicks?: { line: number; ticks: number }[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/** Source-map "mappings" decoded to, per generated line, [column, source, line] segments. */
function decodeMappings(mappings: string): [number, number, number][][] {
  const lines: [number, number, number][][] = [];
  let source = 0;
  let srcLine = 0;
  let srcCol = 0;
  for (const text of mappings.split(';')) {
    const segments: [number, number, number][] = [];
    let col = 0;
    for (const segment of text.split(',')) {
      if (segment === '') continue;
      const fields: number[] = [];
      let value = 0;
      let shift = 0;
      for (const ch of segment) {
        const digit = B64.indexOf(ch);
        value += (digit & 31) << shift;
        if (digit & 32) shift += 5;
        else {
          fields.push(value & 1 ? -(value >>> 1) : value >>> 1);
          value = 0;
          shift = 0;
        }
      }
      col += fields[0];
      if (fields.length >= 4) {
        source += fields[1];
        srcLine += fields[2];
        srcCol += fields[3];
        segments.push([col, source, srcLine]);
      }
    }
    lines.push(segments);
  }
  return lines;
}

const maps = new Map<string, { sources: string[]; lines: [number, number, number][][] } | null>();

/** `file:line` of the .ts source for a 0-based line/column of a compiled file, when it has a map. */
function original(url: string, line: number, column: number): string | undefined {
  if (!url.startsWith('file://')) return undefined;
  const path = fileURLToPath(url);
  let map = maps.get(path);
  if (map === undefined) {
    map = null;
    if (existsSync(`${path}.map`)) {
      const raw = JSON.parse(readFileSync(`${path}.map`, 'utf8')) as { sources: string[]; mappings: string };
      map = { sources: raw.sources, lines: decodeMappings(raw.mappings) };
    }
    maps.set(path, map);
  }
  if (map === null) return undefined;
  for (let l = Math.min(line, map.lines.length - 1); l >= 0; l--) {
    const segments = map.lines[l];
    if (segments.length === 0) continue;
    let best = segments[0];
    if (l === line) for (const s of segments) if (s[0] <= column) best = s;
    return `${relative(ROOT, map.sources[best[1]])}:${best[2] + 1}`;
  }
  return undefined;
}

function isLibrary(url: string): boolean {
  return /\/bench\/\.build\/(src|lib-[0-9a-f]+)\//.test(url);
}

function where(frame: CallFrame): string {
  const { url } = frame;
  if (url === '') return '';
  const mapped = original(url, frame.lineNumber, frame.columnNumber);
  if (mapped !== undefined) return mapped;
  const nm = url.lastIndexOf('node_modules/');
  const short = nm >= 0 ? url.slice(nm + 'node_modules/'.length) : url.replace(/^file:\/\//, '').replace(`${ROOT}/`, '');
  return `${short}:${frame.lineNumber + 1}`;
}

function category(frame: CallFrame): string {
  const { url, functionName } = frame;
  if (url === '') {
    if (functionName === '(garbage collector)') return 'GC';
    if (functionName === '(idle)') return 'idle';
    if (functionName === '(program)') return 'V8/native (program)';
    return 'native';
  }
  if (isLibrary(url)) return 'koa-locked-session';
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + 'node_modules/'.length).split('/');
    return rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0];
  }
  if (url.startsWith('node:')) return `node:${url.slice(5).split('/')[0]}`;
  if (url.includes('/bench/')) return 'bench harness';
  return url;
}

function pct(part: number, whole: number): string {
  return `${((100 * part) / whole).toFixed(1).padStart(5)} %`;
}

export function summarizeProfile(file: string, top = 20): string {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const node of profile.nodes) byId.set(node.id, node);
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);

  const key = (n: ProfileNode) => `${n.callFrame.functionName || '(anonymous)'}  ${where(n.callFrame)}`;
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  const categories = new Map<string, number>();
  let busy = 0;
  let total = 0;
  let libraryInclusive = 0;
  for (const id of profile.samples) {
    const leaf = byId.get(id);
    if (leaf === undefined) continue;
    total++;
    const cat = category(leaf.callFrame);
    categories.set(cat, (categories.get(cat) ?? 0) + 1);
    if (cat === 'idle') continue;
    busy++;
    const k = key(leaf);
    self.set(k, (self.get(k) ?? 0) + 1);
    const seen = new Set<string>();
    let inLibrary = false;
    for (let node: ProfileNode | undefined = leaf; node !== undefined; node = byId.get(parent.get(node.id) ?? -1)) {
      if (!isLibrary(node.callFrame.url)) continue;
      inLibrary = true;
      const nk = key(node);
      if (seen.has(nk)) continue;
      seen.add(nk);
      inclusive.set(nk, (inclusive.get(nk) ?? 0) + 1);
    }
    if (inLibrary) libraryInclusive++;
  }

  const msPerSample = (profile.endTime - profile.startTime) / 1000 / Math.max(1, total);
  const out: string[] = [];
  out.push(`${relative(ROOT, file)}: ${total} samples, ${((profile.endTime - profile.startTime) / 1e6).toFixed(1)} s, ${pct(busy, total).trim()} busy`);
  out.push(`  samples with koa-locked-session on the stack: ${pct(libraryInclusive, busy).trim()} of busy time`);
  out.push('  self time by package (share of busy samples):');
  for (const [cat, n] of [...categories].filter(([c]) => c !== 'idle').sort((a, b) => b[1] - a[1]).slice(0, 12)) {
    out.push(`    ${pct(n, busy)}  ${cat}`);
  }
  out.push(`  top ${top} functions by self time:`);
  for (const [k, n] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top)) out.push(`    ${pct(n, busy)}  ${k}`);
  out.push('  koa-locked-session functions (self / inclusive):');
  const libSelf = (k: string) => self.get(k) ?? 0;
  for (const [k, n] of [...inclusive].sort((a, b) => b[1] - a[1]).slice(0, 15)) {
    out.push(`    ${pct(libSelf(k), busy)} / ${pct(n, busy)}  ${k}`);
  }

  // Hottest source lines inside the library (V8's per-line ticks).
  const lines = new Map<string, number>();
  for (const node of profile.nodes) {
    if (!isLibrary(node.callFrame.url)) continue;
    for (const tick of node.positionTicks ?? []) {
      const at = original(node.callFrame.url, tick.line - 1, 0) ?? `${node.callFrame.url}:${tick.line}`;
      lines.set(at, (lines.get(at) ?? 0) + tick.ticks);
    }
  }
  if (lines.size > 0) {
    out.push('  hottest library lines (self ticks):');
    for (const [at, n] of [...lines].sort((a, b) => b[1] - a[1]).slice(0, 10)) out.push(`    ${pct(n, busy)}  ${at}`);
  }
  out.push(`  (one sample ≈ ${(msPerSample * 1000).toFixed(0)} µs)`);
  return out.join('\n');
}

if (require.main === module) {
  const files = process.argv.slice(2);
  if (files.length === 0) {
    console.error('usage: ts-node bench/profile.ts FILE.cpuprofile [...]');
    process.exit(2);
  }
  for (const file of files) console.log(`${summarizeProfile(file)}\n`);
}
