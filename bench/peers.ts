/**
 * The tools the benchmark compares sockleak with, or needs to run: found on the
 * machine, or installed from Debian packages once (idempotent: a second run
 * installs nothing).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/** A tool by its command name, and the Debian package that ships it. */
interface Peer {
  tool: string;
  pkg: string;
}

export const PEERS: readonly Peer[] = [
  { tool: 'tcpstates', pkg: 'libbpf-tools' },
  { tool: 'bpftrace', pkg: 'bpftrace' },
  { tool: 'ss', pkg: 'iproute2' },
  { tool: 'lsof', pkg: 'lsof' },
  { tool: 'gcc', pkg: 'gcc' },
  { tool: 'bpftool', pkg: 'bpftool' },
  { tool: 'setpriv', pkg: 'util-linux' },
  { tool: 'time', pkg: 'time' }, // GNU time: peak RSS of the snapshot tools
];

/** Where each tool lives; a tool that could not be found or installed is absent. */
export type Peers = ReadonlyMap<string, string>;

const SEARCH = [...(process.env.PATH ?? '').split(':'), '/usr/local/sbin', '/usr/sbin', '/sbin', '/usr/bin', '/bin'];

function which(tool: string): string | undefined {
  for (const dir of SEARCH) {
    if (!dir) continue;
    const candidate = path.join(dir, tool);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

function aptInstall(pkgs: string[]): boolean {
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = (): boolean =>
    spawnSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...pkgs], { env, stdio: ['ignore', 'ignore', 'inherit'] })
      .status === 0;
  if (install()) return true;
  // A fresh machine has no package lists yet.
  spawnSync('apt-get', ['update', '-qq'], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  return install();
}

/** Finds every peer, installing the missing ones with apt-get. Logs what it installs. */
export function ensurePeers(log: (line: string) => void): Peers {
  const missing = PEERS.filter((p) => !which(p.tool));
  if (missing.length) {
    const pkgs = [...new Set(missing.map((p) => p.pkg))];
    log(`installing ${pkgs.join(' ')} (for ${missing.map((p) => p.tool).join(', ')})`);
    if (!aptInstall(pkgs)) log(`apt-get install ${pkgs.join(' ')} failed; rows that need them will be skipped`);
  }
  const found = new Map<string, string>();
  for (const p of PEERS) {
    const where = which(p.tool);
    if (where) found.set(p.tool, where);
  }
  return found;
}

/** The installed version of a package, for the report ("" when not installed from a package). */
export function packageVersion(tool: string): string {
  const pkg = PEERS.find((p) => p.tool === tool)?.pkg;
  if (!pkg) return '';
  const r = spawnSync('dpkg-query', ['-W', '-f=${Version}', pkg], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : '';
}
