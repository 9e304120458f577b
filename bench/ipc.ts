/**
 * How the benchmark's processes talk. Each side (gateway, client, targets, load) is a Node
 * process of its own, forked with an IPC channel, so that its memory and CPU time can be read
 * alone and no load generator shares its event loop. A child announces itself once (`ready` or
 * `failed`), then answers numbered requests; `stats` and `close` are built in.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** One process's resource use, as `process.memoryUsage()` and `process.cpuUsage()` report it. */
export interface ProcessStats {
  /** Resident set size, bytes. */
  rss: number;
  heapUsed: number;
  /** CPU time since the process started, microseconds. */
  cpuUser: number;
  cpuSystem: number;
  /** Streams (gateway, client) or sockets (targets) open right now. */
  openStreams: number;
}

/** What a child serves besides `stats` and `close`. */
export interface ChildService<Ready> {
  ready: Ready;
  openStreams(): number;
  /** Named requests; each receives the request body as sent. */
  handlers?: Record<string, (body: unknown) => Promise<unknown>>;
  close(): Promise<void>;
}

interface Request {
  id: number;
  type: string;
  body: unknown;
}

type Reply = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: string };
type Announcement = { type: 'ready'; value: unknown } | { type: 'failed'; error: string };

/** Stats of the calling process; with `gc`, after a full collection when `--expose-gc` is on. */
export function ownStats(openStreams: number, gc = false): ProcessStats {
  if (gc) globalThis.gc?.();
  const memory = process.memoryUsage();
  const cpu = process.cpuUsage();
  return {
    rss: memory.rss,
    heapUsed: memory.heapUsed,
    cpuUser: cpu.user,
    cpuSystem: cpu.system,
    openStreams,
  };
}

function describe(error: unknown): string {
  return error instanceof Error ? (error.stack ?? error.message) : String(error);
}

/**
 * Runs a child's side of the protocol: starts the service, announces it, answers requests, and
 * closes it when asked or when the parent goes away.
 */
export async function serveParent<Ready>(start: () => Promise<ChildService<Ready>>): Promise<void> {
  const send = (message: Announcement | Reply) => process.send?.(message);
  let service: ChildService<Ready>;
  try {
    service = await start();
  } catch (error) {
    send({ type: 'failed', error: describe(error) });
    process.exitCode = 1;
    process.disconnect?.();
    return;
  }
  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= service.close();
    return closing;
  };
  const answer = async (request: Request): Promise<unknown> => {
    switch (request.type) {
      case 'stats':
        return ownStats(service.openStreams(), (request.body as { gc?: boolean }).gc === true);
      case 'close':
        return close();
      default: {
        const handler = service.handlers?.[request.type];
        if (!handler) throw new Error(`unknown request ${request.type}`);
        return handler(request.body);
      }
    }
  };
  process.on('message', (message: Request) => {
    answer(message).then(
      (value) => {
        send({ id: message.id, ok: true, value });
        // Leaving the channel lets the process exit by itself, which writes any --cpu-prof file.
        if (message.type === 'close') process.disconnect?.();
      },
      (error: unknown) => send({ id: message.id, ok: false, error: describe(error) }),
    );
  });
  process.once('disconnect', () => void close());
  send({ type: 'ready', value: service.ready });
}

/** How long a child may take to close before it is killed. */
const CLOSE_DEADLINE_MS = 15_000;

/** The parent's handle on one forked benchmark process. */
export class BenchProcess<Ready> {
  readonly name: string;
  readonly ready: Ready;
  #child: ChildProcess;
  #nextId = 1;
  #pending = new Map<number, { resolve(value: unknown): void; reject(error: Error): void }>();
  #exited: Promise<void>;
  #closing: Promise<void> | undefined;

  private constructor(name: string, child: ChildProcess, ready: Ready, exited: Promise<void>) {
    this.name = name;
    this.#child = child;
    this.ready = ready;
    this.#exited = exited;
    child.on('message', (message: Reply) => this.#settle(message));
    void exited.then(() => {
      for (const pending of this.#pending.values())
        pending.reject(new Error(`${name} exited with requests pending`));
      this.#pending.clear();
    });
  }

  /**
   * Forks `script` (a file next to this one in dist/bench) and resolves once it is ready.
   * `execArgv` adds Node flags, e.g. `--cpu-prof`.
   */
  static start<Ready>(
    name: string,
    script: string,
    options: { args?: string[]; execArgv?: string[] } = {},
  ): Promise<BenchProcess<Ready>> {
    const child = fork(fileURLToPath(new URL(script, import.meta.url)), options.args ?? [], {
      execArgv: ['--expose-gc', ...(options.execArgv ?? [])],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    return new Promise((resolve, reject) => {
      const onExit = (code: number | null) =>
        reject(new Error(`${name} exited (code ${code}) before it was ready`));
      child.once('exit', onExit);
      child.once('message', (message: Announcement) => {
        child.off('exit', onExit);
        if (message.type === 'ready') {
          resolve(new BenchProcess(name, child, message.value as Ready, exited));
          return;
        }
        reject(new Error(`${name} failed to start: ${message.error}`));
      });
    });
  }

  get pid(): number | undefined {
    return this.#child.pid;
  }

  /** Sends a named request and resolves with the child's answer. */
  request<T>(type: string, body: unknown = {}): Promise<T> {
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      if (!this.#child.connected) {
        reject(new Error(`${this.name} is not running`));
        return;
      }
      this.#pending.set(id, { resolve: resolve as (value: unknown) => void, reject });
      this.#child.send({ id, type, body } satisfies Request);
    });
  }

  /** The child's memory and CPU time; `gc` runs a full collection first. */
  stats(gc = false): Promise<ProcessStats> {
    return this.request<ProcessStats>('stats', { gc });
  }

  /** Asks the child to close and waits for it to exit; kills it if it takes too long. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      if (this.#child.connected) {
        await this.request('close').catch((error: unknown) => {
          process.stderr.write(`${this.name}: close failed: ${describe(error)}\n`);
        });
      }
      const deadline = setTimeout(() => this.#child.kill('SIGKILL'), CLOSE_DEADLINE_MS);
      await this.#exited;
      clearTimeout(deadline);
    })();
    return this.#closing;
  }

  #settle(reply: Reply): void {
    const pending = this.#pending.get(reply.id);
    if (!pending) return;
    this.#pending.delete(reply.id);
    if (reply.ok) pending.resolve(reply.value);
    else pending.reject(new Error(`${this.name}: ${reply.error}`));
  }
}
