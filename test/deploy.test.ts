/**
 * deploy/: the systemd unit (systemd-analyze verify, and the agent run for real
 * with exactly the unit's capabilities as a user that is not root), the
 * Kubernetes manifest (validated against the Kubernetes API schema with
 * kubernetes-models, and consistent with the agent's flags), and the
 * Dockerfile (no docker daemon here: checked against package.json and the docs).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { DaemonSet } from 'kubernetes-models/apps/v1';
import { Namespace, ServiceAccount } from 'kubernetes-models/v1';
import { CLI, ROOT, httpRequest, sleep, startAgentProcess, startBackend, startHolder, waitFor, type AgentProcess } from './helpers';

const UNIT = path.join(ROOT, 'deploy', 'systemd', 'sockleak-agent.service');
const MANIFEST = path.join(ROOT, 'deploy', 'kubernetes', 'daemonset.yaml');
const DOCKERFILE = path.join(ROOT, 'deploy', 'Dockerfile');
const DOCS = path.join(ROOT, 'docs', 'deploy.md');
const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string; engines: { node: string } };

const dir = mkdtempSync(path.join(os.tmpdir(), 'sockleak-deploy-'));
const cleanups: Array<() => void> = [];
after(() => {
  for (const c of cleanups.reverse()) c();
  rmSync(dir, { recursive: true, force: true });
});

/** `Key=value` settings of a unit file's [Service] section, in order (keys may repeat). */
function serviceSettings(text: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  let section = '';
  for (const line of text.split('\n')) {
    const header = /^\[(\w+)\]$/.exec(line.trim());
    if (header) section = header[1]!;
    const m = /^(\w+)=(.*)$/.exec(line);
    if (m && section === 'Service') out.push([m[1]!, m[2]!]);
  }
  return out;
}

const setting = (text: string, key: string): string => {
  const found = serviceSettings(text).filter(([k]) => k === key);
  assert.equal(found.length, 1, `${key} once in the unit`);
  return found[0]![1];
};

/** systemd-analyze verify of unit text, with ExecStart pointing at this checkout (verify wants the binary to exist). */
function verify(text: string, name: string): { code: number | null; output: string } {
  const file = path.join(dir, name);
  writeFileSync(file, text.replaceAll('/usr/local/bin/sockleak', CLI));
  const r = spawnSync('systemd-analyze', ['verify', '--man=no', file], { encoding: 'utf8' });
  assert.ok(!r.error, `systemd-analyze: ${r.error?.message} (scripts/setup.sh installs it: Debian package systemd)`);
  return { code: r.status, output: `${r.stdout}${r.stderr}`.trim() };
}

test('the systemd unit passes systemd-analyze verify without a warning; a wrong key or value does not', () => {
  const unit = readFileSync(UNIT, 'utf8');
  assert.deepEqual(verify(unit, 'sockleak-agent.service'), { code: 0, output: '' });
  // verify only warns about these (exit 0): the test must see the warning.
  const typo = verify(unit.replace('ProtectSystem=strict', 'ProtectSytem=strict'), 'typo.service');
  assert.match(typo.output, /Unknown key 'ProtectSytem'/);
  const value = verify(unit.replace('ProtectSystem=strict', 'ProtectSystem=stric'), 'value.service');
  assert.match(value.output, /Failed to parse protect system value/);

  // The least privilege: a user of its own, capabilities as ambient ones, nothing to gain at exec.
  assert.equal(setting(unit, 'DynamicUser'), 'yes');
  assert.equal(setting(unit, 'NoNewPrivileges'), 'yes');
  assert.equal(setting(unit, 'ProtectSystem'), 'strict');
  assert.equal(setting(unit, 'AmbientCapabilities'), setting(unit, 'CapabilityBoundingSet'));
  assert.match(setting(unit, 'ExecStart'), /^\/usr\/local\/bin\/sockleak agent --listen 127\.0\.0\.1:9466\b/, 'loopback by default');
});

/** GET a local URL's body. */
const fetchText = async (url: string): Promise<string> => (await httpRequest(url)).body;

/**
 * What ProtectSystem=strict, ProtectHome=yes, PrivateTmp=yes, ProtectKernelTunables=yes and
 * CacheDirectory= make of the file system, as far as a mount namespace can without systemd: `/`
 * (here one file system, /home, /root and /tmp included) and /proc/sys read-only, a private /tmp,
 * and the cache directory the only place the service's user can write.
 */
