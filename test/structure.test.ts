/**
 * The shape of the source tree (issue #23, docs/architecture.md "Checks on the
 * structure"): no import circles in src/, type imports included; nothing but
 * the CLI imports the CLI; a source file over 400 lines says why at its top;
 * every file docs/architecture.md names exists. Reads files only: no root, no BPF.
 */
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { parseCircular, parseDependencyTree, type DependencyTree } from 'dpdm';

const ROOT = path.resolve(__dirname, '..', '..');

/** What a source file over MAX_LINES must carry in its opening comment (docs/architecture.md). */
const LONG_MARKER = 'Longer than 400 lines because';
const MAX_LINES = 400;
/** How far down the opening comment may run. */
const OPENING_LINES = 40;

/** Every file under `dir` (relative to `root`), skipping the build's and npm's folders. */
function walk(root: string, dir: string, skip: ReadonlySet<string> = new Set()): string[] {
  const out: string[] = [];
  const abs = path.join(root, dir);
  if (!existsSync(abs)) return out;
  for (const entry of readdirSync(abs, { withFileTypes: true })) {
    const rel = path.join(dir, entry.name);
    if (skip.has(entry.name)) continue;
    if (entry.isDirectory()) out.push(...walk(root, rel, skip));
    else if (entry.isFile()) out.push(rel);
  }
  return out;
}

/**
 * The import graph of `root`/src/, every .ts file an entry (so a module no
 * entry point reaches still counts), type-only and dynamic imports kept.
 */
async function importGraph(root: string): Promise<DependencyTree> {
  const files = walk(root, 'src').filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'));
  return parseDependencyTree(files, {
    cwd: root,
    context: root,
    transform: false, // true would drop `import type`, which a reader follows all the same
    skipDynamicImports: false,
    tsconfig: path.join(root, 'tsconfig.json'),
  });
}

/** Import circles of `root`/src/, each as its files in import order. */
async function importCircles(root: string): Promise<string[][]> {
  return parseCircular(await importGraph(root));
}

/** `file -> src/cli/...` edges from outside src/cli/. */
async function importsOfCli(root: string): Promise<string[]> {
  const tree = await importGraph(root);
  const out: string[] = [];
  for (const [file, deps] of Object.entries(tree)) {
    if (!file.startsWith('src/') || file.startsWith('src/cli/')) continue;
    for (const dep of deps ?? []) {
      if (dep.id?.startsWith('src/cli/')) out.push(`${file} -> ${dep.id}`);
    }
  }
  return out.sort();
}

function formatCircles(circles: string[][]): string {
  return circles.map((c) => `  ${[...c, c[0]].join(' -> ')}`).join('\n');
}

/** Copy of src/ and tsconfig.json in a temp dir, for the checks to be shown failing. */
function copyOfSrc(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sockleak-structure-'));
  cpSync(path.join(ROOT, 'src'), path.join(dir, 'src'), { recursive: true });
  cpSync(path.join(ROOT, 'tsconfig.json'), path.join(dir, 'tsconfig.json'));
  return dir;
}

function prepend(file: string, line: string): void {
  writeFileSync(file, `${line}\n${readFileSync(file, 'utf8')}`);
}

test('src/ has no import circles, type imports included', async () => {
  const tree = await importGraph(ROOT);
  const edges = Object.values(tree).flatMap((deps) => deps ?? []).filter((d) => d.id?.startsWith('src/'));
  assert.ok(Object.keys(tree).length > 50 && edges.length > 100, 'the graph was read: every module, every import');
  const circles = parseCircular(tree);
  assert.equal(circles.length, 0, `import circles in src/:\n${formatCircles(circles)}`);
});

