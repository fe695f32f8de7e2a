/**
 * Checks made before touching BPF, so that the common failures get one clear
 * line (not a libbpf log): privileges, kernel BTF, target pid.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { KernelUnsupportedError, NotFoundError, PermissionError } from '../errors';
import { isNativeError } from './addon';
import { describeMissing } from './features';

const CAP_SYS_PTRACE = 19n;
const CAP_SYS_ADMIN = 21n;
const CAP_PERFMON = 38n;
const CAP_BPF = 39n;

export const DEFAULT_BTF_PATH = '/sys/kernel/btf/vmlinux';

/** The effective capability set of this process. */
function effectiveCaps(): bigint {
  const status = readFileSync('/proc/self/status', 'utf8');
  const hex = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1];
  return hex ? BigInt(`0x${hex}`) : 0n;
}

const has = (caps: bigint, cap: bigint): boolean => ((caps >> cap) & 1n) === 1n;

/** Throws PermissionError unless this process may load tracing BPF programs. */
export function requireBpfPrivileges(): void {
  const caps = effectiveCaps();
  if (has(caps, CAP_SYS_ADMIN) || (has(caps, CAP_BPF) && has(caps, CAP_PERFMON))) return;
  const missing = [has(caps, CAP_BPF) ? '' : 'CAP_BPF', has(caps, CAP_PERFMON) ? '' : 'CAP_PERFMON']
    .filter(Boolean)
    .join(' and ');
  throw new PermissionError(`permission denied: sockleak needs root or ${missing} (CAP_SYS_ADMIN also works)`);
}

/**
 * Whether this process may read other processes' /proc/PID/fd, what the scans
 * without BPF need (owners as `ss -p` finds them): tried on init's, since the
 * kernel's rule (ptrace read access: same uid and a superset of its
 * capabilities, or CAP_SYS_PTRACE) is not one a capability set predicts, in a
 * container least of all.
 */
export function canReadEveryProcess(): boolean {
  try {
    readdirSync('/proc/1/fd');
    return true;
  } catch {
    return false;
  }
}

/** Whether this process may enter other network namespaces (setns), to dump their sockets without BPF. */
export function canEnterNetns(): boolean {
  return has(effectiveCaps(), CAP_SYS_ADMIN);
}

/** A capability this process runs without, and what sockleak cannot see for it. */
export interface CapabilityGap {
  /** `CAP_SYS_ADMIN`, or two names joined by `and` when only both together give it back. */
  capability: string;
  /** What is not seen, for people. */
  lost: string;
}

/**
 * What a long-running agent cannot see with this process's capabilities,
 * beyond what BPF itself needs (requireBpfPrivileges, and the fallbacks noted
 * when BPF is refused): empty with all of them. Other network namespaces are
 * found through /proc/PID/ns/net of their processes (ptrace read access:
 * CAP_SYS_PTRACE for other users' processes, and root's with more capabilities)
 * and entered with setns() (CAP_SYS_ADMIN); leaks in them are still found,
 * the tracer and the task-file scans see every namespace.
 */
export function capabilityGaps(caps: bigint = effectiveCaps()): CapabilityGap[] {
  const gaps: CapabilityGap[] = [];
  const missing = [has(caps, CAP_SYS_ADMIN) ? '' : 'CAP_SYS_ADMIN', has(caps, CAP_SYS_PTRACE) ? '' : 'CAP_SYS_PTRACE'].filter(Boolean);
  if (missing.length) {
    gaps.push({
      capability: missing.join(' and '),
      lost: 'sockets of other network namespaces are not counted (sockleak_sockets, TIME_WAIT and free ports per destination: this namespace only; leaks in every namespace are still found)',
    });
  }
  const bpf = has(caps, CAP_SYS_ADMIN) || (has(caps, CAP_BPF) && has(caps, CAP_PERFMON));
  if (!bpf && !has(caps, CAP_SYS_PTRACE)) {
    gaps.push({ capability: 'CAP_SYS_PTRACE', lost: "the holders of other users' sockets (no BPF, and their /proc/PID/fd cannot be read)" });
  }
  return gaps;
}

