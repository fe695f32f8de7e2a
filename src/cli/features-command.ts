/**
 * `sockleak features`: what this kernel accepts of sockleak's BPF programs
 * (each loaded once, and cached per kernel build: kernel-probe.ts), what its
 * BTF names, and the way each command will take here.
 */
import { probeFeatures } from '../kernel/features';
import type { Fallback } from '../kernel/fallbacks';
import { commandPaths } from '../kernel/kernel-paths';
import { knownRefusals, probeKernel } from '../kernel/kernel-probe';
import { requireBpfPrivileges } from '../kernel/preflight';
import { ExitCode } from '../errors';
import { helpFooter } from './help';
import type { RegisterCommand } from './command';
import { write } from './output';
import { newTable } from './table';

export async function featuresCommand(options: { json?: boolean; refresh?: boolean }): Promise<number> {
  const btfPath = process.env.SOCKLEAK_BTF;
  const features = probeFeatures(btfPath);
  requireBpfPrivileges();
  const probe = probeKernel({ refresh: options.refresh ?? false, ...(btfPath && { btfPath }) });
  const known = knownRefusals(btfPath);
  const commands = commandPaths(new Set(known.keys()), known);
  const works = commands.every((c) => c.works);
  if (options.json) {
    const { verdicts, cached, cacheFile, key, release, version, probedAt } = probe;
    await write(`${JSON.stringify({ kernel: { release, version, key }, probe: { cached, cacheFile, probedAt }, programs: verdicts, commands, features })}\n`);
    return works ? ExitCode.OK : ExitCode.UNAVAILABLE;
  }
  const programs = newTable(['OBJECT', 'PROGRAM', 'LOADS', 'WHY NOT']);
  for (const v of probe.verdicts) programs.push([v.object, v.program, v.loaded ? 'yes' : 'NO', v.loaded ? '' : `${v.code}: ${v.reason}`]);
  const ways = newTable(['COMMAND', 'WORKS', 'FALLBACKS HERE']);
  const short = (f: Fallback): string => `${f.what}: ${f.instead}${f.lost ? ` (cannot see ${f.lost})` : ''}`;
  for (const c of commands) ways.push([c.command, c.works ? 'yes' : 'NO', c.fallbacks.map(short).join('\n') || 'none']);
  const btf = newTable(['FEATURE', 'IN BTF', 'SINCE', 'NEEDED BY']);
  for (const f of features) btf.push([f.name, f.available ? 'yes' : 'NO', f.since, f.neededBy]);
  const source = probe.cached ? `cached in ${probe.cacheFile}` : `probed now${probe.cacheFile ? `, cached in ${probe.cacheFile}` : ' (not cached: the cache is not writable)'}`;
  await write(
    `Kernel ${probe.release} ${probe.version}\n` +
      `Programs, loaded one by one (${source}; --refresh to probe again):\n${programs.toString()}\n` +
      `What each command does here:\n${ways.toString()}\n` +
      `What the kernel's BTF names:\n${btf.toString()}\n`,
  );
  return works ? ExitCode.OK : ExitCode.UNAVAILABLE;
}

export const registerFeatures: RegisterCommand = (cli, setResult) => {
  cli
    .command('features')
    .description("load each of sockleak's BPF programs (nothing attached) and say what this kernel accepts and the way each command takes (exit 69 if a command cannot work)")
    .option('--json', 'print {"kernel", "probe", "programs":[{object,program,loaded,code,reason}], "commands":[{command,works,fallbacks}], "features"}')
    .option('--refresh', 'probe again instead of reading the cache (/var/cache/sockleak, or SOCKLEAK_CACHE_DIR)')
    .addHelpText(
      'after',
      helpFooter(
        [
          ['sockleak features', "what this kernel accepts, and each command's way here (its fallbacks)"],
          ['sockleak features --refresh --json', 'probe again (after a kernel or sockleak upgrade), as JSON'],
        ],
        [[ExitCode.OK, 'every command works here'], [ExitCode.UNAVAILABLE, 'a command cannot work on this kernel'], ExitCode.NO_PERMISSION],
      ),
    )
    .action((opts: { json?: boolean; refresh?: boolean }) => setResult(featuresCommand(opts)));
};
