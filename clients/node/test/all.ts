// `npm test`: every test file in one process, the files side by side (most of their time is waiting
// for timers, sockets and child processes), each file's own tests in order.

import fs from 'node:fs';
import path from 'node:path';
import { describe } from 'node:test';

describe('@o4o/pulse-client', { concurrency: true }, () => {
  for (const file of fs.readdirSync(__dirname).filter((f) => f.endsWith('.test.js')).sort()) {
    describe(file.replace(/\.test\.js$/, ''), { concurrency: 1 }, () => {
      require(path.join(__dirname, file));
    });
  }
});