test('a type import that closes a circle is caught', async () => {
  const dir = copyOfSrc();
  try {
    // leak-watcher.ts reaches sockets.ts; a type import back closes a circle.
    prepend(path.join(dir, 'src', 'sockets.ts'), "import type { LeakWatcher } from './watch/leak-watcher';");
    const circles = await importCircles(dir);
    assert.ok(circles.length > 0, 'the added import makes a circle');
    assert.ok(
      circles.some((c) => c.includes('src/sockets.ts') && c.includes('src/watch/leak-watcher.ts')),
      formatCircles(circles),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('nothing outside src/cli/ imports from src/cli/ (the CLI depends on the library, never the reverse)', async () => {
  const edges = await importsOfCli(ROOT);
  assert.deepEqual(edges, [], `library modules importing the CLI:\n  ${edges.join('\n  ')}`);
});

test('a library module importing the CLI is caught', async () => {
  const dir = copyOfSrc();
  try {
    prepend(path.join(dir, 'src', 'scan', 'snapshot.ts'), "import type { RegisterCommand } from '../cli/command';");
    assert.deepEqual(await importsOfCli(dir), ['src/scan/snapshot.ts -> src/cli/command.ts']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Source files over MAX_LINES whose opening lines do not carry LONG_MARKER. */
function longFilesWithoutReason(root: string): string[] {
  const sources = ['src', 'native', 'bpf']
    .flatMap((d) => walk(root, d, new Set(['generated', '.output'])))
    .filter((f) => /\.(ts|cc|c|h)$/.test(f) && !f.endsWith('.d.ts'));
  const out: string[] = [];
  for (const file of sources.sort()) {
    const lines = readFileSync(path.join(root, file), 'utf8').split('\n');
    if (lines.at(-1) === '') lines.pop();
    if (lines.length <= MAX_LINES) continue;
    if (!lines.slice(0, OPENING_LINES).some((l) => l.includes(LONG_MARKER))) out.push(`${file} (${lines.length} lines)`);
  }
  return out;
}

test(`every source file over ${MAX_LINES} lines says why at its top ("${LONG_MARKER} ...")`, () => {
  const offenders = longFilesWithoutReason(ROOT);
  assert.deepEqual(
    offenders,
    [],
    `over ${MAX_LINES} lines with no "${LONG_MARKER} ..." in the first ${OPENING_LINES} lines (split it, or say why):\n  ${offenders.join('\n  ')}`,
  );
});

test('a long file without its reason is caught, and passes with one', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sockleak-structure-'));
  try {
    const body = Array.from({ length: MAX_LINES }, (_, i) => `export const c${i} = ${i};`).join('\n');
    mkdirSync(path.join(dir, 'src', 'x'), { recursive: true });
    writeFileSync(path.join(dir, 'src', 'x', 'short.ts'), `/** Constants. */\n${body.split('\n').slice(1).join('\n')}\n`);
    writeFileSync(path.join(dir, 'src', 'x', 'long.ts'), `/** Constants. */\n${body}\n`);
    assert.deepEqual(longFilesWithoutReason(dir), [`src/x/long.ts (${MAX_LINES + 1} lines)`]);
    writeFileSync(path.join(dir, 'src', 'x', 'long.ts'), `/** Constants. ${LONG_MARKER} they are one table. */\n${body}\n`);
    assert.deepEqual(longFilesWithoutReason(dir), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** File extensions a name in the doc must have to be checked as a file. */
const FILE_NAME = /(?:[\w.*{},-]+\/)*[\w*{},-]+(?:\.[\w*{},-]+)*\.(?:ts|mjs|js|cc|c|h|md|sh|proto|py|json|yaml|yml|svg)\b/g;

/** `a.{h,cc}` → `a.h`, `a.cc`. */
function expandBraces(name: string): string[] {
  const m = /\{([^{}]*)\}/.exec(name);
  if (!m) return [name];
  return m[1]!.split(',').flatMap((alt) => expandBraces(name.slice(0, m.index) + alt + name.slice(m.index + m[0].length)));
}

function globToRegExp(glob: string): RegExp {
  const body = glob.replace(/[.+?^$()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*');
  return new RegExp(`(?:^|/)${body}$`);
}

/**
 * File names in `doc` that match no file of the repository. A name may be a
 * path from the root, a path's tail (`cli/main.ts`) or a bare name the
 * section it sits in places (`leaks.bpf.h` under bpf/): any file whose path
 * ends with it will do. Braces and `*` are expanded.
 */
function missingNames(root: string, doc: string): string[] {
  const files = walk(root, '.', new Set(['node_modules', '.git', 'dist', 'build', 'build-cmake'])).map((f) =>
    f.split(path.sep).join('/'),
  );
  const missing = new Set<string>();
  for (const raw of doc.match(FILE_NAME) ?? []) {
    if (raw.includes('{') !== raw.includes('}')) continue; // cut off by the match; its whole form is checked too
    for (const name of expandBraces(raw)) {
      const re = globToRegExp(name.replace(/^\.\//, ''));
      if (!files.some((f) => re.test(f))) missing.add(name);
    }
  }
  return [...missing].sort();
}

test('every file docs/architecture.md names exists', () => {
  const doc = readFileSync(path.join(ROOT, 'docs', 'architecture.md'), 'utf8');
  const names = doc.match(FILE_NAME) ?? [];
  assert.ok(names.length > 50, `the doc names files (${names.length} found): the pattern still matches them`);
  const missing = missingNames(ROOT, doc);
  assert.deepEqual(missing, [], `docs/architecture.md names files that do not exist:\n  ${missing.join('\n  ')}`);
});

test('a renamed file the doc still names is caught', () => {
  const doc = 'The tracer (`native/tracer.{h,cc}`), `leak-watcher.ts`, `bpf/*.bpf.h`; gone: `native/no-such-file.cc`, `src/scan/gone.ts`.';
  assert.deepEqual(missingNames(ROOT, doc), ['native/no-such-file.cc', 'src/scan/gone.ts']);
});

test('every src/ folder opens with a README.md of one or two lines', () => {
  const folders = readdirSync(path.join(ROOT, 'src'), { withFileTypes: true })
    .filter((e) => e.isDirectory() && e.name !== 'generated')
    .map((e) => e.name);
  assert.ok(folders.length >= 10, folders.join(' '));
  const bad: string[] = [];
  for (const folder of folders) {
    const file = path.join(ROOT, 'src', folder, 'README.md');
    if (!existsSync(file) || !statSync(file).isFile()) {
      bad.push(`src/${folder}/README.md missing`);
      continue;
    }
    const lines = readFileSync(file, 'utf8').trim().split('\n').filter((l) => l.trim() !== '');
    if (lines.length < 1 || lines.length > 2) bad.push(`src/${folder}/README.md has ${lines.length} lines`);
  }
  assert.deepEqual(bad, []);
});

test('docs/benchmarks.md: the hand-kept figures survive `npm run bench -- --write`, and no other part is kept', async () => {
  // Imported here: bench/ is compiled with the tests, but only this test needs it.
  const { KEPT_HEADING, keptPart, renderReport } = await import('../bench/report');
  const doc = readFileSync(path.join(ROOT, 'docs', 'benchmarks.md'), 'utf8');
  const kept = keptPart(doc);
  assert.ok(kept.startsWith(`${KEPT_HEADING}\n`), `docs/benchmarks.md has its "${KEPT_HEADING}" section`);
  assert.ok(!kept.includes('\n## Method'), 'the kept part is the last section: Method is rewritten by the run');
  const rewrite = renderReport({
    machine: { nproc: 2, kernel: 'k', cpuModel: 'cpu', memGiB: 1, os: 'Linux', node: process.version, date: 'now' },
    versions: {},
    command: 'npm run bench',
    durationS: 1,
    backgroundCpus: 0,
    caveats: [],
    sections: [],
    kept,
  });
  assert.ok(rewrite.includes('\n## Method\n'), 'the rewrite has its own Method');
  assert.equal(keptPart(rewrite), kept.trimEnd() + '\n', 'the kept part comes back as it was, last');
  assert.equal(keptPart(rewrite.slice(0, rewrite.indexOf(KEPT_HEADING))), '', 'one copy of it');
});
