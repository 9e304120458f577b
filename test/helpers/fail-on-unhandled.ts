/**
 * Import for its effect: records every unhandled rejection and uncaught exception in this test
 * process and fails the file in a root `after()` hook that lists them with their stacks. One that
 * arrives after that hook has run still fails the run, through the exit code.
 */
import { after } from 'node:test';
import { inspect } from 'node:util';

const problems: string[] = [];
let reported = false;

function record(problem: string): void {
  problems.push(problem);
  if (!reported) return;
  process.exitCode = 1;
  process.stderr.write(`after the last test, ${problem}\n`);
}

process.on('unhandledRejection', (reason) => record(`unhandled rejection: ${inspect(reason)}`));
// The monitor sees the exception without taking over Node's own handling of it.
process.on('uncaughtExceptionMonitor', (error, origin) => record(`${origin}: ${inspect(error)}`));

after(() => {
  reported = true;
  if (problems.length === 0) return;
  throw new Error(
    `${problems.length} unhandled rejection(s) or uncaught exception(s) in this file:\n${problems.join('\n')}`,
  );
});
