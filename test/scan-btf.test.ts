/**
 * The scan object's minimised BTF (scripts/build-bpf.sh, src/native-scan.ts):
 * used only when its key names the running kernel, and never able to break a
 * scan, because a load that fails with it falls back to the kernel's own BTF.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { loadAddon } from '../src/addon';
import { cachedScanBtf, SCAN_MIN_BTF, stateMask } from '../src/native-scan';
import { SOCK_SIZE } from '../src/generated/layout';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sockleak-btf-'));
test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Records of every TCP socket held by a process, loaded with `cachedBtfPath`, sorted by cookie. */
async function ownedSockets(cachedBtfPath?: string): Promise<string[]> {
  const scanner = new (loadAddon().Scanner)(cachedBtfPath ? { cachedBtfPath } : {});
  try {
    const buf = await scanner.scan({ kind: 'files', stateMask: stateMask(['LISTEN']) });
    const records: string[] = [];
    for (let at = 0; at + SOCK_SIZE <= buf.length; at += SOCK_SIZE) records.push(buf.subarray(at, at + SOCK_SIZE).toString('hex'));
    return records.sort();
  } finally {
    scanner.close();
  }
}

test('the minimised BTF is built for this kernel and gives the same records as the full one', async (t) => {
  const builtOn = fs.readFileSync(`${SCAN_MIN_BTF}.key`, 'utf8').split('\n')[0];
  if (builtOn !== os.release()) {
    t.skip(`built on ${builtOn} (e.g. scripts/vm-test.sh runs the host's build): the kernel BTF is used`);
    return;
  }
  assert.equal(cachedScanBtf(), SCAN_MIN_BTF, 'scripts/build-bpf.sh made it, keyed to this kernel');
  // Listeners, whose records do not change between two scans.
  const server = (await import('node:net')).createServer().listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  try {
    const full = await ownedSockets();
    assert.ok(full.length > 0);
    assert.deepEqual(await ownedSockets(SCAN_MIN_BTF), full);
  } finally {
    server.close();
  }
});

test('a key of another kernel is ignored; a corrupt minimised BTF falls back to the kernel BTF', async () => {
  const stale = path.join(dir, 'stale.btf');
  fs.copyFileSync(SCAN_MIN_BTF, stale);
  fs.writeFileSync(`${stale}.key`, `0.0.0-other\n#1\n1\n`);
  assert.equal(cachedScanBtf(stale), undefined);

  const corrupt = path.join(dir, 'corrupt.btf');
  fs.writeFileSync(corrupt, 'not BTF at all');
  const records = await ownedSockets(corrupt);
  assert.deepEqual(records, await ownedSockets());
});
