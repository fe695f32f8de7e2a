/**
 * scripts/svg-chart.mjs, the drawing behind docs/img: run in a child Node (it
 * is an ES module; this file compiles to CommonJS), its SVG checked for what a
 * reader relies on: escaped text, lines inside the plot, clock labels, aligned
 * terminal rows.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { ROOT } from './helpers';

/** Calls `fn` of svg-chart.mjs with `args` in a child Node and returns the SVG. */
function draw(fn: 'lineChart' | 'terminalSvg', ...args: unknown[]): string {
  const url = `file://${path.join(ROOT, 'scripts', 'svg-chart.mjs')}`;
  const code = `const m = await import(${JSON.stringify(url)}); process.stdout.write(m.${fn}(...${JSON.stringify(args)}));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8', timeout: 10_000 });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

const unescape = (s: string): string =>
  s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&amp;/g, '&');

test('lineChart: one line per series inside the plot, y ticks covering the data, UTC clock labels, escaped text', () => {
  const t0 = Date.UTC(2026, 11, 7, 2, 55, 0) / 1000;
  const svg = draw('lineChart', {
    title: 'leaks <after> "deletions" & restarts',
    yLabel: 'sockets',
    series: [
      { name: 'svc-a', points: Array.from({ length: 9 }, (_, i) => [t0 + 5 * i, 8 * i]), step: true },
      { name: 'svc-b', points: [[t0, 3], [t0 + 40, 3]] },
    ],
    markers: [{ at: t0 + 20, label: 'restart' }],
    markerName: 'a backend deleted',
    width: 800,
    height: 360,
  });
  assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg" width="800" height="360"/);
  assert.match(svg, /<\/svg>\n$/);
  assert.ok(svg.includes('leaks &lt;after&gt; &quot;deletions&quot; &amp; restarts'), 'title escaped');
  const lines = [...svg.matchAll(/<polyline [^>]*points="([^"]+)"/g)].map((m) => m[1]!.split(' ').map((p) => p.split(',').map(Number)));
  assert.equal(lines.length, 2, 'one polyline per series');
  assert.equal(lines[0]!.length, 9 + 8, 'a step series holds each value until the next sample');
  const texts = [...svg.matchAll(/<text[^>]*>([^<]*)<\/text>/g)].map((m) => unescape(m[1]!));
  const yTicks = texts.filter((t) => /^\d[\d,]*$/.test(t)).map((t) => Number(t.replace(/,/g, '')));
  assert.equal(Math.min(...yTicks), 0);
  assert.ok(Math.max(...yTicks) >= 64, `ticks reach the data: ${yTicks}`);
  for (const [x, y] of lines.flat()) {
    assert.ok(x! >= 72 && x! <= 800 - 40 && y! >= 48 && y! <= 360, `point ${x},${y} inside the plot`);
  }
  assert.ok(texts.includes('02:55:00') && texts.includes('02:55:40'), `clock labels: ${texts}`);
  for (const t of ['svc-a', 'svc-b', 'a backend deleted', 'restart', 'sockets', 'time (UTC)']) assert.ok(texts.includes(t), t);
});

test('terminalSvg: every row as captured, spaces kept, escapes dropped, long rows wrapped at the width', () => {
  const rows = ['│ PID   │ COMM  │', '│ 32491 │ svc-a │', '\x1b[1mpid 32491 (svc-a) holds 8 CLOSE_WAIT sockets <to> 127.0.0.2:38243\x1b[0m'];
  const svg = draw('terminalSvg', `${rows.join('\n')}\n`, { title: 'sockleak watch', columns: 40 });
  assert.match(svg, /xml:space="preserve"/);
  const texts = [...svg.matchAll(/<text[^>]*>([^<]*)<\/text>/g)].map((m) => unescape(m[1]!));
  assert.deepEqual(texts, [
    'sockleak watch',
    '│ PID   │ COMM  │',
    '│ 32491 │ svc-a │',
    'pid 32491 (svc-a) holds 8 CLOSE_WAIT',
    'sockets <to> 127.0.0.2:38243',
  ]);
  const rowXs = [...svg.matchAll(/<text x="([\d.]+)" y="[\d.]+"(?: fill="[^"]*")?>/g)].map((m) => m[1]);
  assert.equal(rowXs.length, 4);
  assert.equal(new Set(rowXs).size, 1, 'every row starts at the same x, so monospace columns line up');
});
