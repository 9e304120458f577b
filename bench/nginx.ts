/**
 * nginx as a connection-rate target for the `external` workload: one process (no master, no
 * workers to find), answering every request with a few bytes and closing the connection after
 * it, as a web server without keep-alive does. Its configuration and logs live in a temporary
 * directory that `close()` removes.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { processCpuMicros } from './proc-stat.js';

const START_DEADLINE_MS = 5_000;
/** How long nginx may take to stop after SIGQUIT before it is killed. */
const CLOSE_DEADLINE_MS = 5_000;

/** A free loopback port: bound by the kernel's choice, then released for nginx to take. */
async function freePort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  server.close();
  await once(server, 'close');
  return port;
}

function configuration(dir: string, port: number): string {
  const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']
    .map((kind) => `  ${kind}_temp_path ${join(dir, kind)};`)
    .join('\n');
  return `master_process off;
daemon off;
worker_processes 1;
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'error.log')} warn;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_timeout 0;
${temp}
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location / { return 200 "postern bench\\n"; }
  }
}
`;
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

export class Nginx {
  readonly port: number;
  #child: ChildProcess;
  #dir: string;
  #exited: Promise<unknown>;
  /**
   * nginx has no IPC channel that would tell it the benchmark ended, so a benchmark that exits
   * without closing it (an exception, a signal run.ts turns into an exit) kills it on the way,
   * and removes its directory.
   */
  #killOnExit = () => {
    this.#child.kill('SIGKILL');
    rmSync(this.#dir, { recursive: true, force: true });
  };

  private constructor(port: number, child: ChildProcess, dir: string) {
    this.port = port;
    this.#child = child;
    this.#dir = dir;
    // Only 'exit': 'error' also reports a failed kill, when nginx still runs. A child that could
    // not be spawned has no pid and is never waited for.
    this.#exited = new Promise((resolve) => child.once('exit', resolve));
    process.once('exit', this.#killOnExit);
  }

  /** Starts nginx (from PATH) and resolves once it accepts connections. */
  static async start(): Promise<Nginx> {
    const dir = mkdtempSync(join(tmpdir(), 'postern-bench-nginx-'));
    const port = await freePort();
    const config = join(dir, 'nginx.conf');
    writeFileSync(config, configuration(dir, port));
    const child = spawn('nginx', ['-p', dir, '-c', config, '-e', join(dir, 'error.log')], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const nginx = new Nginx(port, child, dir);
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    let failure: Error | undefined;
    let started = false;
    // 'on', not 'once': a failed kill in close() emits 'error' too, after a spawn failure or
    // once nginx runs; then it is reported, not thrown from an event with no listener.
    child.on('error', (error) => {
      if (started) process.stderr.write(`nginx: ${error.message}\n`);
      else failure ??= error;
    });
    child.once('exit', (code) => {
      failure ??= new Error(`nginx exited with ${code}: ${stderr.trim() || nginx.#errorLog()}`);
    });
    const deadline = performance.now() + START_DEADLINE_MS;
    // nginx says nothing when it is ready: poll until it accepts, fails, or the deadline passes.
    while (!(await accepts(port))) {
      if (failure || performance.now() > deadline) {
        await nginx.close();
        throw (
          failure ??
          new Error(`nginx did not accept on port ${port} within ${START_DEADLINE_MS} ms`)
        );
      }
      await sleep(20);
    }
    started = true;
    return nginx;
  }

  /** CPU time nginx has used so far, in microseconds (Linux: /proc, 100 ticks a second). */
  cpuMicros(): number | undefined {
    return this.#child.pid === undefined ? undefined : processCpuMicros(this.#child.pid);
  }

  async close(): Promise<void> {
    if (
      this.#child.pid !== undefined &&
      this.#child.exitCode === null &&
      this.#child.signalCode === null
    ) {
      this.#child.kill('SIGQUIT');
      const killer = setTimeout(() => this.#child.kill('SIGKILL'), CLOSE_DEADLINE_MS);
      await this.#exited;
      clearTimeout(killer);
    }
    process.off('exit', this.#killOnExit);
    rmSync(this.#dir, { recursive: true, force: true });
  }

  #errorLog(): string {
    const file = join(this.#dir, 'error.log');
    return existsSync(file) ? readFileSync(file, 'utf8').trim() : 'no error log';
  }
}
