/**
 * What the running kernel refused and how sockleak went on without it. Kernels
 * differ by build, not only by version (docs/kernels.md): a refused program is
 * a normal environment, so every loader takes another way and notes here what
 * that way cannot see. The library only notes; the CLI prints each note once,
 * as one stderr line, and `sockleak features` lists them all.
 *
 * SOCKLEAK_REFUSE forces refusals, so that CI runs every fallback on every
 * kernel: a comma-separated list of BPF program names (e.g.
 * `scan_files,new_leaks`), `light` (no light skeletons) or `bpf` (no BPF at all).
 */

export const REFUSE_ENV = 'SOCKLEAK_REFUSE';

/** The names SOCKLEAK_REFUSE treats as refused by the kernel. */
export function forcedRefusals(env: NodeJS.ProcessEnv = process.env): string[] {
  return (env[REFUSE_ENV] ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

/** Whether SOCKLEAK_REFUSE names `name` (a program, `light` or `bpf`). */
export function isForcedRefused(name: string, env: NodeJS.ProcessEnv = process.env): boolean {
  return forcedRefusals(env).includes(name);
}

/** One way not taken. */
export interface Fallback {
  /** What was refused: a BPF program, a loader, or `bpf`. */
  what: string;
  /** Why, in the kernel's words: `EACCES: R1 type=untrusted_ptr_ ...`, or `SOCKLEAK_REFUSE`. */
  why: string;
  /** The way taken instead. */
  instead: string;
  /** What that way cannot see; '' when nothing is lost. */
  lost: string;
}

const noted = new Map<string, Fallback>();
const listeners = new Set<(fallback: Fallback) => void>();

/**
 * Records a fallback and tells the listeners: once per `what`, and once more if
 * it was noted losing nothing and now loses something (one refusal costs more
 * in some modes: tp_close_enter costs accept() stacks only with --stacks).
 */
export function noteFallback(fallback: Fallback): void {
  const known = noted.get(fallback.what);
  if (known && (known.lost !== '' || fallback.lost === '')) return;
  noted.set(fallback.what, fallback);
  for (const listener of listeners) listener(fallback);
}

/** Every fallback noted so far in this process. */
export function notedFallbacks(): Fallback[] {
  return [...noted.values()];
}

/** Calls `listener` for every fallback noted from now on; returns the unsubscribe. */
export function onFallback(listener: (fallback: Fallback) => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** The one line a fallback is to people: `scan_files refused (EACCES: ...): using X; lost: Y`. */
export function describeFallback(f: Fallback): string {
  return `${f.what} refused (${f.why}): ${f.instead}; ${f.lost ? `cannot see ${f.lost}` : 'nothing lost'}`;
}
