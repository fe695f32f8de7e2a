#!/usr/bin/env node
'use strict';
// Plain `env node`: busybox's and Alpine's env have no -S, and a V8 flag on
// this line would fail every command once a Node release drops it
// (docs/install.md says what the flags it once had were worth).
require('../dist/src/cli/main')
  .main(process.argv.slice(2))
  .then((code) => {
    process.exitCode = code;
  });
