// Runs call sequences through pando/web/lender.js for test/test_lender_js.py.
// One sequence a line on stdin: {"maxLosses", "holders", "calls": [[op, ...args], ...]};
// one line back: after each call, what it returned and what the lender shows.
import { createInterface } from 'node:readline';

import { Lender } from '../pando/web/lender.js';

const sorted = (ids) => [...ids].sort((a, b) => a - b);

function call(lender, [op, ...args]) {
  switch (op) {
    case 'add': return lender.add(args[0]) ?? null;
    case 'join':
      try {
        lender.join(args[0], args[1], { ...(args[2] === null ? {} : { name: args[2] }), workers: args[3] ?? null });
        return null;
      } catch {
        return 'error';
      }
    case 'leave': return lender.leave(args[0], { blameItems: args[1] });
    case 'resize': return lender.resize(args[0], args[1], args[2] ?? null) ?? null;
    case 'clear': return lender.clear() ?? null;
    case 'assign': return lender.assign();
    case 'complete': return lender.complete(args[0], args[1]);
    case 'fail': return lender.fail(args[0], args[1], args[2]);
    case 'lost': return lender.lost(args[0], args[1], args[2]);
    default: throw new Error(`unknown call ${op}`);
  }
}

function run({ maxLosses, holders, calls }) {
  const lender = new Lender({ maxLosses });
  return calls.map((args) => ({
    result: call(lender, args),
    pending: lender.pending(),
    counts: lender.counts(),
    held: Array.from({ length: holders }, (_, holder) => sorted(lender.held(holder))),
  }));
}

for await (const line of createInterface({ input: process.stdin })) {
  process.stdout.write(`${JSON.stringify(run(JSON.parse(line)))}\n`);
}
