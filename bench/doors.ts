/**
 * The ways a user reaches a target: directly (the baseline) or through one of the gateway's
 * front doors. Workloads run once per door; a new front door is one more `DoorSpec` kind here
 * and one more entry in `proxiedDoors`.
 */
import { connect, type Socket } from 'node:net';
import { type HttpProxy, httpConnect } from './http-connect-client.js';
import { type Endpoint, type Socks5Proxy, socks5Connect } from './socks5-client.js';

/** A door as plain data, so it can be sent to another benchmark process. */
export type DoorSpec =
  | { kind: 'direct' }
  | { kind: 'socks5'; proxy: Socks5Proxy }
  | { kind: 'http-connect'; proxy: HttpProxy }
  /** Not a front door: the bare TLS relay of bench/tls-pipe-process.ts, a second baseline for bulk. */
  | { kind: 'tls-pipe'; port: number }
  /**
   * Not a front door: the bare SOCKS5 relay of bench/socks5-relay-process.ts, a second baseline
   * for connection rates.
   */
  | { kind: 'socks5-relay'; proxy: Socks5Proxy };

export interface Door {
  /**
   * Short name used in the table: `direct`, `socks5`, `http-connect` (and the baselines
   * `tls-pipe`, `socks5-relay`).
   */
  readonly name: string;
  /** Resolves with a socket connected to `target`, ready for data. */
  connect(target: Endpoint): Promise<Socket>;
}

/** What the gateway process reports once it listens. */
export interface GatewayReady {
  tunnelPort: number;
  socks5Port: number | undefined;
  httpPort: number | undefined;
  fingerprint: string;
}

/** Credentials the benchmark's gateway accepts and its client presents. */
export const BENCH_GROUP = { id: 'bench', password: 'bench-secret' } as const;

export const DIRECT: DoorSpec = { kind: 'direct' };

/** A SOCKS5 or HTTP proxy on loopback `port` that takes the benchmark's credentials. */
export function benchProxy(port: number): Socks5Proxy & HttpProxy {
  return { host: '127.0.0.1', port, username: BENCH_GROUP.id, password: BENCH_GROUP.password };
}

/** Every front door the running gateway offers, each measured against DIRECT. */
export function proxiedDoors(gateway: GatewayReady): DoorSpec[] {
  const doors: DoorSpec[] = [];
  if (gateway.socks5Port !== undefined)
    doors.push({ kind: 'socks5', proxy: benchProxy(gateway.socks5Port) });
  if (gateway.httpPort !== undefined) {
    doors.push({ kind: 'http-connect', proxy: benchProxy(gateway.httpPort) });
  }
  return doors;
}

function connectDirect(target: Endpoint): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: target.host, port: target.port, noDelay: true });
    socket.once('error', reject);
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve(socket);
    });
  });
}

/** Through the bare TLS pipe: its near end, then the target's port as a u16. */
async function connectTlsPipe(port: number, target: Endpoint): Promise<Socket> {
  const socket = await connectDirect({ host: '127.0.0.1', port });
  const header = Buffer.alloc(2);
  header.writeUInt16BE(target.port, 0);
  socket.write(header);
  return socket;
}

export function openDoor(spec: DoorSpec): Door {
  switch (spec.kind) {
    case 'direct':
      return { name: 'direct', connect: connectDirect };
    case 'socks5':
      return { name: 'socks5', connect: (target) => socks5Connect(spec.proxy, target) };
    case 'http-connect':
      return { name: 'http-connect', connect: (target) => httpConnect(spec.proxy, target) };
    case 'tls-pipe':
      return { name: 'tls-pipe', connect: (target) => connectTlsPipe(spec.port, target) };
    case 'socks5-relay':
      return { name: 'socks5-relay', connect: (target) => socks5Connect(spec.proxy, target) };
  }
}
