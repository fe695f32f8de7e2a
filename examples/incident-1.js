#!/usr/bin/env node
// Incident 1 in miniature ("CLOSE_WAIT that only a restart cured"), to try sockleak on.
//
// svc-a (this process) runs W worker threads. Each keeps its own map "ip:port -> connection" to
// every backend, made on first use and never pruned. The backends (svc-b, a child process) listen
// on 127.0.0.2, .3, ...: each a distinct address, like instances with their own IPs. A deletion
// closes one backend's connections and starts a replacement at a new address; svc-a's sockets to
// the deleted one get its FIN, enter CLOSE_WAIT and stay there, one per worker thread.
//
//   node examples/incident-1.js [--threads 8] [--backends 4] [--delete-every 10s] [--deletions N]
//
// Plain Node, no dependencies. Ctrl-C stops it, and the kernel frees its sockets: the restart.
'use strict';
const { fork } = require('node:child_process');
const { once } = require('node:events');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { setTimeout: sleep } = require('node:timers/promises');
const { parseArgs } = require('node:util');
const { Worker, isMainThread, parentPort } = require('node:worker_threads');

const USAGE = 'usage: node examples/incident-1.js [--threads W] [--backends N] [--delete-every DURATION] [--deletions COUNT]';

if (!isMainThread) workerThread();
else if (process.argv[2] === 'svc-b' && process.send) {
  backends(Number(process.argv[3])).catch((err) => {
    console.error(`incident-1: the backends cannot listen: ${err.message}`);
    process.exit(70);
  });
} else main();

/** One worker of svc-a: the vendor SDK's client, with the connect map that is never pruned. */
function workerThread() {
  const connectMap = new Map();
  parentPort.on('message', (list) => {
    for (const { host, port } of list) {
      const key = `${host}:${port}`;
      if (connectMap.has(key)) continue; // on first use only; a key is never deleted (the bug)
      // allowHalfOpen: like the SDK's raw epoll code, nothing closes the socket when the peer's FIN arrives.
      const socket = net.connect({ host, port, allowHalfOpen: true });
      let up = false;
      socket.once('connect', () => {
        up = true;
        parentPort.postMessage({ connected: key });
      });
      // A failed connect is the demo's failure (fd limit, say); later errors are the leak's business.
      socket.on('error', (err) => up || parentPort.postMessage({ failed: `connect to ${key}: ${err.code ?? err.message}` }));
      connectMap.set(key, socket);
    }
  });
}

/** svc-b and its name service: `count` backends; on "delete", the oldest goes and a new one comes. */
async function backends(count) {
  process.title = 'svc-b';
  process.on('SIGINT', () => {}); // Ctrl-C reaches the whole process group: svc-a stops us
  process.on('disconnect', () => process.exit(0));
  let next = 2; // 127.0.0.2 onwards
  const live = [];
  const start = async () => {
    const host = `127.${(next >> 16) & 255}.${(next >> 8) & 255}.${next++ & 255}`;
    const conns = new Set();
    const server = net.createServer((s) => {
      s.on('error', () => {});
      conns.add(s);
    });
    await new Promise((resolve, reject) => server.once('error', reject).listen(0, host, resolve));
    return { host, port: server.address().port, server, conns };
  };
  const publish = (deleted) => process.send({ backends: live.map(({ host, port }) => ({ host, port })), deleted });
  for (let i = 0; i < count; i++) live.push(await start());
  publish(null);
  process.on('message', async () => {
    const old = live.shift();
    live.push(await start());
    publish({ host: old.host, port: old.port }); // the name service first: svc-a stops using it...
    old.server.close();
    for (const s of old.conns) s.destroy(); // ...then the instance goes, closing its side
  });
}

