#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS SOCKLEAK_NODE_EXTRA_CA_CERTS=${NODE_EXTRA_CA_CERTS} node --max-semi-space-size=4 --interrupt-budget=270336
'use strict';
// Node 20 reads and parses NODE_EXTRA_CA_CERTS, and its own ~140 root
// certificates with it, before any JavaScript runs: 35-50 ms of start-up here,
// a third of what ss takes for 10k sockets, for a process that never speaks
// TLS. So the #! line starts node without it and hands its value over under
// another name; run() puts it back for the commands sockleak starts.
//
// A young generation of at most 4 MiB (V8's default grows it to 16): scans
// keep what they decode, so a bigger nursery only copies more, and it was
// ~30 MB of a 100k-socket snapshot's peak RSS for no speed-up (docs/benchmarks.md).
//
// 4x V8's default interrupt budget (67584): functions are optimised after 4x
// the work. A one-shot `snapshot` of 10k sockets had TurboFan compile 28
// functions on a helper thread, 60-90 ms of CPU (most of them start-up code
// run a few hundred times, done before their code was), where 10 take ~20 ms
// now; the wall time is the same, and on a busy machine that CPU is what ss
// does not spend. Long-running commands optimise their hot loops all the same.
require('../dist/src/cli/main').run();
