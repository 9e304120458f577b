/**
 * The processes of one benchmark: gateway and client under test, two target processes (bulk
 * source/sink and echo, so a saturating transfer and an interactive exchange do not share a
 * target event loop), a second load generator, and two bare relays: the two ends of a TLS relay
 * (a second baseline for bulk) and a SOCKS5 relay (one for connection rates). The parent process
 * is the main generator.
 */
import { cpus } from 'node:os';
import { POSTERN_NODE_FLAGS } from '../src/node-flags.js';
import type { ClientReady } from './client-process.js';
import { benchProxy, type DoorSpec, type GatewayReady, proxiedDoors } from './doors.js';
import { BenchProcess, ownStats, type ProcessStats } from './ipc.js';
import type { Socks5RelayReady } from './socks5-relay-process.js';
import type { TargetReady } from './target-process.js';
import type { TlsPipeReady } from './tls-pipe-process.js';

export type ProcessName =
  | 'generator'
  | 'gateway'
  | 'client'
  | 'bulk target'
  | 'echo target'
  | 'load'
  | 'socks5 relay';

export interface SystemOptions {
  /** When set, gateway and client run with `--cpu-prof` and write their profiles here. */
  cpuProfileDir?: string | undefined;
}

/** Resource use of every benchmark process, and of the whole machine, at one moment. */
export interface Snapshot {
  at: number;
  stats: Map<ProcessName, ProcessStats>;
  /** CPU time of all cores since boot, total and idle, milliseconds. */
  machine: { total: number; idle: number };
}

function machineTimes(): { total: number; idle: number } {
  let total = 0;
  let idle = 0;
  for (const { times } of cpus()) {
    total += times.user + times.nice + times.sys + times.idle + times.irq;
    idle += times.idle;
  }
  return { total, idle };
}

export class BenchSystem {
  readonly bulkTarget: BenchProcess<TargetReady>;
  readonly echoTarget: BenchProcess<TargetReady>;
  readonly load: BenchProcess<unknown>;
  /** The bare TLS pipe's two ends; `tlsPipe` is the door into it. */
  readonly tlsPipeEnds: [BenchProcess<TlsPipeReady>, BenchProcess<TlsPipeReady>];
  /** The bare SOCKS5 relay; `socks5Relay` is the door into it. */
  readonly socks5RelayProcess: BenchProcess<Socks5RelayReady>;
  #gateway: BenchProcess<GatewayReady>;
  #client: BenchProcess<ClientReady>;
  #options: SystemOptions;

  private constructor(
    parts: {
      bulkTarget: BenchProcess<TargetReady>;
      echoTarget: BenchProcess<TargetReady>;
      load: BenchProcess<unknown>;
      tlsPipeEnds: [BenchProcess<TlsPipeReady>, BenchProcess<TlsPipeReady>];
      socks5RelayProcess: BenchProcess<Socks5RelayReady>;
      gateway: BenchProcess<GatewayReady>;
      client: BenchProcess<ClientReady>;
    },
    options: SystemOptions,
  ) {
    this.tlsPipeEnds = parts.tlsPipeEnds;
    this.socks5RelayProcess = parts.socks5RelayProcess;
    this.bulkTarget = parts.bulkTarget;
    this.echoTarget = parts.echoTarget;
    this.load = parts.load;
    this.#gateway = parts.gateway;
    this.#client = parts.client;
    this.#options = options;
  }

  static async start(options: SystemOptions): Promise<BenchSystem> {
    const started: BenchProcess<unknown>[] = [];
    const track = async <Ready>(starting: Promise<BenchProcess<Ready>>) => {
      const child = await starting;
      started.push(child as BenchProcess<unknown>);
      return child;
    };
    try {
      const [bulkTarget, echoTarget, load] = await Promise.all([
        track(BenchProcess.start<TargetReady>('bulk target', './target-process.js')),
        track(BenchProcess.start<TargetReady>('echo target', './target-process.js')),
        track(BenchProcess.start<unknown>('load', './load-process.js')),
      ]);
      const far = await track(
        BenchProcess.start<TlsPipeReady>('tls pipe far', './tls-pipe-process.js', {
          args: ['far'],
          execArgv: [...POSTERN_NODE_FLAGS],
        }),
      );
      const near = await track(
        BenchProcess.start<TlsPipeReady>('tls pipe near', './tls-pipe-process.js', {
          args: ['near', String(far.ready.port), far.ready.cert],
          execArgv: [...POSTERN_NODE_FLAGS],
        }),
      );
      const socks5RelayProcess = await track(
        BenchProcess.start<Socks5RelayReady>('socks5 relay', './socks5-relay-process.js', {
          execArgv: [...POSTERN_NODE_FLAGS],
        }),
      );
      const { gateway, client } = await startTunnel(options);
      return new BenchSystem(
        {
          bulkTarget,
          echoTarget,
          load,
          tlsPipeEnds: [near, far],
          socks5RelayProcess,
          gateway,
          client,
        },
        options,
      );
    } catch (error) {
      await Promise.all(started.map((child) => child.close()));
      throw error;
    }
  }

