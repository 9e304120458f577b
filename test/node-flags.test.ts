import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { POSTERN_NODE_FLAGS } from '../src/node-flags.js';

const run = promisify(execFile);
/** This file runs from dist/test; the built CLI and package.json are found from there. */
const builtCli = new URL('../src/cli.js', import.meta.url);
const packageJson = new URL('../../package.json', import.meta.url);

test('the built executable and npm start run Node with POSTERN_NODE_FLAGS', async () => {
  const flags = POSTERN_NODE_FLAGS.join(' ');
  const [shebang] = (await readFile(builtCli, 'utf8')).split('\n');
  assert.equal(shebang, `#!/usr/bin/env -S node ${flags}`);
  const { scripts } = JSON.parse(await readFile(packageJson, 'utf8')) as {
    scripts: Record<string, string>;
  };
  assert.ok(scripts.start?.includes(`node ${flags} dist/src/cli.js demo`), scripts.start);
});

test('this Node accepts every flag in POSTERN_NODE_FLAGS', async () => {
  // An unknown flag makes node exit with "bad option" (code 9), which rejects.
  const { stdout } = await run(process.execPath, [
    ...POSTERN_NODE_FLAGS,
    '-e',
    'process.stdout.write(JSON.stringify(process.execArgv))',
  ]);
  assert.deepEqual(
    (JSON.parse(stdout) as string[]).slice(0, POSTERN_NODE_FLAGS.length),
    POSTERN_NODE_FLAGS,
  );
});
