/**
 * The audit trail of `sockleak reap`: who destroyed which sockets, when, with
 * which filters, and what happened to each. JSON lines, appended to a file
 * (`--audit FILE`) or sent to the system journal through `logger -t sockleak`
 * (syslog facility authpriv, so it lands where other privileged actions do).
 *
 * One run writes one `reap` line (who, when, filters, method, counts) and one
 * `reap-socket` line per socket (cookie, endpoints, owners, outcome), all
 * carrying the same `run` id; per-socket lines keep each message small enough
 * for syslog. The sink is checked before anything is destroyed: a reap that
 * cannot be audited does not happen.
 */
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { appendFileSync, closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { hostname, userInfo } from 'node:os';
import { NotFoundError, PermissionError, SockleakError, ExitCode, UsageError } from '../errors';

/** Where audit lines go: a file (appended) or the system journal. */
export type AuditTarget = { file: string } | 'journal';

/** Who ran a reap, as precisely as the process can tell. */
export interface AuditActor {
  uid: number;
  /** Name of `uid`, when the passwd database has one. */
  user: string | null;
  /** The login uid (audit subsystem): the person behind sudo/su; null when unset. */
  loginUid: number | null;
  /** $SUDO_USER, when run through sudo. */
  sudoUser: string | null;
  pid: number;
  host: string;
}

/** One audit record; `reap` opens a run, one `reap-socket` per socket follows. */
export type AuditRecord = { type: 'reap' | 'reap-socket' } & Record<string, unknown>;

/** An audit sink that was checked to be writable. */
export interface Auditor {
  /** "file:/path" or "journal". */
  readonly where: string;
  readonly run: string;
  write(records: readonly AuditRecord[]): void;
}

/** The current process's identity for the audit line. */
export function currentActor(): AuditActor {
  let user: string | null = null;
  try {
    user = userInfo().username;
  } catch {
    // no passwd entry for this uid
  }
  let loginUid: number | null = null;
  try {
    const raw = Number(readFileSync('/proc/self/loginuid', 'utf8').trim());
    loginUid = Number.isInteger(raw) && raw !== 4294967295 ? raw : null;
  } catch {
    // kernel without audit support
  }
  return {
    uid: process.getuid?.() ?? -1,
    user,
    loginUid,
    sudoUser: process.env.SUDO_USER ?? null,
    pid: process.pid,
    host: hostname(),
  };
}

function fileAuditor(path: string, run: string): Auditor {
  try {
    closeSync(openSync(path, 'a', 0o600)); // writable now, or no reap
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = `cannot open audit file ${path}: ${code ?? (err as Error).message}`;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new NotFoundError(why);
    if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') throw new PermissionError(why);
    throw new SockleakError(why, ExitCode.SOFTWARE);
  }
  return {
    where: `file:${path}`,
    run,
    write(records) {
      appendFileSync(path, records.map((r) => `${JSON.stringify(r)}\n`).join(''), { mode: 0o600 });
    },
  };
}

function journalAuditor(run: string): Auditor {
  if (!existsSync('/run/systemd/journal/socket') && !existsSync('/dev/log')) {
    throw new UsageError('no system journal or syslog here (/dev/log missing) to audit the reap to: pass --audit FILE');
  }
  return {
    where: 'journal',
    run,
    write(records) {
      const r = spawnSync('logger', ['-t', 'sockleak', '-p', 'authpriv.notice', '--id', String(process.pid)], {
        input: records.map((rec) => `${JSON.stringify(rec)}\n`).join(''),
        encoding: 'utf8',
        timeout: 10_000,
      });
      if (r.error || r.status !== 0) {
        throw new SockleakError(
          `writing the audit to the journal failed (${r.error?.message ?? r.stderr.trim()}); the sockets were acted on`,
          ExitCode.SOFTWARE,
        );
      }
    },
  };
}

/** Opens (checks) the sink before any socket is touched; throws a typed error when it cannot be used. */
export function openAuditor(target: AuditTarget = 'journal'): Auditor {
  const run = randomUUID();
  return target === 'journal' ? journalAuditor(run) : fileAuditor(target.file, run);
}