const SANDBOX = `set -e
mkdir -p /var/cache/sockleak
mount -t tmpfs -o uid=65534,gid=65534,mode=0700 tmpfs /var/cache/sockleak
# PrivateTmp: a /tmp of its own. A checkout under /tmp stays where it was (moved over the new one).
case "$SANDBOX_CHECKOUT" in /tmp/*) hold=$(mktemp -d /run/sockleak-root.XXXXXX); mount --bind "$SANDBOX_CHECKOUT" "$hold";; *) hold=;; esac
mount -t tmpfs -o mode=1777 tmpfs /tmp
if [ -n "$hold" ]; then mkdir -p "$SANDBOX_CHECKOUT"; mount --move "$hold" "$SANDBOX_CHECKOUT"; rmdir "$hold"; fi
mount -o remount,bind,ro /
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
mount -o remount,bind,ro /sys
if touch /var/lib/.sockleak-rw-check 2>/dev/null; then echo "sandbox: / is writable" >&2; exit 99; fi
exec "$@"`;

/** The agent as the unit runs it: ExecStart's flags, the unit's ambient capabilities, a user that is not root, the unit's file system (sandbox). */
async function runAsUnit(extraCaps: string[], sandbox: boolean): Promise<AgentProcess> {
  const unit = readFileSync(UNIT, 'utf8');
  const caps = [...setting(unit, 'AmbientCapabilities').split(/\s+/), ...extraCaps].map((c) => `+${c.replace(/^CAP_/, '').toLowerCase()}`).join(',');
  const flags = setting(unit, 'ExecStart').split(/\s+/).slice(1).join(' ').replace('127.0.0.1:9466', '127.0.0.1:0').split(' ');
  // What CacheDirectory= gives the service: a directory of its own user (in the sandbox, a tmpfs on the default one).
  const cache = sandbox ? '/var/cache/sockleak' : mkdtempSync(path.join(dir, 'cache-'));
  if (!sandbox) chownSync(cache, 65534, 65534);
  const agent = [
    'setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', `--inh-caps=-all,${caps}`, `--ambient-caps=-all,${caps}`, `--bounding-set=-all,${caps}`, '--no-new-privs',
    process.execPath, CLI, ...flags, '--threshold', '1s',
  ];
  const argv = sandbox ? ['unshare', '--mount', '--propagation', 'private', 'sh', '-c', SANDBOX, 'sandbox', ...agent] : agent;
  return startAgentProcess([], { argv, env: { ...process.env, SOCKLEAK_CACHE_DIR: cache, SANDBOX_CHECKOUT: ROOT } });
}

test("the unit's capabilities and file system are enough for a user that is not root: a root process's leak is found with its holder; what is lost is one line", async () => {
  const backend = await startBackend('127.0.0.1');
  const holder = await startHolder();
  cleanups.push(() => holder.kill());
  await holder.request({ op: 'connect', host: backend.host, port: backend.port });
  await waitFor(() => backend.accepted.length === 1, 5_000, 'the backend accepts'); // closing a listener resets what it has not accepted: no CLOSE_WAIT
  await backend.remove(); // the holder's socket goes to CLOSE_WAIT and stays: a leak held by root with every capability

  const agent = await runAsUnit([], true);
  try {
    const want = new RegExp(`^sockleak_process_close_wait_leaked_sockets\\{pid="${holder.pid}"\\} 1$`, 'm');
    let metrics = '';
    for (const deadline = Date.now() + 20_000; !want.test(metrics) && Date.now() < deadline; await sleep(250)) {
      metrics = await fetchText(`${agent.base}/metrics`);
    }
    assert.match(metrics, want, `the leak and its holder in /metrics; stderr: ${agent.stderr()}`);
    assert.match(metrics, new RegExp(`^sockleak_process_info\\{pid="${holder.pid}",comm="python3",cgroup="[^"]*"\\} 1$`, 'm'), 'the holder named');
    const lines = agent.stderr().split('\n').filter((l) => /without CAP_/.test(l));
    assert.deepEqual(lines, [
      'sockleak: without CAP_SYS_ADMIN and CAP_SYS_PTRACE: sockets of other network namespaces are not counted (sockleak_sockets, TIME_WAIT and free ports per destination: this namespace only; leaks in every namespace are still found)',
    ]);
    assert.doesNotMatch(agent.stderr(), /bpf refused/, 'BPF works with the unit capabilities');
    assert.equal(await agent.stop(), 0);
  } finally {
    await agent.stop();
  }

  // The drop-in of the unit's comment gives them back: no line.
  const full = await runAsUnit(['CAP_SYS_ADMIN', 'CAP_SYS_PTRACE'], false);
  try {
    assert.doesNotMatch(full.stderr(), /without CAP_/);
  } finally {
    await full.stop();
  }
});

type Doc = { apiVersion: string; kind: string; [k: string]: unknown };