function main() {
  let opts;
  try {
    const { values } = parseArgs({
      options: {
        threads: { type: 'string', default: '8' },
        backends: { type: 'string', default: '4' },
        'delete-every': { type: 'string' },
        deletions: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
    if (values.help) {
      console.log(USAGE);
      process.exit(0);
    }
    opts = {
      threads: count(values.threads, '--threads', 400),
      backends: count(values.backends, '--backends', 1000),
      everyMs: values['delete-every'] === undefined ? 2000 : duration(values['delete-every']),
      deletions: values.deletions !== undefined ? count(values.deletions, '--deletions', 1e6) : values['delete-every'] ? Infinity : 1,
    };
  } catch (err) {
    console.error(`incident-1: ${err.message} (--help for usage)`);
    process.exit(64);
  }
  process.title = 'svc-a';
  const fleet = fork(__filename, ['svc-b', String(opts.backends)], { stdio: 'inherit' });
  const fail = (why) => {
    fleet.removeAllListeners('exit');
    fleet.kill();
    console.error(`incident-1: ${why}`);
    process.exit(70);
  };
  // 70: svc-b said why on stderr.
  fleet.on('exit', (code, signal) => (code === 70 ? process.exit(70) : fail(`the backends process ended (${signal ?? code})`)));
  let deleted = 0;
  const stop = () => {
    fleet.removeAllListeners('exit');
    fleet.kill();
    console.log(`svc-a pid ${process.pid}: stopped; the kernel frees its ${opts.threads * deleted} CLOSE_WAIT sockets (the restart that "cured" incident 1)`);
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);

  // Every thread connects once to each backend announced; `settled` waits until all have, so that
  // a deletion leaves exactly one CLOSE_WAIT socket per thread.
  const workers = Array.from({ length: opts.threads }, () => new Worker(__filename));
  let [expected, connected, onSettled] = [0, 0, null];
  const settled = () => new Promise((resolve) => (connected === expected ? resolve() : (onSettled = resolve)));
  for (const w of workers) {
    w.on('error', (err) => fail(`a worker thread failed: ${err.message}`));
    w.on('message', (msg) => {
      if (msg.failed) fail(msg.failed);
      if (++connected === expected) onSettled?.();
    });
  }
  const announce = async (fleetMessage) => {
    const [{ backends, deleted: gone }] = await fleetMessage;
    expected += opts.threads * (gone ? 1 : backends.length);
    for (const w of workers) w.postMessage(backends);
    await settled();
    return { backends, gone };
  };

  (async () => {
    const { backends } = await announce(once(fleet, 'message'));
    const span = `${backends[0].host}-${backends.at(-1).host.split('.').pop()}`;
    const when = opts.deletions > 1 ? `every ${opts.everyMs / 1000}s` : `once, in ${opts.everyMs / 1000}s`;
    const sl = sockleakCommand();
    console.log(
      `svc-a pid ${process.pid}: ${opts.threads} worker threads, each connected to ${opts.backends} backends (${span}); ` +
        `deleting one backend ${when}. Next, as root: ${sl} snapshot, or ${sl} watch --pid ${process.pid} --threshold 2s`,
    );
    while (deleted < opts.deletions) {
      await sleep(opts.everyMs);
      fleet.send('delete');
      const { gone } = await announce(once(fleet, 'message'));
      console.log(
        `${new Date().toISOString().slice(11, 19)} deleted backend ${gone.host}:${gone.port}: ${opts.threads} more CLOSE_WAIT in pid ${process.pid}, ` +
          `one per thread (${opts.threads * ++deleted} in all)`,
      );
    }
  })();
}

function count(text, flag, max) {
  if (!/^[1-9]\d*$/.test(text) || Number(text) > max) throw new Error(`${flag} must be a whole number from 1 to ${max}, got '${text}'`);
  return Number(text);
}

function duration(text) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text);
  const ms = m && Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? 's'];
  if (!ms || ms < 100) throw new Error(`--delete-every must be a duration such as 10s, 500ms or 1m (100ms at least), got '${text}'`);
  return ms;
}

/** How the reader runs sockleak: `sockleak` if it is on PATH, else this clone's bin/sockleak.js. */
function sockleakCommand() {
  const onPath = (process.env.PATH ?? '').split(':').some((dir) => dir && fs.existsSync(path.join(dir, 'sockleak')));
  const clone = path.join(__dirname, '..', 'bin', 'sockleak.js');
  return onPath || !fs.existsSync(clone) ? 'sockleak' : path.relative(process.cwd(), clone) || clone;
}
