/**
 * The end of every `--help`: examples, then the exit codes that command can
 * return. The meanings live here once, keyed by errors.ts's ExitCode, so a
 * code added there does not compile until it is explained here, and help and
 * code cannot disagree about what a number means.
 */
import { ExitCode, type ExitCodeValue } from '../errors';

/** What each exit code means, as help prints it. */
export const EXIT_CODE_MEANINGS: Readonly<Record<ExitCodeValue, string>> = {
  [ExitCode.OK]: 'success',
  [ExitCode.LEAKED]: 'the command succeeded but leaked sockets',
  [ExitCode.USAGE]: 'usage error: unknown flag, malformed value, refused combination',
  [ExitCode.DATA]: 'unreadable or corrupt input (a recording)',
  [ExitCode.NO_INPUT]: 'something named does not exist or cannot be written (pid, file, netns)',
  [ExitCode.UNAVAILABLE]: 'the kernel lacks what this needs (BTF, a BPF program type, a helper)',
  [ExitCode.SOFTWARE]: 'a bug in sockleak (SOCKLEAK_DEBUG=1 prints the stack)',
  [ExitCode.NO_PERMISSION]: 'not root, or without CAP_BPF and CAP_PERFMON',
  [ExitCode.MISSING_LIBRARY]: 'a runtime library the addon needs is missing or too old (libbpf1, libelf1, zlib1g)',
  [ExitCode.CONFIG]: 'a configuration file is wrong (--web.config.file: unknown key, bad value, unusable certificate)',
  [ExitCode.COMMAND_NOT_EXECUTABLE]: 'the command cannot be executed',
  [ExitCode.COMMAND_NOT_FOUND]: 'the command was not found',
};

/** A command's own reading of a code, where it says more than the general meaning. */
export type ExitCodeHelp = ExitCodeValue | [ExitCodeValue, string];

/** What every command can return besides its own codes. */
const EVERY_COMMAND: readonly ExitCodeValue[] = [ExitCode.OK, ExitCode.USAGE, ExitCode.SOFTWARE];

/** The text after a command's options: `Examples:` (command, what it does) and `Exit codes:`. */
export function helpFooter(examples: ReadonlyArray<[string, string]>, codes: readonly ExitCodeHelp[], extraCodes: ReadonlyArray<[string, string]> = []): string {
  const own = new Map<number, string>(codes.map((c) => (Array.isArray(c) ? c : [c, EXIT_CODE_MEANINGS[c]])));
  for (const code of EVERY_COMMAND) if (!own.has(code)) own.set(code, EXIT_CODE_MEANINGS[code]);
  const rows: Array<[string, string]> = [...[...own].sort(([a], [b]) => a - b).map(([c, m]): [string, string] => [String(c), m]), ...extraCodes];
  const width = Math.max(...rows.map(([c]) => c.length));
  return [
    '',
    'Examples:',
    ...examples.flatMap(([command, what]) => [`  $ ${command}`, `      ${what}`]),
    '',
    'Exit codes:',
    ...rows.map(([code, meaning]) => `  ${code.padEnd(width)}  ${meaning}`),
  ].join('\n');
}
