/**
 * The command line. `main(argv)` parses, runs one command and returns its exit
 * code; it is the only place that prints errors. bin/sockleak.js calls main().
 * Each command registers itself from its own module (cli/*-command.ts).
 */
import type { Command } from 'commander';
import { ExitCode, SockleakError } from '../errors';
import { describeFallback, onFallback } from '../kernel/fallbacks';
import type { RegisterCommand, SetResult } from './command';
import { helpFooter } from './help';
import { VERSION } from '../version';


/**
 * Every command, loaded on demand: a run loads the modules of its own command
 * only (start-up is part of what `sockleak snapshot` is timed by); help, a
 * version or an unknown command load them all.
 */
/* eslint-disable @typescript-eslint/no-require-imports */
const COMMANDS: Record<string, () => RegisterCommand> = {
  trace: () => (require('./trace-command') as typeof import('./trace-command')).registerTrace,
  snapshot: () => (require('./snapshot-command') as typeof import('./snapshot-command')).registerSnapshot,
  watch: () => (require('./watch-command') as typeof import('./watch-command')).registerWatch,
  features: () => (require('./features-command') as typeof import('./features-command')).registerFeatures,
  reap: () => (require('./reap-command') as typeof import('./reap-command')).registerReap,
  agent: () => (require('./agent-command') as typeof import('./agent-command')).registerAgent,
  report: () => (require('./report-command') as typeof import('./report-command')).registerReport,
  ports: () => (require('./ports-command') as typeof import('./ports-command')).registerPorts,
  run: () => (require('./run-command') as typeof import('./run-command')).registerRun,
};

/** Started before anything else loads, commander included (cli/head-start.ts). */
const HEAD_STARTS: Record<string, (args: readonly string[]) => void> = {
  snapshot: (args) => (require('./head-start') as typeof import('./head-start')).startScanner(args),
};

/** commander, loaded after the head start (it pulls in child_process, net and streams). */
const commander = (): typeof import('commander') => require('commander') as typeof import('commander');
/* eslint-enable @typescript-eslint/no-require-imports */

/** Codes only `run` returns: the top-level help says so. */
const RUN_ONLY = new Set<number>([ExitCode.LEAKED, ExitCode.COMMAND_NOT_EXECUTABLE, ExitCode.COMMAND_NOT_FOUND]);

function program(setResult: SetResult, argv: readonly string[], beforeAction: () => void): Command {
  const cli = new (commander().Command)('sockleak')
    .description('Find leaked TCP sockets (CLOSE_WAIT, TIME_WAIT) and the process, thread and fd holding them.')
    .version(VERSION)
    .showHelpAfterError(false)
    .exitOverride()
    .configureOutput({ writeErr: () => undefined })
    .addHelpText(
      'after',
      helpFooter(
        [
          ['sockleak snapshot', 'leaked (CLOSE_WAIT) sockets now, per process and remote'],
          ['sockleak watch --threshold 5m', 'leaks as they happen'],
          ['sockleak run --report leaks.json -- npm test', 'fail a CI job whose tests leak sockets'],
          ['sockleak reap --remote 10.0.3.7:9000 --older-than 1h', 'list the sockets a reap would close (add --yes to close them)'],
        ],
        [
          ...Object.values(ExitCode).filter((c) => !RUN_ONLY.has(c)),
          [ExitCode.LEAKED, '`run`: the command succeeded but leaked sockets'],
          [ExitCode.COMMAND_NOT_EXECUTABLE, '`run`: the command cannot be executed'],
          [ExitCode.COMMAND_NOT_FOUND, '`run`: the command was not found'],
        ],
        [['128+N', '`run`: the command was killed by signal N']],
      ) + "\n\n'sockleak COMMAND --help' for each command's flags, examples and exit codes.",
    )
    .hook('preAction', beforeAction);
  const named = Object.hasOwn(COMMANDS, argv[0] ?? '') ? COMMANDS[argv[0]!] : undefined;
  for (const load of named ? [named] : Object.values(COMMANDS)) load()(cli, setResult);
  // Subcommands inherit the parent's error handling, and refuse arguments they do not take.
  for (const sub of cli.commands) {
    sub.exitOverride().configureOutput({ writeErr: () => undefined });
    if (!sub.registeredArguments.length) sub.allowExcessArguments(false);
  }
  return cli;
}

/**
 * The fallback lines (fallbacks.ts) of this run: held until the arguments are
 * parsed and the command's action starts (a head start may load BPF first, and
 * a usage error is one line), then written as they come.
 */
class FallbackLines {
  private held: string[] | undefined = [];

  add(line: string): void {
    if (this.held) this.held.push(line);
    else process.stderr.write(line);
  }

  /** The command runs: from now on, lines go out at once. */
  release(): void {
    for (const line of this.held ?? []) process.stderr.write(line);
    this.held = undefined;
  }
}

/**
 * Runs the CLI with `argv` (without node and script). Never throws. Bare
 * `sockleak` prints the help on stdout and exits 0, as kubectl, docker and
 * cargo do: asking what the tool does is not an error.
 */
export async function main(argv: string[]): Promise<number> {
  let result: Promise<number> = Promise.resolve(ExitCode.OK);
  if (argv.length === 0) {
    program(() => undefined, argv, () => undefined).outputHelp();
    return ExitCode.OK;
  }
  const command = Object.hasOwn(COMMANDS, argv[0] ?? '') ? argv[0] : undefined;
  const lines = new FallbackLines();
  const unsubscribe = onFallback((fallback) => lines.add(`sockleak: ${oneLine(describeFallback(fallback))}\n`));
  if (Object.hasOwn(HEAD_STARTS, argv[0] ?? '')) HEAD_STARTS[argv[0]!]!(argv.slice(1));
  try {
    await program((p) => (result = p), argv, () => lines.release()).parseAsync(argv, { from: 'user' });
    return await result;
  } catch (err) {
    return report(err, command, argv);
  } finally {
    unsubscribe();
  }
}

/** One line, whatever the message echoes: newlines joined, other control characters escaped. */
function oneLine(text: string): string {
  return text
    .replace(/\s*\n\s*/g, ' ')
    .replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/**
 * Prints the one line an error gets. Usage errors (exit 64) name the command
 * and point at its help, where the accepted forms are; other failures are
 * about the machine, not the command line, so help would not help.
 */
function report(err: unknown, command: string | undefined, argv: readonly string[]): number {
  const who = command ? `sockleak ${command}` : 'sockleak';
  const usage = (message: string): number => {
    process.stderr.write(`${who}: ${oneLine(message)} (see '${who} --help')\n`);
    return ExitCode.USAGE;
  };
  if (err instanceof commander().CommanderError) {
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.exitCode === 0) {
      return ExitCode.OK;
    }
    // `sockleak help NOPE`: commander shows the top-level help instead, as an error, with no message of its own.
    if (err.code === 'commander.help') return usage(`unknown command '${argv.find((a, i) => i > 0 && !a.startsWith('-')) ?? ''}'`);
    return usage(err.message.replace(/^error: /, ''));
  }
  if (err instanceof SockleakError) {
    if (err.exitCode === ExitCode.USAGE) return usage(err.message);
    process.stderr.write(`sockleak: ${oneLine(err.message)}\n`);
    if (process.env.SOCKLEAK_DEBUG && 'detail' in err && err.detail) process.stderr.write(`${err.detail}\n`);
    return err.exitCode;
  }
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`sockleak: internal error: ${oneLine(message)}\n`);
  if (process.env.SOCKLEAK_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
  return ExitCode.SOFTWARE;
}
