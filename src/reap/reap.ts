/**
 * `reap()`: closes leaked sockets from outside the program that leaked them,
 * the remedy that otherwise takes a restart.
 *
 * Two steps. `planReap()` lists the candidates exactly as snapshot does
 * (BPF iterators: owners, ages) and applies the filters. `executeReap()` hands
 * the listed sockets to the kernel (bpf/reap.bpf.c: iter/tcp +
 * bpf_sock_destroy, or sock_diag SOCK_DESTROY before Linux 6.5), which
 * re-checks each one at the moment of destroy: same cookie (a closed socket
 * whose port was reused is a new cookie, so it is never touched), same state,
 * same peer, no packet since the listing (nor within `olderThanMs`). Each
 * socket is reported destroyed, skipped (why) or failed; the run is audited
 * before the result is returned, and refused if it cannot be audited.
 */
import { constants as osConstants } from 'node:os';
import { isNativeError, loadAddon, type NativeReapMethod, type NativeReaper } from '../kernel/addon';
import { monotonicNowNs } from '../clock';
import { KernelUnsupportedError, PermissionError, UsageError } from '../errors';
import { noteFallback } from '../kernel/fallbacks';
import { REAP_OUTCOME, REAP_REQUEST, REAP_REQUEST_SIZE, REAP_RESULT, REAP_RESULT_SIZE, SOCK, SOCK_SIZE } from '../generated/layout';
import { reapFallbacks } from '../kernel/kernel-paths';
import { knownRefusals } from '../kernel/kernel-probe';
import { explainNativeError, requireBtf } from '../kernel/preflight';
import { currentActor, openAuditor, type AuditRecord, type AuditTarget } from './reap-audit';
import { applyReapFilters, type AppliedReapFilters, type ReapFilters } from './reap-filters';
import { networkNamespaces, SocketScanner } from '../scan/scan';
import { sockCookieText, sockLastActiveNs } from '../scan/sock-decoder';
import type { Owner, SocketInfo } from '../sockets';
import { tcpStateName, type TcpState } from '../tcp-states';

/** What `planReap()` found: the sockets a reap with these filters would close, oldest first. */
export interface ReapPlan {
  /** When the listing was taken (ISO 8601). */
  listedAt: string;
  filters: AppliedReapFilters;
  /** How many sockets matched; more than `sockets.length` when `max` cut the list. */
  matched: number;
  /** The sockets to close (at most `filters.max`), oldest first. */
  sockets: SocketInfo[];
}

/** Why a listed socket was left alone. */
export type ReapSkipReason =
  /** No socket with its cookie exists any more: closed since the listing, its port possibly reused by a new one. */
  | 'not-found'
  /** It left the listed state (e.g. its owner finally closed it). */
  | 'state-changed'
  /** It processed a packet after the listing, or is younger than `olderThanMs` now. */
  | 'active'
  /** Its peer or network namespace differ from the listing. */
  | 'changed';

/** What happened to one listed socket. */
export interface ReapSocketResult {
  cookie: string;
  local: string;
  remote: string;
  netns: number;
  /** State at the listing. */
  state: TcpState;
  /** Holders at the listing: their fds stay open, and their next call on them fails. */
  owners: Owner[];
  outcome: 'destroyed' | 'skipped' | 'failed';
  /** Set when skipped. */
  reason: ReapSkipReason | null;
  /** State seen when deciding; null when not found. */
  stateNow: TcpState | null;
  /** Set when failed: the errno name the kernel returned. */
  error: string | null;
}

/** `reap()`'s result; `sockleak reap --json` prints it. */
export interface ReapReport extends ReapPlan {
  dryRun: boolean;
  /** How the sockets were destroyed: 'bpf_sock_destroy' (Linux 6.5+) or 'sock_diag'; null in a dry run. */
  method: string | null;
  /** Why bpf_sock_destroy was not used, when it was not. */
  fallbackReason: string | null;
  /** One per planned socket, in plan order; empty in a dry run. */
  results: ReapSocketResult[];
  /** Where the audit lines went ("file:PATH" or "journal"), and the error if writing them failed after acting. */
  audit: { where: string; run: string; error: string | null } | null;
}

