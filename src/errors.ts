/**
 * Every failure sockleak reports to people is one of these: a one-line message
 * and a documented exit code (sysexits.h values). Library code throws them; only
 * the CLI entry prints them and exits.
 */
export const ExitCode = {
  OK: 0,
  /** `run`: the command under test leaked sockets (documented in docs/commands.md). */
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
  /** A runtime library the native addon links (libbpf, libelf, zlib) is missing or too old. */
  MISSING_LIBRARY: 72,
  /** Not root, or missing CAP_BPF/CAP_PERFMON. */
  NO_PERMISSION: 77,
  /** A configuration file is wrong: unknown key, bad value, unusable certificate (`agent --web.config.file`). */
  CONFIG: 78,
  /** `run`: the command exists but cannot be executed (as shells report it). */
  COMMAND_NOT_EXECUTABLE: 126,
  /** `run`: the command was not found (as shells report it). */
  COMMAND_NOT_FOUND: 127,
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

/** A configuration file (`--web.config.file`) is wrong; the message names the file and the key. */
export class ConfigError extends SockleakError {
  constructor(message: string) {
    super(message, ExitCode.CONFIG);
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

/** The native addon cannot load: a shared library it links is missing or too old (the message names its package). */
export class MissingLibraryError extends SockleakError {
  constructor(message: string) {
    super(message, ExitCode.MISSING_LIBRARY);
  }
}

/** `run`: the command to run does not exist (exit 127) or cannot be executed (exit 126). */
export class CommandNotFoundError extends SockleakError {
  constructor(message: string, notExecutable = false) {
    super(message, notExecutable ? ExitCode.COMMAND_NOT_EXECUTABLE : ExitCode.COMMAND_NOT_FOUND);
  }
}

/** `checkSocketLeaks()`: the checked code leaked sockets; `leaks` lists them, as `sockleak run --json` does. */
export class SocketLeakError extends SockleakError {
  constructor(
    message: string,
    readonly leaks: ReadonlyArray<import('./run/leak-log').LeakedSocket>,
  ) {
    super(message, ExitCode.LEAKED);
  }
}
