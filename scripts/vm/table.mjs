// The kernel matrix as one table: rows are tests, columns are kernels.
// usage: node table.mjs LABEL=DIR...   (DIRs as left by scripts/vm/run-tests.sh)
// Exits 1 if any test failed, or did not run, on any kernel, or a run did not finish.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

const read = (file) => (existsSync(file) ? readFileSync(file, 'utf8').trim() : '');

const columns = process.argv.slice(2).map((arg) => {
  const [label, dir] = [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)];
  const results = read(path.join(dir, 'results.jsonl'))
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line))
    .filter((r) => r.type !== 'suite');
  const kernel = read(path.join(dir, 'kernel'));
  // A guest that oopsed never writes guest.rc; its console says why.
  const consoleLog = read(path.join(dir, 'console.log'));
  const oops = /(Oops: .*|BUG: .*|Kernel panic - .*)/.exec(consoleLog.replace(/^\[[ 0-9.]+\] /gm, ''))?.[1];
  return {
    label,
    dir,
    header: label === 'host' ? `host ${kernel}` : kernel || `${label} (did not boot)`,
    results: new Map(results.map((r) => [`${r.file} › ${r.name}`, r])),
    rc: read(path.join(dir, 'guest.rc')),
    wall: read(path.join(dir, 'wall-seconds')),
    testSeconds: read(path.join(dir, 'test-seconds')),
    oops,
  };
});

// Rows in the order the tests ran (first column that ran them), file by file.
const rows = [];
for (const c of columns) for (const key of c.results.keys()) if (!rows.includes(key)) rows.push(key);

const shorten = (s, n) => (s.length > n ? `${s.slice(0, n - 1)}…` : s);
const cell = (r) => {
  if (!r) return 'not run';
  if (r.status === 'skip') return r.reason ? `skip (${shorten(r.reason, 40)})` : 'skip';
  if (r.status === 'fail') return 'FAIL';
  return r.status;
};
const minutes = (s) => (s === '' ? '?' : `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`);
const runStatus = (c) => {
  if (c.rc === '' && c.oops) return 'kernel oops';
  if (c.rc === '') return 'did not finish';
  if (c.rc === '0') return 'ok';
  if (c.rc === '124' || c.rc === '137') return 'timed out';
  return `exit ${c.rc}`;
};

const table = [
  ['test', ...columns.map((c) => c.header)],
  ...rows.map((key) => [key, ...columns.map((c) => cell(c.results.get(key)))]),
  ['wall time (boot + tests)', ...columns.map((c) => minutes(c.wall))],
  ['test run', ...columns.map((c) => `${runStatus(c)}, ${minutes(c.testSeconds)}`)],
];
const widths = table[0].map((_, i) => Math.max(...table.map((row) => row[i].length)));
const line = (row) => `| ${row.map((v, i) => v.padEnd(widths[i])).join(' | ')} |`;
console.log(line(table[0]));
console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
for (const row of table.slice(1)) console.log(line(row));

let bad = false;
for (const c of columns) {
  if (c.rc !== '0') bad = true;
  for (const key of rows) {
    const r = c.results.get(key);
    if (!r) bad = true;
    if (r?.status === 'fail') {
      bad = true;
      console.log(`\nFAIL on ${c.header}: ${key}\n  ${r.reason.split('\n').join('\n  ')}`);
    }
  }
  if (c.rc !== '0') {
    const why = c.rc === '' && c.oops ? ` (${c.oops})` : '';
    console.log(`\n${c.header}: test run ${runStatus(c)}${why}; console and results in ${c.dir}`);
  }
}
process.exitCode = bad ? 1 : 0;
