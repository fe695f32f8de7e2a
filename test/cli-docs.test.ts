/** docs/cli.md is the commands' own --help (scripts/gen-cli-docs.mjs): stale, it fails here. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { ROOT } from './helpers';

const SCRIPT = path.join(ROOT, 'scripts', 'gen-cli-docs.mjs');
const DOC = path.join(ROOT, 'docs', 'cli.md');

function check(file: string): { code: number | null; stderr: string } {
  const r = spawnSync(process.execPath, [SCRIPT, '--check', '--file', file], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stderr: r.stderr };
}

test("docs/cli.md matches every command's --help (npm run docs:cli regenerates it)", () => {
  const r = check(DOC);
  assert.equal(r.code, 0, r.stderr);
});

test('a page whose reference part differs from --help is reported stale; the hand-written part is kept', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sockleak-cli-docs-'));
  try {
    const page = readFileSync(DOC, 'utf8');
    const stale = path.join(dir, 'cli.md');
    writeFileSync(stale, page.replace('--json       one JSON object per event', '--json       one JSON object per thing'));
    assert.notEqual(readFileSync(stale, 'utf8'), page, 'the edit applies');
    const r = check(stale);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /is stale: run 'npm run build:ts && npm run docs:cli'/);
    // Regenerated, it is the page again: the hand-written top survives.
    const regen = spawnSync(process.execPath, [SCRIPT, '--file', stale], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(regen.status, 0, regen.stderr);
    assert.equal(readFileSync(stale, 'utf8'), page);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