/** The manifest's documents, each validated by the kubernetes-models class of its apiVersion and kind. */
function validateManifest(text: string): Doc[] {
  const docs = parseAllDocuments(text).map((d) => {
    assert.deepEqual(d.errors, [], 'YAML');
    return d.toJS() as Doc;
  });
  const models: Record<string, new (data: never) => { validate(): void }> = {
    'v1/Namespace': Namespace,
    'v1/ServiceAccount': ServiceAccount,
    'apps/v1/DaemonSet': DaemonSet,
  };
  for (const doc of docs) {
    const Model = models[`${doc.apiVersion}/${doc.kind}`];
    assert.ok(Model, `no model for ${doc.apiVersion} ${doc.kind}`);
    new Model(doc as never).validate();
  }
  return docs;
}

/* eslint-disable @typescript-eslint/no-explicit-any -- the manifest as parsed, checked field by field */
test('the DaemonSet manifest validates against the Kubernetes API schema; mutated copies are rejected', () => {
  const text = readFileSync(MANIFEST, 'utf8');
  const docs = validateManifest(text);
  assert.deepEqual(
    docs.map((d) => d.kind),
    ['Namespace', 'ServiceAccount', 'DaemonSet'],
  );

  const ds = docs[2] as any;
  const pod = ds.spec.template.spec;
  const agent = pod.containers[0];
  assert.equal(pod.hostPID, true, 'hostPID: holders and network namespaces of the host');
  assert.equal(pod.automountServiceAccountToken, false, 'no API access');
  assert.deepEqual(agent.securityContext.capabilities, { drop: ['ALL'], add: ['BPF', 'PERFMON', 'SYS_PTRACE', 'SYS_ADMIN'] });
  assert.equal(agent.securityContext.privileged, false);
  assert.equal(agent.securityContext.allowPrivilegeEscalation, false);
  assert.equal(agent.securityContext.readOnlyRootFilesystem, true);
  const mounts = Object.fromEntries(agent.volumeMounts.map((m: any) => [m.mountPath, m]));
  const volumes = Object.fromEntries(pod.volumes.map((v: any) => [v.name, v]));
  for (const hostDir of ['/sys/kernel/btf', '/sys/kernel/tracing']) {
    assert.equal(mounts[hostDir]?.readOnly, true, `${hostDir} mounted read-only`);
    assert.equal(volumes[mounts[hostDir].name]?.hostPath?.path, hostDir);
  }
  assert.ok(volumes[mounts['/var/cache/sockleak'].name]?.emptyDir, 'a writable probe cache on a read-only root');

  // One port everywhere: the agent's --listen, the container port, the scrape annotation, the probe.
  const args: string[] = agent.args;
  const port = Number(/:(\d+)$/.exec(args[args.indexOf('--listen') + 1]!)?.[1]);
  assert.equal(args[0], 'agent');
  assert.equal(agent.ports[0].containerPort, port);
  const annotations = ds.spec.template.metadata.annotations;
  assert.equal(annotations['prometheus.io/scrape'], 'true');
  assert.equal(Number(annotations['prometheus.io/port']), port);
  assert.equal(annotations['prometheus.io/scheme'], 'https', 'beyond loopback: TLS');
  assert.equal(agent.livenessProbe.httpGet.path, '/healthz');
  assert.equal(agent.livenessProbe.httpGet.port, agent.ports[0].name);
  const webConfig = args[args.indexOf('--web.config.file') + 1]!;
  assert.equal(volumes[mounts[path.dirname(webConfig)].name]?.secret?.secretName, 'sockleak-web-config');
  assert.equal(agent.image, `sockleak:${pkg.version}`, 'the image of this version');

  // The schema check can fail: wrong types and a missing required field are refused.
  const mutations: Array<[string, string, RegExp]> = [
    ['hostPID: true', 'hostPID: "yes"', /hostPID must be boolean/],
    ['containerPort: 9466', 'containerPort: "9466"', /containerPort must be integer/],
    ['readOnlyRootFilesystem: true', 'readOnlyRootFilesystem: 1', /readOnlyRootFilesystem must be boolean/],
    ['        - name: agent\n', '        - nam: agent\n', /must have required property '?name'?/],
  ];
  for (const [from, to, want] of mutations) {
    assert.ok(text.includes(from), from);
    assert.throws(() => validateManifest(text.replace(from, to)), want, `${to} must be refused`);
  }
});
/* eslint-enable @typescript-eslint/no-explicit-any */

