/** `sockleak run -- CMD [ARGS...]`: a socket-leak gate for CI; exit 3 when the command's process tree leaked. */
import { accessSync, constants, existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Option } from 'commander';
import { NotFoundError, UsageError } from '../errors';
import { parseRemotePattern } from '../remote-pattern';
import { gateExitCode, runWithLeakCheck } from '../run';
import { renderJunit } from './junit';
import type { RegisterCommand } from './main';
import { arg, parseDuration } from './parse';
import { renderRunSummary, runJson } from './run-report';

/** The parsed flags of `sockleak run`. */
export interface RunCommandOptions {
  threshold?: number;
  allow: string[];
  timeWaitBudget?: number;
  json?: string;
  junit?: string;
}

/** Checked before the command runs, so a bad path fails before any work; written after. */
function checkWritable(file: string | undefined, flag: string): void {
  if (file === undefined) return;
  try {
    accessSync(existsSync(file) ? file : path.dirname(path.resolve(file)), constants.W_OK);
  } catch (err) {
    throw new NotFoundError(`cannot write ${flag} ${file}: ${(err as Error).message}`);
  }
}

function parseBudget(text: string): number {
  if (!/^[0-9]{1,9}$/.test(text)) throw new UsageError(`--time-wait-budget must be an integer >= 0, got '${text}'`);
  return Number(text);
}

/** Runs the command; returns its exit code, or 3 when it succeeded but leaked. */
export async function runCommand(command: string[], options: RunCommandOptions): Promise<number> {
  checkWritable(options.json, '--json');
  checkWritable(options.junit, '--junit');
  const result = await runWithLeakCheck(command, {
    ...(options.threshold !== undefined && { thresholdMs: options.threshold }),
    allow: options.allow,
    ...(options.timeWaitBudget !== undefined && { timeWaitBudget: options.timeWaitBudget }),
  });
  const exitCode = gateExitCode(result);
  process.stderr.write(renderRunSummary(result, exitCode));
  if (options.json !== undefined) writeFileSync(options.json, runJson(result));
  if (options.junit !== undefined) writeFileSync(options.junit, renderJunit(result));
  return exitCode;
}

/** Repeatable --allow; a malformed pattern is a usage error before anything runs. */
const collectPattern = (value: string, previous: string[]): string[] => [...previous, arg(parseRemotePattern)(value).text];

/** Adds `sockleak run` to the CLI. */
export const registerRun: RegisterCommand = (cli, setResult) => {
  // The command's own flags must reach it untouched: options only before it (or before `--`).
  cli.enablePositionalOptions();
  cli
    .command('run')
    .description('run a command, follow its whole process tree, and exit 3 if it leaked sockets (CLOSE_WAIT, optionally TIME_WAIT)')
    .usage('[options] [--] <command> [args...]')
    .argument('<command...>', 'the command to run, and its arguments')
    .passThroughOptions()
    .option('--threshold <duration>', 'how long in CLOSE_WAIT makes a leak (default 5s)', arg((t) => parseDuration(t, '--threshold')))
    .addOption(
      new Option('--allow <pattern>', 'expected leaks, by remote: 10.0.0.*:80, *:5432, 10.0.0.0/8, [::1]:* (repeatable)')
        .argParser(collectPattern)
        .default([], ''),
    )
    .addOption(new Option('--time-wait-budget <n>', 'also fail when the tree closes more than n connections first (each leaves a TIME_WAIT)').argParser(arg(parseBudget)))
    .option('--json <file>', 'write {"command","exitCode","leaks":[...]} to file')
    .option('--junit <file>', 'write JUnit XML to file')
    .action((command: string[], opts: RunCommandOptions) => setResult(runCommand(command, opts)));
};