/** The one line that says what capabilityGaps() loses: `without CAP_SYS_ADMIN: ...; without ...`, or '' with none. */
export function describeCapabilityGaps(gaps: readonly CapabilityGap[]): string {
  return gaps.map((g) => `without ${g.capability}: ${g.lost}`).join('; ');
}

/**
 * Why BPF cannot be used here (SOCKLEAK_REFUSE=bpf, no privileges to load it,
 * a kernel without BTF), for a caller with another way: undefined when it can.
 * Throws PermissionError when the other way is closed too (not root): that
 * error names what BPF needs, as without a fallback; KernelUnsupportedError
 * for a BTF file named by the user that does not exist.
 */
export function bpfUnusable(btfPath: string | undefined, forced: boolean): string | undefined {
  if (forced) {
    if (!canReadEveryProcess()) {
      throw new PermissionError('permission denied: without BPF (SOCKLEAK_REFUSE=bpf) sockleak reads every /proc/PID/fd: need root');
    }
    return 'SOCKLEAK_REFUSE=bpf';
  }
  try {
    requireBpfPrivileges();
  } catch (err) {
    if (!canReadEveryProcess()) throw err;
    return 'no CAP_BPF and CAP_PERFMON';
  }
  // A BTF file named by the user (option, SOCKLEAK_BTF) that is missing is a
  // mistake to report; the kernel's own missing is a kernel built without BTF.
  if ((btfPath ?? process.env.SOCKLEAK_BTF) === undefined && !existsSync(DEFAULT_BTF_PATH) && canReadEveryProcess()) {
    return `no kernel BTF at ${DEFAULT_BTF_PATH}`;
  }
  requireBtf(btfPath);
  return undefined;
}

function hasBpfPrivileges(): boolean {
  try {
    requireBpfPrivileges();
    return true;
  } catch {
    return false;
  }
}

/** The BTF path to use; throws KernelUnsupportedError if it is missing. */
export function requireBtf(path: string | undefined = process.env.SOCKLEAK_BTF): string | undefined {
  const effective = path ?? DEFAULT_BTF_PATH;
  if (!existsSync(effective)) {
    throw new KernelUnsupportedError(
      `no kernel BTF at ${effective}: sockleak needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (Linux >= 5.17)`,
    );
  }
  return path;
}

/** Throws NotFoundError if no process has this pid. */
export function requireProcess(pid: number): void {
  if (!existsSync(`/proc/${pid}`)) throw new NotFoundError(`no process with pid ${pid}`);
}

/** Turns an addon failure into the typed error people should see. */
export function explainNativeError(err: unknown): Error {
  if (!isNativeError(err)) return err as Error;
  if (err.stage === 'netns' && err.code === 'EPERM') {
    return new PermissionError(`permission denied entering network namespace ${err.program}: need CAP_SYS_ADMIN`);
  }
  const where = err.program ? `BPF program ${err.program}` : 'BPF object';
  const missing = err.code === 'EPERM' || err.stage === 'netns' ? '' : describeMissing(process.env.SOCKLEAK_BTF);
  if (missing) {
    return new KernelUnsupportedError(`this kernel lacks ${missing}, needed by ${where} (run sockleak features)`, err.log);
  }
  if (err.code === 'EPERM' || err.code === 'EACCES') {
    // With the privileges BPF needs, a refused load is the kernel's rule (its
    // verifier, or a build that refuses the program type), not ours.
    if (err.stage === 'load' && (/PROG LOAD LOG|processed \d+ insns/.test(err.log) || hasBpfPrivileges())) {
      return new KernelUnsupportedError(`the kernel refused ${where} (${err.code}: ${err.reason})`, err.log);
    }
    return new PermissionError(`permission denied loading ${where}: need root or CAP_BPF and CAP_PERFMON`);
  }
  if (err.stage === 'load' && err.code === 'ENOENT' && /BTF|btf/.test(err.log)) {
    return new KernelUnsupportedError(`kernel BTF unusable for ${where}: ${err.message}`, err.log);
  }
  return new KernelUnsupportedError(`kernel refused ${where} at ${err.stage}: ${err.message}`, err.log);
}
