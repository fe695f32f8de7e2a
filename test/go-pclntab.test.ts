/**
 * Go's .gopclntab read in TypeScript (src/stacks/go-pclntab.ts), checked against
 * binutils on a real Go binary: every function nm lists, and addr2line's file:line
 * from the binary's DWARF. Built with cgo, so C code lies between Go functions.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { GoPclntab } from '../src/stacks/go-pclntab';
import { buildGoLeaker, GO_LEAKER_SOURCE, HAVE_GO } from './helpers';

const dir = mkdtempSync(path.join(tmpdir(), 'sockleak-pclntab-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  assert.equal(r.status, 0, `${cmd}: ${r.stderr}`);
  return r.stdout;
}

/** A section's address, file offset and size, from readelf. */
function section(binary: string, name: string): { addr: number; off: number; size: number } {
  const m = new RegExp(`\\${name}\\s+PROGBITS\\s+([0-9a-f]+) ([0-9a-f]+) ([0-9a-f]+)`).exec(run('readelf', ['-SW', binary]));
  assert.ok(m, `${name} in ${binary}`);
  return { addr: parseInt(m[1]!, 16), off: parseInt(m[2]!, 16), size: parseInt(m[3]!, 16) };
}

test('every Go function nm lists is named from .gopclntab, with addr2line\'s file:line; C code is nobody\'s', { skip: !HAVE_GO && 'no Go toolchain (Debian\'s golang-go)' }, () => {
  const binary = buildGoLeaker(dir, 'leak-stack-cgo', { cgo: true });
  const s = section(binary, '.gopclntab');
  const table = GoPclntab.parse(readFileSync(binary).subarray(s.off, s.off + s.size), section(binary, '.text').addr);
  assert.ok(table, 'a Go 1.18+ table');

  const functions = run('nm', ['--defined-only', binary])
    .split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f[1] === 't' || f[1] === 'T')
    .map(([addr, , name]) => ({ addr: parseInt(addr!, 16), name: name! }));
  const cFunctions = ['crosscall_amd64', 'x_cgo_init', '_cgo_sys_thread_start', 'fatalf'];
  for (const c of cFunctions) assert.ok(functions.some((f) => f.name === c), `${c} in the cgo binary`);
  let named = 0;
  for (const f of functions) {
    const place = table.placeAt(f.addr);
    // C (cgo's runtime in gcc's code, the resolver's wrappers) is not Go's, though it lies between Go functions.
    if (cFunctions.includes(f.name)) assert.equal(place, null, `${f.name} is C, not ${place?.symbol}`);
    if (!place) continue;
    named++;
    // The symbol table adds ABI wrappers' `.abi0`; type equality functions are spelled `[...]` by the runtime.
    if (!f.name.startsWith('type..eq.')) assert.equal(place.symbol, f.name.replace(/\.abi0$/, ''), `at 0x${f.addr.toString(16)}`);
  }
  assert.ok(named > 1500, `${named} of ${functions.length} named`);

  // file:line at every 10th function's entry, as addr2line reads it from the DWARF.
  const sample = functions.filter((_, i) => i % 10 === 0);
  const lines = run('addr2line', ['-e', binary, ...sample.map((f) => `0x${f.addr.toString(16)}`)]).trim().split('\n');
  let compared = 0;
  sample.forEach((f, i) => {
    const place = table.placeAt(f.addr);
    if (!place) return;
    compared++;
    assert.equal(`${place.file}:${place.line}`, lines[i]!.replace(/^\.\//, ''), f.name);
  });
  assert.ok(compared > 150, `${compared} compared`);
  // The leaker's own function, where the test of stacks expects it.
  const declared = readFileSync(GO_LEAKER_SOURCE, 'utf8').split('\n').findIndex((l) => l.startsWith('func openBackend(')) + 1;
  const open = functions.find((f) => f.name === 'main.openBackend')!;
  assert.deepEqual(table.placeAt(open.addr + 1), { symbol: 'main.openBackend', file: GO_LEAKER_SOURCE, line: declared });
});

test('a table that is not Go 1.18+ 64-bit, or cut short, is not read', () => {
  assert.equal(GoPclntab.parse(Buffer.alloc(100), 0x401000), null);
  const old = Buffer.alloc(100);
  old.writeUInt32LE(0xfffffffa, 0); // Go 1.16-1.17
  old[7] = 8;
  assert.equal(GoPclntab.parse(old, 0x401000), null);
  const cut = Buffer.alloc(80);
  cut.writeUInt32LE(0xfffffff1, 0);
  cut[6] = 1;
  cut[7] = 8;
  cut.writeBigUInt64LE(1000n, 8); // 1000 functions, no room for their table
  cut.writeBigUInt64LE(72n, 64);
  assert.equal(GoPclntab.parse(cut, 0x401000), null);
});
