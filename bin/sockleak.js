#!/usr/bin/env -S node --max-semi-space-size=4
'use strict';
// A young generation of at most 4 MiB (V8's default grows it to 16): scans
// keep what they decode, so a bigger nursery only copies more, and it was
// ~30 MB of a 100k-socket snapshot's peak RSS for no speed-up (docs/benchmarks.md).
require('../dist/src/cli/main').run();