  get gateway(): BenchProcess<GatewayReady> {
    return this.#gateway;
  }

  get client(): BenchProcess<ClientReady> {
    return this.#client;
  }

  /** The front doors to measure against the direct baseline. */
  get doors(): DoorSpec[] {
    return proxiedDoors(this.#gateway.ready);
  }

  /** The way into the bare TLS pipe. */
  get tlsPipe(): DoorSpec {
    return { kind: 'tls-pipe', port: this.tlsPipeEnds[0].ready.port };
  }

  /** The way into the bare SOCKS5 relay. */
  get socks5Relay(): DoorSpec {
    return { kind: 'socks5-relay', proxy: benchProxy(this.socks5RelayProcess.ready.port) };
  }

  /**
   * A further gateway and client, started as the system's own are, for a workload that needs a
   * tunnel of its own. `route` may put something between them: it gets what the gateway
   * announced and returns what the client is told to dial. The caller closes both.
   */
  startTunnel(route?: ClientRoute): Promise<Tunnel> {
    return startTunnel(this.#options, route);
  }

  /** Replaces gateway and client with fresh processes (for memory figures that start clean). */
  async restartTunnel(): Promise<void> {
    await this.#client.close();
    await this.#gateway.close();
    const { gateway, client } = await startTunnel(this.#options);
    this.#gateway = gateway;
    this.#client = client;
  }

  /** Waits until gateway, client, targets and relays hold no streams from earlier work. */
  async idle(): Promise<void> {
    await Promise.all([
      this.#gateway.request('idle'),
      this.#client.request('idle'),
      this.bulkTarget.request('idle'),
      this.echoTarget.request('idle'),
      ...this.tlsPipeEnds.map((end) => end.request('idle')),
      this.socks5RelayProcess.request('idle'),
    ]);
  }

  async snapshot(gc = false): Promise<Snapshot> {
    const named: [ProcessName, BenchProcess<unknown>][] = [
      ['gateway', this.#gateway],
      ['client', this.#client],
      ['bulk target', this.bulkTarget],
      ['echo target', this.echoTarget],
      ['load', this.load],
      ['socks5 relay', this.socks5RelayProcess],
    ];
    const stats = await Promise.all(named.map(([, child]) => child.stats(gc)));
    const byName = new Map<ProcessName, ProcessStats>(
      named.map(([name], index) => [name, stats[index]!]),
    );
    byName.set('generator', ownStats(0));
    return { at: performance.now(), stats: byName, machine: machineTimes() };
  }

  async close(): Promise<void> {
    await this.#client.close();
    await this.#gateway.close();
    await Promise.all([
      this.bulkTarget.close(),
      this.echoTarget.close(),
      this.load.close(),
      ...this.tlsPipeEnds.map((end) => end.close()),
      this.socks5RelayProcess.close(),
    ]);
  }
}

/**
 * Node flags for gateway or client `name`: those the `postern` executable runs with, and, when
 * asked, those that make it write a CPU profile into the configured directory.
 */
function nodeFlags(options: SystemOptions, name: string): string[] {
  if (!options.cpuProfileDir) return [...POSTERN_NODE_FLAGS];
  return [
    ...POSTERN_NODE_FLAGS,
    '--cpu-prof',
    `--cpu-prof-dir=${options.cpuProfileDir}`,
    `--cpu-prof-name=${name}-${Date.now()}.cpuprofile`,
  ];
}

/** What the client of a tunnel dials, given what its gateway announced. */
export type ClientRoute = (gateway: GatewayReady) => Promise<GatewayReady>;

export interface Tunnel {
  gateway: BenchProcess<GatewayReady>;
  client: BenchProcess<ClientReady>;
}

async function startTunnel(
  options: SystemOptions,
  route: ClientRoute = async (gateway) => gateway,
): Promise<Tunnel> {
  const gateway = await BenchProcess.start<GatewayReady>('gateway', './gateway-process.js', {
    execArgv: nodeFlags(options, 'gateway'),
  });
  try {
    const client = await BenchProcess.start<ClientReady>('client', './client-process.js', {
      args: [JSON.stringify(await route(gateway.ready))],
      execArgv: nodeFlags(options, 'client'),
    });
    return { gateway, client };
  } catch (error) {
    await gateway.close();
    throw error;
  }
}

/** Share of one core each process used between two snapshots, in percent. */
export function cpuShares(before: Snapshot, after: Snapshot): Map<ProcessName, number> {
  const wallMicros = (after.at - before.at) * 1000;
  const shares = new Map<ProcessName, number>();
  for (const [name, end] of after.stats) {
    const start = before.stats.get(name);
    if (!start) continue;
    const used = end.cpuUser - start.cpuUser + (end.cpuSystem - start.cpuSystem);
    shares.set(name, (100 * used) / wallMicros);
  }
  return shares;
}

/** CPU the whole machine used between two snapshots, in percent of one core (all processes). */
export function machineShare(before: Snapshot, after: Snapshot): number {
  const total = after.machine.total - before.machine.total;
  const idle = after.machine.idle - before.machine.idle;
  return total > 0 ? 100 * cpus().length * (1 - idle / total) : 0;
}
