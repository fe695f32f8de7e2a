/** Container and pod from cgroup v2 paths (cgroup-path.ts), the --cgroup/--container parsers and filter: pure, no BPF. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cgroupPlace, inCgroup, matchesWhere, shortContainerId } from '../src/cgroup-path';
import { parseCgroupPrefix, parseContainerPrefix } from '../src/cli/parse';
import { cgroupPathIn } from '../src/scan/cgroups';
import { UsageError } from '../src/errors';

const ID = '4f2a9c1b0d3e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a';
const UID = '0d5b8a3c-1f2e-4b6a-9c1d-2e3f4a5b6c7d';
const UID_ = UID.replace(/-/g, '_');

test('each runtime, both cgroup drivers: the container ID and pod UID the path names', () => {
  const cases: Array<[string, string, string | null, string | null]> = [
    ['docker, systemd driver', `/system.slice/docker-${ID}.scope`, ID, null],
    ['docker, cgroupfs driver', `/docker/${ID}`, ID, null],
    ['containerd CRI, systemd, besteffort', `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${UID_}.slice/cri-containerd-${ID}.scope`, ID, UID],
    ['containerd CRI, systemd, guaranteed', `/kubepods.slice/kubepods-pod${UID_}.slice/cri-containerd-${ID}.scope`, ID, UID],
    ['CRI, cgroupfs, besteffort', `/kubepods/besteffort/pod${UID}/${ID}`, ID, UID],
    ['CRI, cgroupfs, guaranteed', `/kubepods/pod${UID}/${ID}`, ID, UID],
    ['CRI-O, systemd, burstable', `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/crio-${ID}.scope`, ID, UID],
    ['CRI-O conmon: the pod, not a container', `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/crio-conmon-${ID}.scope`, null, UID],
    ['a pod cgroup itself', `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${UID_}.slice`, null, UID],
    ['podman, systemd (root)', `/machine.slice/libpod-${ID}.scope`, ID, null],
    ['podman rootless, nested container cgroup', `/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-${ID}.scope/container`, ID, null],
    ['podman, cgroupfs', `/libpod_parent/libpod-${ID}`, ID, null],
    ['a host service', '/system.slice/sshd.service', null, null],
    ['a login session', '/user.slice/user-1000.slice/session-3.scope', null, null],
    ['the root', '/', null, null],
    ['64 hex digits under no runtime', `/srv/${ID}`, null, null],
    ['pod-like name outside kubepods', `/system.slice/pod${UID}.service`, null, null],
  ];
  for (const [what, path, containerId, podUid] of cases) {
    assert.deepEqual(cgroupPlace(path), { containerId, podUid }, what);
  }
  assert.equal(shortContainerId(ID), '4f2a9c1b0d3e');
});

test('--cgroup: an absolute path, its trailing slash dropped; --container: hex digits, lower-cased; one-line errors', () => {
  assert.equal(parseCgroupPrefix('/kubepods.slice/'), '/kubepods.slice');
  assert.equal(parseCgroupPrefix('/'), '/');
  assert.equal(parseContainerPrefix('4F2A9C'), '4f2a9c');
  for (const bad of ['kubepods.slice', '', '/a/../b', '/a//b', '/a b']) {
    assert.throws(() => parseCgroupPrefix(bad), (e: unknown) => e instanceof UsageError && /^--cgroup: /.test(e.message) && !e.message.includes('\n'), bad);
  }
  for (const bad of ['', 'xyz', `${ID}0`, 'docker://4f2a']) {
    assert.throws(() => parseContainerPrefix(bad), (e: unknown) => e instanceof UsageError && /^--container: /.test(e.message) && !e.message.includes('\n'), bad);
  }
});

test('the filter: a cgroup and everything under it (whole path components), a container by ID prefix; holders or creator', () => {
  const inPod = { cgroup: `/kubepods/besteffort/pod${UID}/${ID}`, containerId: ID, podUid: UID };
  const host = { cgroup: '/system.slice/sshd.service' };
  assert.ok(inCgroup({ cgroup: '/kubepods' }, inPod));
  assert.ok(inCgroup({ cgroup: inPod.cgroup }, inPod));
  assert.ok(!inCgroup({ cgroup: '/kube' }, inPod), 'a prefix of a component is not an ancestor');
  assert.ok(inCgroup({ cgroup: '/' }, host));
  assert.ok(inCgroup({ container: '4f2a' }, inPod));
  assert.ok(!inCgroup({ container: '4f2b' }, inPod));
  assert.ok(!inCgroup({ container: '4f2a' }, host), 'no container: never in one');
  assert.ok(!inCgroup({ cgroup: '/' }, { cgroup: '(gone)' }), "a gone creator's cgroup is under no path");
  assert.ok(!inCgroup({ cgroup: '/kubepods', container: '4f2b' }, inPod), 'both must hold');
  assert.ok(!inCgroup({ cgroup: '/' }, null));
  assert.ok(matchesWhere(undefined, [host], null) && matchesWhere({}, [], null), 'no filter: everything');
  assert.ok(matchesWhere({ container: '4f' }, [host, inPod], null), 'one holder in it is enough');
  assert.ok(matchesWhere({ container: '4f' }, [], inPod), 'or the creator');
  assert.ok(!matchesWhere({ container: '4f' }, [host], null));
});

test('/proc/PID/cgroup: the v2 line on v2 and hybrid hosts; on a v1-only host the systemd hierarchy, not the first line', () => {
  const id = 'a'.repeat(64);
  assert.equal(cgroupPathIn('0::/system.slice/nginx.service\n'), '/system.slice/nginx.service');
  // Hybrid (this machine's layout): v1 controllers plus the unified line.
  assert.equal(cgroupPathIn(`12:pids:/docker/${id}\n1:name=systemd:/docker/${id}\n0::/docker/${id}\n`), `/docker/${id}`);
  // v1 only: the first line (rdma here) says / of a container's process; name=systemd names the container.
  const v1 = `13:rdma:/\n12:pids:/docker/${id}\n5:memory:/docker/${id}\n1:name=systemd:/docker/${id}\n`;
  assert.equal(cgroupPathIn(v1), `/docker/${id}`);
  assert.equal(cgroupPlace(cgroupPathIn(v1)!).containerId, id);
  assert.equal(cgroupPathIn(`13:rdma:/\n12:pids:/kubepods/pod1/${id}\n`), `/kubepods/pod1/${id}`, 'no systemd hierarchy: pids');
  assert.equal(cgroupPathIn('0::/gone.scope (deleted)\n'), '/gone.scope');
  assert.equal(cgroupPathIn(''), null);
});
