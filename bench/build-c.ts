/** Compiles the C workloads (bench/*.c) with gcc -O2 into bench/.build/ (gitignored), when out of date. */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export const ROOT = path.resolve(__dirname, '..', '..');
export const BENCH_SRC = path.join(ROOT, 'bench');
export const BUILD_DIR = path.join(BENCH_SRC, '.build');

/** Builds bench/NAME.c (linked with `libs`) into bench/.build/NAME unless the binary is newer; returns its path. */
export function buildC(gcc: string, name: string, libs: readonly string[] = []): string {
  const src = path.join(BENCH_SRC, `${name}.c`);
  const out = path.join(BUILD_DIR, name);
  fs.mkdirSync(BUILD_DIR, { recursive: true });
  const fresh = fs.existsSync(out) && fs.statSync(out).mtimeMs >= fs.statSync(src).mtimeMs;
  if (!fresh) {
    const r = spawnSync(gcc, ['-O2', '-Wall', '-Wextra', '-pthread', '-o', out, src, ...libs], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`gcc ${name}.c failed:\n${r.stderr}`);
  }
  return out;
}
