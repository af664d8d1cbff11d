#!/usr/bin/env node
import { run } from '../cli/program.js';

const code = await run(process.argv.slice(2), {
  stdout: (s) => process.stdout.write(s),
  stderr: (s) => process.stderr.write(s),
});
// Exit as soon as the output is flushed: a stray gRPC handle must not keep the CLI alive.
process.stdout.write('', () => process.exit(code));
