/**
 * Work a command starts before the CLI has loaded its argument parser and its
 * own modules, so that the two overlap. For `snapshot`: opening the scanner,
 * loading its BPF object (in-kernel relocation and verification, on a pool
 * thread) and, unless the arguments name states or a pid, the default scan
 * itself (CLOSE_WAIT, every process); each is comparable to the CLI's own
 * load (docs/benchmarks.md, "Figures behind design choices").
 * `sockleak snapshot` is timed against ss; start-up is most of it.
 * This module loads nothing but the scanner's and the snapshot's own.
 */
import { SocketScanner } from '../scan/scan';
import { sameScan, snapshotScan, type SnapshotOptions, type SnapshotScan } from '../scan/snapshot';

/** What startScanner() began: a scanner, and the default scan on it if the arguments may want it. */
let early: { scanner: SocketScanner; scan?: Promise<SnapshotScan> } | undefined;

/** The options the early scan is made with: `snapshot`'s defaults. */
const DEFAULT_SCAN: SnapshotOptions = {};

/**
 * Opens the scanner, starts its BPF load and, when `args` (the command's own)
 * have no --state or --pid, the default scan. Never throws: what stops it
 * here (not root, no BTF) is reported when the command runs, as is a failed
 * early scan (by the same scan made again).
 */
export function startScanner(args: readonly string[]): void {
  try {
    const scanner = new SocketScanner();
    scanner.preload();
    early = { scanner };
    if (!args.some((a) => /^--(state|pid)(=|$)/.test(a))) {
      early.scan = snapshotScan(scanner, DEFAULT_SCAN);
      early.scan.catch(() => undefined); // taken, or waited for, by takeSnapshotScan()
    }
  } catch {
    early = undefined;
  }
}

/**
 * The scan a snapshot with `options` needs: startScanner()'s, if it was made
 * and asked the same, else a new one (on the early scanner once its scan is
 * over). The scanner is closed when this settles.
 */
export async function takeSnapshotScan(options: SnapshotOptions): Promise<SnapshotScan> {
  const taken = early;
  early = undefined;
  const scanner = taken?.scanner ?? new SocketScanner();
  try {
    if (taken?.scan) {
      const reusable = sameScan(options, DEFAULT_SCAN);
      const result = await taken.scan.then((scan) => scan, () => undefined);
      if (reusable && result) return result;
    }
    return await snapshotScan(scanner, options);
  } finally {
    scanner.close();
  }
}
