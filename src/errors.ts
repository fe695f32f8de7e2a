/**
 * Every failure sockleak reports to people is one of these: a one-line message
 * and a documented exit code (sysexits.h values). Library code throws them; only
 * the CLI entry prints them and exits.
 */
export const ExitCode = {
  OK: 0,
  /** `run`: the command under test leaked sockets (documented in README). */
  LEAKED: 3,
  /** Bad flag, malformed value (duration, pid, state). */
  USAGE: 64,
  /** Unreadable or corrupt input data (recording file). */
  DATA: 65,
  /** Something named on the command line does not exist (pid, file, netns). */
  NO_INPUT: 66,
  /** The kernel lacks what sockleak needs (BTF, a program type, a helper). */
  UNAVAILABLE: 69,
  /** A bug or an unexpected failure. */
  SOFTWARE: 70,
  /** Not root, or missing CAP_BPF/CAP_PERFMON. */
  NO_PERMISSION: 77,
} as const;

export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

/** Base of all errors sockleak raises on purpose. */
export class SockleakError extends Error {
  constructor(
    message: string,
    readonly exitCode: ExitCodeValue,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

export class UsageError extends SockleakError {
  constructor(message: string) {
    super(message, ExitCode.USAGE);
  }
}

export class NotFoundError extends SockleakError {
  constructor(message: string) {
    super(message, ExitCode.NO_INPUT);
  }
}

export class DataError extends SockleakError {
  constructor(message: string) {
    super(message, ExitCode.DATA);
  }
}

export class PermissionError extends SockleakError {
  constructor(message: string) {
    super(message, ExitCode.NO_PERMISSION);
  }
}

export class KernelUnsupportedError extends SockleakError {
  constructor(
    message: string,
    /** What the kernel or libbpf said, for --verbose and bug reports. */
    readonly detail = '',
  ) {
    super(message, ExitCode.UNAVAILABLE);
  }
}