/** How to act on a plan. */
export interface ExecuteReapOptions {
  /** Audit sink; default the system journal (refused when there is none). */
  audit?: AuditTarget;
  /** 'auto' (default): bpf_sock_destroy where the kernel has it, else sock_diag. */
  method?: NativeReapMethod;
  btfPath?: string;
}

/** `reap()` options: `dryRun` must be chosen explicitly. */
export interface ReapOptions extends ExecuteReapOptions {
  /** true: list only (nothing is touched, nothing audited); false: destroy. */
  dryRun: boolean;
}

/** A listed socket with what the kernel needs to find and re-check it. */
interface Target {
  socket: SocketInfo;
  lastActiveNs: bigint;
  /** struct sl_reap_request, active_before_ns left 0 (set when acting). */
  request: Buffer;
}

/** Plans made by planReap(): only they can be executed (their raw facts stay here). */
const planned = new WeakMap<ReapPlan, { targets: Target[]; listedAtNs: bigint }>();

/** struct sl_sock (from a scan) -> struct sl_reap_request for the same socket. */
function requestFromRecord(raw: Buffer, at: number): Buffer {
  const req = Buffer.alloc(REAP_REQUEST_SIZE);
  const copy = (to: { offset: number; size: number }, from: { offset: number }): void => {
    raw.copy(req, to.offset, at + from.offset, at + from.offset + to.size);
  };
  copy(REAP_REQUEST.cookie, SOCK.cookie);
  copy(REAP_REQUEST.saddr, SOCK.saddr);
  copy(REAP_REQUEST.daddr, SOCK.daddr);
  copy(REAP_REQUEST.netns_ino, SOCK.netns_ino);
  copy(REAP_REQUEST.sport, SOCK.sport);
  copy(REAP_REQUEST.dport, SOCK.dport);
  copy(REAP_REQUEST.family, SOCK.family);
  copy(REAP_REQUEST.state, SOCK.state);
  return req;
}

/** Lists what a reap with these filters would close. Touches nothing. */
export async function planReap(filters: ReapFilters, options: { btfPath?: string } = {}): Promise<ReapPlan> {
  const { applied, remote } = applyReapFilters(filters);
  const raw = new Map<string, { request: Buffer; lastActiveNs: bigint }>();
  const scanner = new SocketScanner(options.btfPath !== undefined ? { btfPath: options.btfPath } : {});
  let found: Map<string, SocketInfo>;
  try {
    found = await scanner.scan({
      states: applied.states,
      ...(applied.pid !== null && { pid: applied.pid }),
      onRaw: (records) => {
        for (let at = 0; at + SOCK_SIZE <= records.length; at += SOCK_SIZE) {
          const cookie = sockCookieText(records, at);
          if (raw.has(cookie)) continue;
          raw.set(cookie, {
            request: requestFromRecord(records, at),
            lastActiveNs: sockLastActiveNs(records, at),
          });
        }
      },
    });
  } finally {
    scanner.close();
  }
  const listedAtNs = BigInt(monotonicNowNs());
  const listedAt = new Date().toISOString();
  const minIdleNs = applied.olderThanMs !== null ? BigInt(applied.olderThanMs) * 1_000_000n : null;
  const targets: Target[] = [];
  for (const socket of found.values()) {
    const facts = raw.get(socket.cookie);
    if (!facts) continue;
    if (remote && !remote.matches(socket.remote)) continue;
    if (minIdleNs !== null && (facts.lastActiveNs === 0n || listedAtNs - facts.lastActiveNs < minIdleNs)) continue;
    targets.push({ socket, ...facts });
  }
  // Oldest first (unknown last), so that `max` keeps the longest-leaked.
  const key = (t: Target): bigint => (t.lastActiveNs === 0n ? 1n << 63n : t.lastActiveNs);
  targets.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
  const chosen = targets.slice(0, applied.max);
  const plan: ReapPlan = { listedAt, filters: applied, matched: targets.length, sockets: chosen.map((t) => t.socket) };
  planned.set(plan, { targets: chosen, listedAtNs });
  return plan;
}

