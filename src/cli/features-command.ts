/** `sockleak features`: what this kernel offers of what sockleak uses. */
import { describeMissing, probeFeatures } from '../features';
import type { RegisterCommand } from './main';
import { write } from './output';
import { newTable } from './table';

export async function featuresCommand(options: { json?: boolean }): Promise<number> {
  const features = probeFeatures(process.env.SOCKLEAK_BTF);
  if (options.json) {
    await write(`${JSON.stringify({ features })}\n`);
  } else {
    const table = newTable(['FEATURE', 'HERE', 'SINCE', 'NEEDED BY', 'WITHOUT IT']);
    for (const f of features) table.push([f.name, f.available ? 'yes' : 'NO', f.since, f.neededBy, f.available ? '' : f.without]);
    await write(`${table.toString()}\n`);
  }
  return describeMissing(process.env.SOCKLEAK_BTF) === '' ? 0 : 69;
}

export const registerFeatures: RegisterCommand = (cli, setResult) => {
  cli
    .command('features')
    .description('list the kernel features sockleak uses and whether this kernel has them (exit 69 if one is missing)')
    .option('--json', 'print {"features":[{name,available,since,neededBy,without}]}')
    .action((opts: { json?: boolean }) => setResult(featuresCommand(opts)));
};