test("the DaemonSet's capabilities, for real: root with only those sees every namespace and says nothing is lost", async () => {
  const text = readFileSync(MANIFEST, 'utf8');
  const added: string[] = (validateManifest(text)[2] as any).spec.template.spec.containers[0].securityContext.capabilities.add; // eslint-disable-line @typescript-eslint/no-explicit-any
  const caps = added.map((c) => `+${c.toLowerCase()}`).join(',');
  // A leak in a network namespace of its own, as in a pod.
  const leaker = spawn('unshare', ['-n', 'python3', '-c', LEAK_PY], { stdio: ['ignore', 'pipe', 'inherit'] });
  cleanups.push(() => leaker.exitCode === null && leaker.kill('SIGKILL'));
  const netns = await new Promise<string>((resolve) => leaker.stdout.once('data', (d: Buffer) => resolve(d.toString().trim())));
  const child = spawn('setpriv', [`--inh-caps=-all,${caps}`, `--bounding-set=-all,${caps}`, '--no-new-privs', process.execPath, CLI, 'agent', '--listen', '127.0.0.1:0', '--threshold', '1s', '--interval', '1s'], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, SOCKLEAK_CACHE_DIR: mkdtempSync(path.join(dir, 'cache-')) },
  });
  cleanups.push(() => child.exitCode === null && child.kill('SIGKILL'));
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  await waitFor(() => /agent on http:\/\//.test(stderr) || child.exitCode !== null, 30_000, 'agent start');
  const base = /agent on (http:\/\/[^ ]+) /.exec(stderr)?.[1];
  assert.ok(base, stderr);
  const want = new RegExp(`^sockleak_sockets\\{state="CLOSE_WAIT",netns="${netns}"\\} 1$`, 'm');
  let metrics = '';
  for (const deadline = Date.now() + 20_000; !want.test(metrics) && Date.now() < deadline; await sleep(250)) {
    metrics = await fetchText(`${base}/metrics`);
  }
  child.kill('SIGTERM');
  assert.match(metrics, want, `the pod-like namespace's sockets are counted; stderr: ${stderr}`);
  assert.doesNotMatch(stderr, /without CAP_|bpf refused|setns refused/);
});

/** Makes one CLOSE_WAIT socket in its own network namespace, prints that namespace's inode, and holds it. */
const LEAK_PY = `
import os, socket, subprocess, time
subprocess.run(['ip', 'link', 'set', 'lo', 'up'], check=True)
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)
c = socket.create_connection(s.getsockname())
a, _ = s.accept(); a.close(); s.close()
print(os.stat('/proc/self/ns/net').st_ino, flush=True)
time.sleep(600)
`;

test('the Dockerfile installs the packed tarball of this version and the runtime packages docs/deploy.md names', () => {
  const text = readFileSync(DOCKERFILE, 'utf8').replace(/\\\n/g, ' ');
  const instructions = text
    .split('\n')
    .filter((l) => l.trim() && !l.trimStart().startsWith('#'))
    .map((l) => {
      const m = /^([A-Z]+)\s+(.*)$/.exec(l.trim());
      assert.ok(m, `not an instruction: ${l}`);
      return [m[1]!, m[2]!] as const;
    });
  const known = new Set(['FROM', 'ARG', 'RUN', 'COPY', 'ENV', 'EXPOSE', 'ENTRYPOINT', 'CMD', 'USER', 'WORKDIR', 'LABEL']);
  for (const [op] of instructions) assert.ok(known.has(op), `unknown instruction ${op}`);
  const one = (op: string): string => {
    const found = instructions.filter(([o]) => o === op);
    assert.equal(found.length, 1, `${op} once`);
    return found[0]![1];
  };

  const from = /^node:(\d+)-bookworm-slim$/.exec(one('FROM'));
  assert.ok(from, 'node on Debian 12, as the tests run');
  assert.ok(Number(from[1]) >= Number(/\d+/.exec(pkg.engines.node)?.[0]), `node ${from[1]} satisfies engines ${pkg.engines.node}`);
  assert.equal(one('ARG'), `SOCKLEAK_VERSION=${pkg.version}`, 'the version npm pack names the tarball with');
  assert.match(one('COPY'), /^sockleak-\$\{SOCKLEAK_VERSION\}\.tgz \/tmp\/$/);
  const runs = instructions.filter(([o]) => o === 'RUN').map(([, r]) => r);
  assert.ok(runs.some((r) => /npm install -g --omit=dev \/tmp\/sockleak-\$\{SOCKLEAK_VERSION\}\.tgz/.test(r)));

  const installed = /apt-get install -y --no-install-recommends ([a-z0-9 .+-]+?)\s*&&/.exec(runs.join('\n'))?.[1]?.split(/\s+/).sort();
  const documented = /^Runtime packages \(Debian\): `([^`]+)`/m.exec(readFileSync(DOCS, 'utf8'))?.[1]?.split(/\s+/).sort();
  assert.ok(documented, 'docs/deploy.md names the runtime packages');
  assert.deepEqual(installed, documented);

  assert.equal(one('ENTRYPOINT'), '["sockleak"]');
  assert.ok(Object.hasOwn((JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { bin: object }).bin, 'sockleak'));
  const cmd = JSON.parse(one('CMD')) as string[];
  assert.deepEqual(cmd.slice(0, 2), ['agent', '--listen']);
  assert.equal(cmd[2], `0.0.0.0:${one('EXPOSE')}`);
});
