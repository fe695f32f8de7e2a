/**
 * The command line. `main(argv)` parses, runs one command and returns its exit
 * code; it is the only place that prints errors. bin/sockleak.js calls run().
 */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { ExitCode, SockleakError } from '../errors';
import { parseCount, parsePid } from './parse';
import { traceCommand } from './trace-command';

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

