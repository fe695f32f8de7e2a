/** `sockleak run -- CMD [ARGS...]`: a socket-leak gate for CI; exit 3 when the command's process tree leaked. */
import { accessSync, constants, existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Option } from 'commander';
import { ExitCode, NotFoundError, UsageError } from '../errors';
import { parseRemotePattern } from '../remote-pattern';
import { gateExitCode, runWithLeakCheck } from '../run/run';
import { helpFooter } from './help';
import { renderJunit } from './junit';
import type { RegisterCommand } from './command';
import { write } from './output';
import { arg, parseCgroupPrefix, parseContainerPrefix, parseDuration, whereOf } from './parse';
import { renderRunSummary, runJson } from './run-report';

/** The parsed flags of `sockleak run`. */
export interface RunCommandOptions {
  threshold?: number;
  allow?: string[];
  timeWaitBudget?: number;
  cgroup?: string;
  container?: string;
  /** The summary as one JSON document on stdout instead of the human one on stderr. */
  json?: boolean;
  /** Where to write the JSON report (the document --json prints). */
  report?: string;
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
  if (!/^[0-9]{1,9}$/.test(text)) throw new UsageError(`--time-wait-budget: '${text}' is not a count; use an integer >= 0`);
  return Number(text);
}

/** Runs the command; returns its exit code, or 3 when it succeeded but leaked. */
export async function runCommand(command: string[], options: RunCommandOptions): Promise<number> {
  checkWritable(options.report, '--report');
  checkWritable(options.junit, '--junit');
  const result = await runWithLeakCheck(command, {
    ...(options.threshold !== undefined && { thresholdMs: options.threshold }),
    allow: options.allow ?? [],
    ...(options.timeWaitBudget !== undefined && { timeWaitBudget: options.timeWaitBudget }),
    where: whereOf(options),
  });
  const exitCode = gateExitCode(result);
  // The command's own output (stdout, inherited) has ended with its exit: the document comes after it, whole.
  if (options.json) await write(runJson(result));
  else process.stderr.write(renderRunSummary(result, exitCode));
  if (options.report !== undefined) writeFileSync(options.report, runJson(result, 2));
  if (options.junit !== undefined) writeFileSync(options.junit, renderJunit(result));
  return exitCode;
}

/** Repeatable --allow; a malformed pattern is a usage error before anything runs. */
const collectPattern = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), arg(parseRemotePattern)(value).text];

const HELP = helpFooter(
  [
    ['sockleak run -- npm test', 'exit 3 if the tests leave sockets in CLOSE_WAIT for 5s or more'],
    ['sockleak run --report leaks.json --junit leaks.xml -- make check', 'also write the report for CI (JSON, JUnit)'],
    ["sockleak run --allow '*:5432' --allow 10.0.0.0/8:8000-8999 -- ./itest.sh", 'expected leaks (a pool to Postgres, a subnet) do not count'],
    ['sockleak run --time-wait-budget 1000 --threshold 2s -- ./load.sh', 'also fail when it closes more than 1000 connections first'],
  ],
  [
    [ExitCode.OK, 'the command succeeded and leaked nothing'],
    [ExitCode.LEAKED, 'the command succeeded but leaked sockets (or exceeded --time-wait-budget)'],
    ExitCode.NO_INPUT,
    ExitCode.UNAVAILABLE,
    ExitCode.NO_PERMISSION,
    ExitCode.COMMAND_NOT_EXECUTABLE,
    ExitCode.COMMAND_NOT_FOUND,
  ],
  [
    ['N', "the command failed: its own exit code, leaks or not (a 3 of its own is not told apart)"],
    ['128+N', 'the command was killed by signal N'],
  ],
);

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
    .option('--cgroup <path>', "only the tree's leaks held or created in this cgroup v2 path or under it", arg(parseCgroupPrefix))
    .option('--container <id>', "only the tree's leaks held or created in a container whose ID starts so", arg(parseContainerPrefix))
    .addOption(
      new Option('--allow <pattern>', 'expected leaks, by remote, as reap --remote takes them: 10.0.0.*:80, *:5432, 10.0.0.0/8, [::1]:* (repeatable)')
        .argParser(collectPattern),
    )
    .addOption(new Option('--time-wait-budget <n>', 'also fail when the tree closes more than n connections first (each leaves a TIME_WAIT)').argParser(arg(parseBudget)))
    .option('--json', 'print the summary as one JSON document {"command","exitCode","leaks":[...],...} on stdout, after the command\'s output, instead of the table on stderr')
    .option('--report <file>', 'write that JSON document to file')
    .option('--junit <file>', 'write JUnit XML to file')
    .addHelpText('after', HELP)
    .action((command: string[], opts: RunCommandOptions) => setResult(runCommand(command, opts)));
};
