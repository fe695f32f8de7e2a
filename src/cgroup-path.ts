/**
 * What a cgroup v2 path says about where a process runs: the container and the
 * Kubernetes pod, read from the names container runtimes give their cgroups.
 * Pure (no I/O): src/scan/cgroups.ts reads the paths, this names them.
 *
 * Shapes recognised, with the systemd cgroup driver (a `.scope` per container
 * under a `.slice` per pod) and the cgroupfs one (plain directories):
 *   docker      /system.slice/docker-<id>.scope            /docker/<id>
 *   containerd  .../kubepods-besteffort-pod<uid_>.slice/cri-containerd-<id>.scope
 *               /kubepods/besteffort/pod<uid>/<id>
 *   CRI-O       .../kubepods-pod<uid_>.slice/crio-<id>.scope
 *   podman      /machine.slice/libpod-<id>.scope (also nested: .../libpod-<id>.scope/container)
 *               /libpod_parent/libpod-<id>
 * systemd escapes a pod UID's dashes as underscores in slice names; the UID is
 * given back with dashes, as Kubernetes prints it.
 */

/** Where a cgroup path places a process. */
export interface CgroupPlace {
  /** The container's ID (64 hex digits), when the path names one. */
  containerId: string | null;
  /** The Kubernetes pod's UID (with dashes), when the path is under kubepods. */
  podUid: string | null;
}

/** A systemd scope or a cgroupfs directory a runtime made for one container. */
const CONTAINER_SCOPE = /^(?:docker|cri-containerd|crio|libpod|cri-o)-([0-9a-f]{64})(?:\.scope)?$/;
const BARE_ID = /^[0-9a-f]{64}$/;
/** `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid_with_underscores>.slice` (systemd). */
const POD = /(?:^|-)pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?$/;

/**
 * The container and pod a cgroup v2 path (as in /proc/PID/cgroup's `0::` line)
 * names; nulls where it names none. The innermost container scope wins (a
 * container inside a pod, or podman's nested `container` cgroup).
 */
export function cgroupPlace(path: string): CgroupPlace {
  const parts = path.split('/');
  let containerId: string | null = null;
  let podUid: string | null = null;
  for (let i = parts.length - 1; i >= 0; i--) {
    const part = parts[i]!;
    if (containerId === null) {
      const scope = CONTAINER_SCOPE.exec(part);
      // A bare 64-hex directory is a container only under a runtime's or a pod's parent (cgroupfs driver).
      if (scope) containerId = scope[1]!;
      else if (BARE_ID.test(part) && i > 0 && /^(docker|kubepods|pod|besteffort|burstable|guaranteed|libpod_parent|default)/.test(parts[i - 1]!)) {
        containerId = part;
      }
    }
    if (podUid === null && path.includes('kubepods')) {
      const pod = POD.exec(part);
      if (pod) podUid = pod[1]!.replace(/_/g, '-');
    }
  }
  return { containerId, podUid };
}

/** The first 12 digits of a container ID, as `docker ps` shows it. */
export function shortContainerId(id: string): string {
  return id.slice(0, 12);
}

/** `--cgroup` and `--container`: which owners and creators a command keeps. */
export interface CgroupFilter {
  /** A cgroup path or an ancestor of it (`/kubepods.slice` keeps every pod). */
  cgroup?: string;
  /** The start of a container ID (`docker ps`'s 12 digits, or fewer). */
  container?: string;
}

/** What an owner or a creator carries of its cgroup (src/sockets.ts). */
export interface CgroupCarrier {
  cgroup?: string;
  containerId?: string;
}

/** Whether `who` (an owner or creator) is in the filter's cgroup and container; undefined `who` never is. */
export function inCgroup(filter: CgroupFilter, who: CgroupCarrier | null | undefined): boolean {
  if (!who) return false;
  if (filter.cgroup !== undefined) {
    if (who.cgroup === undefined) return false;
    const under = filter.cgroup === '/' ? who.cgroup.startsWith('/') : who.cgroup === filter.cgroup || who.cgroup.startsWith(`${filter.cgroup}/`);
    if (!under) return false;
  }
  if (filter.container !== undefined && !who.containerId?.startsWith(filter.container)) return false;
  return true;
}

/** Whether a socket with these holders and creator passes the filter (no filter: every one). */
export function matchesWhere(filter: CgroupFilter | undefined, owners: readonly CgroupCarrier[], creator: CgroupCarrier | null): boolean {
  return !filter || !filtersCgroup(filter) || owners.some((o) => inCgroup(filter, o)) || inCgroup(filter, creator);
}

/** Whether a filter is set at all. */
export function filtersCgroup(filter: CgroupFilter): boolean {
  return filter.cgroup !== undefined || filter.container !== undefined;
}
