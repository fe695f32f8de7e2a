/**
 * What this kernel build accepts of sockleak's BPF programs, found by loading
 * every one of them (native/probe.cc: too slow for every command), and cached per kernel build:
 * builds of one Linux version accept different programs (docs/kernels.md), so
 * the key is the build (release, version string, BTF) and sockleak's own
 * programs, never the version alone. Commands read the cache to skip the loads
 * they know the kernel refuses; they never probe (they fall back by themselves
 * when a load fails); `sockleak features` probes when the cache has no answer.
 */
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, mkdirSync, openSync, readFileSync, readSync, renameSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadAddon } from './addon';
import { forcedRefusals, REFUSE_ENV } from './fallbacks';

/** One program (or loader) and whether the kernel loaded it. */
export interface ProgramVerdict {
  /** `trace`, `scan`, `reap`, or `loader` (`light`, `light-cast`: the scan object's light skeletons). */
  object: string;
  program: string;
  loaded: boolean;
  /** When refused: the errno's name (EACCES, EPERM, ...). */
  code?: string;
  /** When refused: the verifier's last words. */
  reason?: string;
}

export interface KernelProbe {
  /** The kernel build and sockleak build this holds for. */
  key: string;
  release: string;
  version: string;
  /** When the programs were loaded (ms since the epoch). */
  probedAt: number;
  verdicts: ProgramVerdict[];
  /** Whether this came from the cache. */
  cached: boolean;
  /** The cache file ('' when nothing could be written: a read-only /var, say). */
  cacheFile: string;
}

const DEFAULT_BTF = '/sys/kernel/btf/vmlinux';

/** SOCKLEAK_CACHE_DIR, else /var/cache/sockleak. */
export function cacheDir(): string {
  return process.env.SOCKLEAK_CACHE_DIR ?? '/var/cache/sockleak';
}

/**
 * The kernel build: `uname -r` and `uname -v`, the BTF's size and its first
 * and last 64 KiB (a full hash would slow every command's start-up), and the
 * programs this addon embeds.
 */
export function kernelBuildKey(btfPath = DEFAULT_BTF): string {
  let key = buildKeys.get(btfPath);
  if (key === undefined) buildKeys.set(btfPath, (key = hashBuild(btfPath)));
  return key;
}

/** Keys already made, by BTF path: a process meets one kernel build, and each loader (tracer, scanners, reaper) asks. */
const buildKeys = new Map<string, string>();

function hashBuild(btfPath: string): string {
  const hash = createHash('sha256').update(`${os.release()}\n${os.version()}\n${loadAddon().programsId()}\n`);
  let fd: number | undefined;
  try {
    fd = openSync(btfPath, 'r');
    const size = fstatSync(fd).size;
    const chunk = Buffer.alloc(64 << 10);
    hash.update(`${size}\n`);
    hash.update(chunk.subarray(0, readSync(fd, chunk, 0, chunk.length, 0)));
    hash.update(chunk.subarray(0, readSync(fd, chunk, 0, chunk.length, Math.max(0, size - chunk.length))));
  } catch {
    hash.update('no BTF');
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  return hash.digest('hex').slice(0, 24);
}

function cacheFile(key: string): string {
  return path.join(cacheDir(), `probe-${key}.json`);
}

/** The cached probe of this kernel build, if there is one; never loads a program. */
export function cachedProbe(btfPath?: string): KernelProbe | undefined {
  const key = kernelBuildKey(btfPath);
  try {
    const probe = JSON.parse(readFileSync(cacheFile(key), 'utf8')) as KernelProbe;
    return probe.key === key && Array.isArray(probe.verdicts) ? { ...probe, cached: true, cacheFile: cacheFile(key) } : undefined;
  } catch {
    return undefined;
  }
}

/** This kernel's verdicts: from the cache, or by loading every program now (`refresh` forces that) and caching them. */
export function probeKernel(options: { refresh?: boolean; btfPath?: string } = {}): KernelProbe {
  if (!options.refresh) {
    const cached = cachedProbe(options.btfPath);
    if (cached) return cached;
  }
  const key = kernelBuildKey(options.btfPath);
  const verdicts: ProgramVerdict[] = loadAddon()
    .probePrograms(options.btfPath)
    .map((v) => (v.loaded ? { object: v.object, program: v.program, loaded: true } : { object: v.object, program: v.program, loaded: false, code: v.code, reason: v.reason }));
  const probe: KernelProbe = { key, release: os.release(), version: os.version(), probedAt: Date.now(), verdicts, cached: false, cacheFile: '' };
  try {
    const file = cacheFile(key);
    mkdirSync(cacheDir(), { recursive: true, mode: 0o755 });
    writeFileSync(`${file}.tmp`, `${JSON.stringify(probe, null, 1)}\n`, { mode: 0o644 });
    renameSync(`${file}.tmp`, file);
    probe.cacheFile = file;
  } catch {
    // a read-only cache: the next `features` probes again
  }
  return probe;
}

/**
 * The programs and loaders sockleak should not try on this kernel, each with
 * why: those the cached probe saw refused, and SOCKLEAK_REFUSE's. With no
 * cache, only the forced ones: the loaders then find the others by failing once.
 */
export function knownRefusals(btfPath?: string): Map<string, string> {
  const refused = new Map<string, string>();
  let probe: KernelProbe | undefined;
  try {
    probe = cachedProbe(btfPath);
  } catch {
    probe = undefined; // no addon: the caller's load reports it
  }
  const verdicts = probe?.verdicts ?? [];
  for (const v of verdicts) {
    if (!v.loaded && v.object !== 'loader') refused.set(v.program, `${v.code}: ${v.reason}`);
  }
  // Both light skeletons refused: not for one scan_files variant, so skip them.
  const light = verdicts.filter((v) => v.object === 'loader' && !v.loaded);
  if (light.length === 2) refused.set('light', `${light[0]!.code}: ${light[0]!.reason}`);
  for (const name of forcedRefusals()) refused.set(name, `${REFUSE_ENV}=${name}`);
  return refused;
}
