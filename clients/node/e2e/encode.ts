// The TypeScript encoder for tests/e2e/test_node_client.py: each input line is a JSON list of
// [type, document] pairs; each output line is the Emitter's envelope of them (encodeEvent +
// encodeEnvelope, `ts` filled in at E2E_NOW) or the reason the Emitter would drop one.

import readline from 'node:readline';
import { encodeEnvelope, encodeEvent } from '../src';

const now = Number(process.env['E2E_NOW'] ?? Date.now());
const lines = readline.createInterface({ input: process.stdin });
lines.on('line', (line) => {
  const pairs = JSON.parse(line) as [string, unknown][];
  const parts: string[] = [];
  const dropped: number[] = [];
  pairs.forEach(([, doc], i) => {
    try {
      parts.push(encodeEvent(doc, now));
    } catch {
      dropped.push(i);
    }
  });
  process.stdout.write(`${JSON.stringify({ envelope: encodeEnvelope(parts), dropped })}\n`);
});
