/**
 * The command line. `main(argv)` parses, runs one command and returns its exit
 * code; it is the only place that prints errors. bin/sockleak.js calls run().
 */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { ExitCode, SockleakError } from '../errors';
import { parseCount, parseDuration, parsePid, parseStates } from './parse';
import { snapshotCommand } from './snapshot-command';
import { traceCommand } from './trace-command';
import { watchCommand } from './watch-command';

/** Adapts a parser that throws UsageError to commander's argument parser contract. */
function arg<T>(parse: (text: string) => T): (text: string) => T {
  return (text) => {
    try {
      return parse(text);
    } catch (err) {
      throw new InvalidArgumentError(err instanceof Error ? err.message : String(err));
    }
  };
}

function program(setResult: (p: Promise<number>) => void): Command {
  const cli = new Command('sockleak')
    .description('Find leaked TCP sockets (CLOSE_WAIT, TIME_WAIT) and the process, thread and fd holding them.')
    .version(require('../../../package.json').version)
    .showHelpAfterError(false)
    .exitOverride()
    .configureOutput({ writeErr: () => undefined });

  cli
    .command('trace')
    .description('print every TCP state change and close()/connect()/accept() of TCP sockets, live')
    .option('--pid <pid>', 'only this process and the sockets it made or accepted', arg(parsePid))
    .option('--json', 'one JSON object per line (default when stdout is not a terminal)')
    .addOption(new Option('--count <n>', 'stop after n events').argParser(arg((t) => parseCount(t, '--count'))))
    .action((opts: { pid?: number; json?: boolean; count?: number }) => setResult(traceCommand(opts)));

  cli
    .command('snapshot')
    .description('every leaked socket now (CLOSE_WAIT by default), with owners, ages and keepalive, grouped per process and remote')
    .option('--state <states>', 'close-wait (default), time-wait, established, ..., a comma list, or all', arg(parseStates))
    .option('--pid <pid>', 'only sockets held by this process', arg(parsePid))
    .option('--older-than <duration>', 'only sockets in their state at least this long (e.g. 5m)', arg((t) => parseDuration(t, '--older-than')))
    .option('--json', 'print {"takenAt","sockets":[...],"lost"} as one JSON document')
    .action((opts: { state?: ReturnType<typeof parseStates>; pid?: number; olderThan?: number; json?: boolean }) =>
      setResult(snapshotCommand(opts)),
    );

  cli
    .command('watch')
    .description('report sockets that stay in CLOSE_WAIT longer than a threshold, live, with owners and creators')
    .option('--threshold <duration>', 'how long in CLOSE_WAIT makes a leak (default 30s)', arg((t) => parseDuration(t, '--threshold')))
    .option('--pid <pid>', 'only leaks held or created by this process', arg(parsePid))
    .option('--json', 'ndjson of leak / resolved / fd-closed records (default when stdout is not a terminal)')
    .action((opts: { threshold?: number; pid?: number; json?: boolean }) => setResult(watchCommand(opts)));

  return cli;
}

/** Runs the CLI with `argv` (without node and script). Never throws. */
export async function main(argv: string[]): Promise<number> {
  let result: Promise<number> = Promise.resolve(ExitCode.OK);
  try {
    await program((p) => (result = p)).parseAsync(argv, { from: 'user' });
    return await result;
  } catch (err) {
    return report(err);
  }
}

function report(err: unknown): number {
  if (err instanceof CommanderError) {
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.exitCode === 0) {
      return ExitCode.OK;
    }
    const message = err.message.replace(/^error: /, '');
    process.stderr.write(`sockleak: ${message} (see sockleak --help)\n`);
    return ExitCode.USAGE;
  }
  if (err instanceof SockleakError) {
    process.stderr.write(`sockleak: ${err.message}\n`);
    if (process.env.SOCKLEAK_DEBUG && 'detail' in err && err.detail) process.stderr.write(`${err.detail}\n`);
    return err.exitCode;
  }
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`sockleak: internal error: ${message}\n`);
  if (process.env.SOCKLEAK_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
  return ExitCode.SOFTWARE;
}

/** Entry point for bin/sockleak.js. */
export function run(argv: string[] = process.argv.slice(2)): void {
  void main(argv).then((code) => {
    process.exitCode = code;
  });
}

