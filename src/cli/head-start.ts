/**
 * Work a command starts before the CLI has loaded its argument parser and its
 * own modules, so that the two overlap: for `snapshot`, opening the scanner and
 * loading its BPF object (~6-10 ms of in-kernel relocation and verification, on a
 * pool thread). `sockleak snapshot` is timed against ss; start-up is most of it.
 * This module loads nothing but the scanner's own.
 */
import { SocketScanner } from '../scan';

let early: SocketScanner | undefined;

/**
 * Opens the scanner and starts its BPF load. Never throws: what stops it here
 * (not root, no BTF) is reported by takeScanner() when the command runs.
 */
export function startScanner(): void {
  try {
    early = new SocketScanner();
    early.preload();
  } catch {
    early = undefined;
  }
}

/** The scanner startScanner() opened, or a new one; the caller closes it. */
export function takeScanner(): SocketScanner {
  const scanner = early ?? new SocketScanner();
  early = undefined;
  return scanner;
}