/** sock_diag failures are reap's own (no BPF program is involved); the rest as for every native error. */
function explainReapError(err: unknown): Error {
  if (isNativeError(err) && err.stage === 'sock_diag') {
    if (err.code === 'EPERM' || err.code === 'EACCES') {
      return new PermissionError('permission denied destroying sockets through sock_diag: reap needs root (CAP_NET_ADMIN)');
    }
    return new KernelUnsupportedError(`sock_diag refused the reap: ${err.message}`, err.log);
  }
  return explainNativeError(err);
}

function openReaper(options: ExecuteReapOptions): NativeReaper {
  const btfPath = requireBtf(options.btfPath);
  const addon = loadAddon();
  const known = knownRefusals(btfPath);
  // Told the kernel refuses reap_tcp (the probe's cache, SOCKLEAK_REFUSE): straight to sock_diag.
  const method = options.method ?? (known.has('reap_tcp') || known.has('bpf') ? 'sock_diag' : 'auto');
  try {
    const reaper = new addon.Reaper({ ...(btfPath !== undefined && { btfPath }), method });
    if (reaper.method() === 'sock_diag' && method !== 'sock_diag') known.set('reap_tcp', reaper.fallbackReason());
    if (!options.method) for (const fallback of reapFallbacks(new Set(known.keys()), known)) noteFallback(fallback);
    return reaper;
  } catch (err) {
    if (isNativeError(err) && err.stage === 'sock_diag' && err.code === 'EOPNOTSUPP') {
      throw new KernelUnsupportedError(
        'reap needs Linux 6.5+ (the bpf_sock_destroy kfunc) or a kernel built with CONFIG_INET_DIAG_DESTROY=y ' +
          '(sock_diag SOCK_DESTROY, what ss -K uses); this kernel has neither',
        err.log,
      );
    }
    if (isNativeError(err) && err.stage === 'sock_diag' && err.program === 'tcp_diag') {
      throw new KernelUnsupportedError(
        `reap cannot use the sock_diag fallback (this kernel has no bpf_sock_destroy): ${err.message}; try modprobe tcp_diag`,
        err.log,
      );
    }
    throw explainReapError(err);
  }
}

const ERRNO_NAMES = new Map(Object.entries(osConstants.errno).map(([name, n]) => [n, name]));

const SKIP_REASONS: Partial<Record<number, ReapSkipReason>> = {
  [REAP_OUTCOME.SKIP_NOT_FOUND]: 'not-found',
  [REAP_OUTCOME.SKIP_STATE]: 'state-changed',
  [REAP_OUTCOME.SKIP_ACTIVE]: 'active',
  [REAP_OUTCOME.SKIP_CHANGED]: 'changed',
};

function decodeResults(buf: Buffer): Map<string, { outcome: number; state: number; err: number }> {
  const out = new Map<string, { outcome: number; state: number; err: number }>();
  for (let at = 0; at + REAP_RESULT_SIZE <= buf.length; at += REAP_RESULT_SIZE) {
    out.set(buf.readBigUInt64LE(at + REAP_RESULT.cookie.offset).toString(), {
      outcome: buf.readUInt8(at + REAP_RESULT.outcome.offset),
      state: buf.readUInt8(at + REAP_RESULT.state.offset),
      err: buf.readInt32LE(at + REAP_RESULT.err.offset),
    });
  }
  return out;
}

function toResult(socket: SocketInfo, decided: { outcome: number; state: number; err: number } | undefined): ReapSocketResult {
  const outcome = decided?.outcome ?? REAP_OUTCOME.SKIP_NOT_FOUND;
  const reason = SKIP_REASONS[outcome] ?? null;
  return {
    cookie: socket.cookie,
    local: socket.local,
    remote: socket.remote,
    netns: socket.netns,
    state: socket.state,
    owners: socket.owners,
    outcome: outcome === REAP_OUTCOME.DESTROYED ? 'destroyed' : reason ? 'skipped' : 'failed',
    reason,
    stateNow: decided && decided.state ? tcpStateName(decided.state) : null,
    error: outcome === REAP_OUTCOME.FAILED ? (ERRNO_NAMES.get(-(decided?.err ?? 0)) ?? `errno ${-(decided?.err ?? 0)}`) : null,
  };
}

