#!/usr/bin/env node
// Writes the reference part of docs/cli.md from the commands' own --help (run
// after `npm run build:ts`), so the page cannot drift from the CLI:
// test/cli-docs.test.ts runs this with --check and fails when it would change
// the file. Everything above the marker line is written by hand and kept.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// --file PATH: another copy of the page (the test checks a stale one is caught).
const fileArg = process.argv.indexOf('--file');
const file = fileArg > 0 ? path.resolve(process.argv[fileArg + 1]) : path.join(root, 'docs', 'cli.md');
const MARKER = '<!-- Everything below is generated from --help by scripts/gen-cli-docs.mjs (npm run docs:cli): do not edit it here. -->';

/** `sockleak ARGS` as a user would see it in a pipe: 80 columns, no terminal. */
function help(args) {
  return execFileSync(process.execPath, [path.join(root, 'bin', 'sockleak.js'), ...args], {
    encoding: 'utf8',
    env: { ...process.env, COLUMNS: '80' },
    stdio: ['ignore', 'pipe', 'pipe'],
  }).trimEnd();
}

const top = help(['--help']);
const commands = [...(top.split(/^Commands:$/m)[1] ?? '').matchAll(/^ {2}([a-z][a-z-]*)/gm)].map((m) => m[1]).filter((c) => c !== 'help');
const sections = [
  '## sockleak',
  '',
  '```text',
  top,
  '```',
  ...commands.flatMap((c) => ['', `## sockleak ${c}`, '', '```text', help([c, '--help']), '```']),
];

const current = readFileSync(file, 'utf8');
const at = current.indexOf(MARKER);
if (at < 0) {
  console.error(`gen-cli-docs: ${path.relative(root, file)} lacks the marker line`);
  process.exit(1);
}
const wanted = `${current.slice(0, at)}${MARKER}\n\n${sections.join('\n')}\n`;
if (process.argv.includes('--check')) {
  if (wanted !== current) {
    console.error(`gen-cli-docs: ${path.relative(root, file)} is stale: run 'npm run build:ts && npm run docs:cli' and commit it`);
    process.exit(1);
  }
} else if (wanted !== current) {
  writeFileSync(file, wanted);
  console.log(`gen-cli-docs: wrote ${path.relative(root, file)}`);
}
