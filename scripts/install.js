'use strict';
/**
 * npm's install step (package.json "install"), in a checkout and in the
 * published package alike.
 *
 * A checkout has the BPF sources: it builds the BPF objects and the addon from
 * them, as it always has (scripts/setup.sh relies on it). The package has no
 * BPF sources but a prebuilt addon with the CO-RE objects embedded: it loads
 * that addon the way sockleak does (src/kernel/addon.ts, with `bindings`) and is done.
 * Only where it does not load for another reason than a missing runtime
 * library (an older glibc or libstdc++, say) is the addon compiled again,
 * from the skeleton headers the package ships: that needs a C++ toolchain and
 * libbpf-dev, never clang or bpftool.
 *
 * Exit codes: the build's own when a build fails; 72 (EX_OSFILE) when a runtime
 * library is missing, 69 when the compile it needs has no toolchain, each after
 * one line naming the packages to install.
 */
const { spawnSync } = require('node:child_process');
const { existsSync } = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');

/** Runs a build step in the package root; exits with its status if it fails. */
function step(command, args) {
  const r = spawnSync(command, args, { cwd: root, stdio: 'inherit' });
  if (r.error) {
    process.stderr.write(`sockleak install: cannot run ${command}: ${r.error.message}\n`);
    process.exit(69);
  }
  if (r.status !== 0) process.exit(r.status ?? 70);
}

/**
 * node-gyp as npm hands it to install scripts (npm_config_node_gyp), else the
 * one npm bundles beside this node (the script run by hand), else from PATH.
 */
function nodeGyp(args) {
  const bundled = path.resolve(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
  const script = process.env.npm_config_node_gyp || (existsSync(bundled) ? bundled : undefined);
  if (script) step(process.execPath, [script, ...args]);
  else step('node-gyp', args);
}

function onPath(tool) {
  return (process.env.PATH ?? '').split(':').some((dir) => dir && existsSync(path.join(dir, tool)));
}

/**
 * Loads the addon in a fresh node, through dist/src/kernel/addon.js: the same loader,
 * the same checks and the same one-line errors as the sockleak command.
 * Returns undefined when it loads, else { code, message }.
 */
function tryLoad() {
  const probe =
    "try { require('./dist/src/kernel/addon').loadAddon() } catch (e) {" +
    " process.stderr.write(String(e.message).split('\\n')[0] + '\\n'); process.exit(e.exitCode || 70) }";
  const r = spawnSync(process.execPath, ['-e', probe], { cwd: root, encoding: 'utf8' });
  if (r.status === 0) return undefined;
  return { code: r.status ?? 70, message: (r.stderr || r.error?.message || '').trim() };
}

if (existsSync(path.join(root, 'bpf', 'trace.bpf.c'))) {
  step('bash', ['scripts/build-bpf.sh']);
  nodeGyp(['rebuild']);
  process.exit(0);
}

const failure = tryLoad();
if (!failure) process.exit(0);
// A missing runtime library: a compiler would not help, the packages named would.
if (failure.code === 72) {
  process.stderr.write(`sockleak install: ${failure.message}\n`);
  process.exit(72);
}
// The loader's own words, without the advice meant for the command's users.
const why = /not loadable \((.*)\); /.exec(failure.message)?.[1] ?? failure.message;
const missing = [
  ...['c++', 'make', 'python3'].filter((tool) => !onPath(tool)),
  ...(existsSync('/usr/include/bpf/libbpf.h') ? [] : ['libbpf-dev']),
];
if (missing.length) {
  process.stderr.write(
    `sockleak install: the prebuilt addon does not load here (${why}) and compiling it needs ${missing.join(', ')} ` +
      '(Debian/Ubuntu: apt-get install g++ make python3 libbpf-dev; not clang or bpftool)\n',
  );
  process.exit(69);
}
process.stderr.write(`sockleak install: the prebuilt addon does not load here (${why}); compiling it\n`);
nodeGyp(['rebuild']);
const again = tryLoad();
if (again) {
  process.stderr.write(`sockleak install: the rebuilt addon does not load either: ${again.message}\n`);
  process.exit(again.code);
}