/**
 * Destroys the sockets of a plan that are still as listed, and audits the run
 * (the sink is checked first: no audit, no reap). Each owner's fd stays open;
 * its next call on it fails (ECONNABORTED), and the peer gets an RST.
 */
export async function executeReap(plan: ReapPlan, options: ExecuteReapOptions = {}): Promise<ReapReport> {
  const made = planned.get(plan);
  if (!made) throw new UsageError('executeReap() takes a plan returned by planReap() in this process');
  const auditor = openAuditor(options.audit);
  const { targets, listedAtNs } = made;
  let method: string | null = null;
  let fallbackReason: string | null = null;
  let decided = new Map<string, { outcome: number; state: number; err: number }>();
  if (targets.length > 0) {
    const reaper = openReaper(options);
    try {
      method = reaper.method();
      fallbackReason = reaper.fallbackReason() || null;
      // The socket must have been idle since the listing, and still for olderThanMs now.
      let activeBeforeNs = listedAtNs;
      const { olderThanMs } = plan.filters;
      if (olderThanMs !== null) {
        const cutoff = BigInt(monotonicNowNs()) - BigInt(olderThanMs) * 1_000_000n;
        if (cutoff < activeBeforeNs) activeBeforeNs = cutoff > 0n ? cutoff : 1n;
      }
      const requests = Buffer.concat(targets.map((t) => t.request));
      for (let at = 0; at < requests.length; at += REAP_REQUEST_SIZE) {
        requests.writeBigUInt64LE(activeBeforeNs, at + REAP_REQUEST.active_before_ns.offset);
      }
      const namespaces = networkNamespaces();
      const paths = [...new Set(targets.map((t) => t.socket.netns))].flatMap((ino) => namespaces.get(ino) ?? []);
      decided = decodeResults(await reaper.reap(requests, paths));
    } catch (err) {
      throw explainReapError(err);
    } finally {
      reaper.close();
    }
  }
  const results = targets.map((t) => toResult(t.socket, decided.get(t.socket.cookie)));
  const report: ReapReport = {
    ...plan,
    dryRun: false,
    method,
    fallbackReason,
    results,
    audit: { where: auditor.where, run: auditor.run, error: null },
  };
  try {
    auditor.write(auditRecords(report, auditor.run));
  } catch (err) {
    report.audit = { where: auditor.where, run: auditor.run, error: err instanceof Error ? err.message : String(err) };
  }
  return report;
}

function auditRecords(report: ReapReport, run: string): AuditRecord[] {
  const count = (o: ReapSocketResult['outcome']): number => report.results.filter((r) => r.outcome === o).length;
  const head: AuditRecord = {
    type: 'reap',
    run,
    time: new Date().toISOString(),
    actor: currentActor(),
    argv: process.argv.slice(2),
    filters: report.filters,
    listedAt: report.listedAt,
    method: report.method,
    matched: report.matched,
    listed: report.sockets.length,
    destroyed: count('destroyed'),
    skipped: count('skipped'),
    failed: count('failed'),
  };
  return [head, ...report.results.map((r): AuditRecord => ({ type: 'reap-socket', run, ...r }))];
}

/**
 * Lists the sockets matching `filters` and, unless `dryRun`, destroys them
 * (see executeReap). Refuses, with a UsageError, filters that would reach
 * every socket of a state, and ESTABLISHED/LISTEN without their allow flag.
 */
export async function reap(filters: ReapFilters, options: ReapOptions): Promise<ReapReport> {
  const plan = await planReap(filters, options.btfPath !== undefined ? { btfPath: options.btfPath } : {});
  if (!options.dryRun) return executeReap(plan, options);
  return { ...plan, dryRun: true, method: null, fallbackReason: null, results: [], audit: null };
}

export { REAP_DEFAULT_MAX, REAP_MAX, type ReapFilters, type AppliedReapFilters } from './reap-filters';
export type { AuditTarget, AuditActor } from './reap-audit';
