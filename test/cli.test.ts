import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { POSTERN_NODE_FLAGS } from '../src/node-flags.js';

const run = promisify(execFile);
const cli = fileURLToPath(new URL('../src/cli.js', import.meta.url));

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

async function postern(...args: string[]): Promise<Outcome> {
  try {
    const { stdout, stderr } = await run(process.execPath, [cli, ...args], { timeout: 20_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const failure = err as { code: number; stdout: string; stderr: string };
    return { code: failure.code, stdout: failure.stdout, stderr: failure.stderr };
  }
}

async function withFile(text: string, body: (file: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'postern-cli-'));
  try {
    const file = join(dir, 'postern.yaml');
    await writeFile(file, text);
    await body(file);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Resolves with the child's exit code. */
function exited(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

describe('command line', () => {
  it('prints its version', async () => {
    const { code, stdout } = await postern('--version');
    assert.equal(code, 0);
    assert.match(stdout, /^\d+\.\d+\.\d+\n$/);
  });

  it('check-config accepts a valid file with a one-line summary', async () => {
    const yaml = [
      'gateway:',
      '  listen_addr: ":8443"',
      '  proxy:',
      '    socks5:',
      '      listen_addr: 127.0.0.1:1080',
      'client:',
      '  id: office-1',
      '  group_id: office',
      '  group_password: secret',
      '  gateway:',
      '    addr: gw.example.com:8443',
      '',
    ].join('\n');
    await withFile(yaml, async (file) => {
      const { code, stdout } = await postern('check-config', file);
      assert.equal(code, 0);
      assert.equal(stdout.trim().split('\n').length, 1);
      assert.match(stdout, /^ok: gateway on :8443 \(socks5 127\.0\.0\.1:1080\), client "office-1"/);
    });
  });

  it('check-config reports every problem, each naming its key, and exits 1', async () => {
    const yaml = [
      'gateway:',
      '  listen_adr: ":8443"',
      '  heartbeat:',
      '    interval: soon',
      'client:',
      '  group_id: office',
      '  gateway:',
      '    addr: ws://gw.example.com:8443',
      '',
    ].join('\n');
    await withFile(yaml, async (file) => {
      const { code, stderr } = await postern('check-config', file);
      assert.equal(code, 1);
      for (const key of [
        'gateway.listen_adr',
        'gateway.heartbeat.interval',
        'client.group_password',
        'client.gateway.addr',
      ]) {
        assert.ok(stderr.includes(key), `${key} is named in:\n${stderr}`);
      }
    });
  });

  it('the demo prints curl lines that work as printed and exits 0 on SIGINT', async (t) => {
    const child = spawn(
      process.execPath,
      [...POSTERN_NODE_FLAGS, cli, 'demo', '--log-level', 'warn'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    const exit = exited(child);
    t.after(async () => {
      if (child.exitCode === null) child.kill('SIGKILL');
      await exit;
    });
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const curlLines = await new Promise<string[]>((resolve, reject) => {
      child.stdout.on('data', (chunk: Buffer) => {
        stdout += chunk.toString();
        const lines = stdout.split('\n').filter((line) => line.trim().startsWith('curl '));
        if (lines.length === 3 && stdout.includes('Ctrl-C'))
          resolve(lines.map((line) => line.trim()));
      });
      child.once('exit', () => reject(new Error(`demo exited early:\n${stderr}`)));
    });
    for (const line of curlLines) {
      const [command, ...args] = line.split(' ');
      assert.equal(command, 'curl');
      const { stdout: body } = await run('curl', [
        '--silent',
        '--show-error',
        '--max-time',
        '10',
        ...args,
      ]);
      assert.match(body, /^Hello from behind the tunnel! You asked for GET \//);
    }
    child.kill('SIGINT');
    assert.equal(await exit, 0, stderr);
  });
});
