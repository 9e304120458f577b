/**
 * Workload 7, long path: a second gateway and client, joined through a delay relay
 * (bench/delay-relay.ts) that holds every byte `WAN_DELAY_MS` each way, so that the tunnel's
 * round trip is 50 ms, as between a gateway and a client in different regions. Through its
 * SOCKS5 door, for `wanSeconds` each: a download alone, and a download beside an interactive
 * stream making 64-byte round trips back to back (their p50 and p99, and the download's rate
 * meanwhile).
 * Baseline: the same loads without Postern over the same kind of path: delay relays in front
 * of the targets. The path has no bandwidth limit, so Postern's figures are what its windows
 * allow over that round trip, and the baseline's are what TCP and the relay manage.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { DelayRelayReady } from './delay-relay-process.js';
import { DIRECT, type DoorSpec, proxiedDoors } from './doors.js';
import { type FairnessResult, roundTripsUnderBulk } from './fairness.js';
import { BenchProcess } from './ipc.js';
import type { SaturationResult } from './load-process.js';
import type { Endpoint } from './socks5-client.js';
import { summarize } from './stats.js';
import type { Row } from './table.js';
import { endpoint, type Workload, type WorkloadContext } from './workload.js';

export const WAN_DELAY_MS = 25;
const ROUND_TRIP = `${2 * WAN_DELAY_MS} ms round trip`;
/** Round trips on the interactive connection before the download starts. */
const WARMUP_ROUND_TRIPS = 5;

/** One way over the long path: a door, and the targets' addresses as that door reaches them. */
interface Route {
  name: string;
  spec: DoorSpec;
  echo: Endpoint;
  source: Endpoint;
}

interface WanResult {
  aloneMBps: number;
  beside: FairnessResult;
}

/** A gateway and a client whose tunnel runs through a delay relay, and relays to the targets. */
async function startLongPath(
  context: WorkloadContext,
  started: BenchProcess<unknown>[],
): Promise<Route[]> {
  const { echoTarget, bulkTarget } = context.system;
  let echoPort = 0;
  let sourcePort = 0;
  const { gateway, client } = await context.system.startTunnel(async (ready) => {
    const relays = await BenchProcess.start<DelayRelayReady>(
      'delay relays',
      './delay-relay-process.js',
      {
        args: [
          String(WAN_DELAY_MS),
          String(ready.tunnelPort),
          String(echoTarget.ready.echoPort),
          String(bulkTarget.ready.sourcePort),
        ],
      },
    );
    started.push(relays);
    const [tunnelPort, ...targets] = relays.ready.ports as [number, number, number];
    [echoPort, sourcePort] = targets;
    return { ...ready, tunnelPort };
  });
  started.push(gateway, client);
  const socks5 = proxiedDoors(gateway.ready).find((spec) => spec.kind === 'socks5');
  if (!socks5) throw new Error('the benchmark gateway has no SOCKS5 door');
  return [
    { name: 'direct', spec: DIRECT, echo: endpoint(echoPort), source: endpoint(sourcePort) },
    {
      name: 'socks5',
      spec: socks5,
      echo: endpoint(echoTarget.ready.echoPort),
      source: endpoint(bulkTarget.ready.sourcePort),
    },
  ];
}

async function downloadAlone(context: WorkloadContext, route: Route): Promise<number> {
  const { load } = context.system;
  await load.request('saturate', { door: route.spec, target: route.source });
  await sleep(context.profile.wanSeconds * 1000);
  const bulk = await load.request<SaturationResult>('stop');
  return bulk.bytes / 1e6 / bulk.seconds;
}

export const wanWorkload: Workload = {
  name: 'wan',
  async run(context: WorkloadContext): Promise<Row[]> {
    const { system, profile } = context;
    const started: BenchProcess<unknown>[] = [];
    const results = new Map<string, WanResult[]>();
    try {
      const routes = await startLongPath(context, started);
      for (let run = 1; run <= profile.runs; run++) {
        for (const route of routes) {
          const aloneMBps = await downloadAlone(context, route);
          const beside = await roundTripsUnderBulk(
            system.load,
            route.spec,
            route.echo,
            route.source,
            profile.wanSeconds,
            WARMUP_ROUND_TRIPS,
          );
          results.set(route.name, [...(results.get(route.name) ?? []), { aloneMBps, beside }]);
          context.progress(
            `wan ${route.name} run ${run}: alone ${aloneMBps.toFixed(1)} MB/s, beside an ` +
              `interactive stream ${beside.bulkMBps.toFixed(1)} MB/s, its p50 ` +
              `${beside.p50.toFixed(1)} ms, p99 ${beside.p99.toFixed(1)} ms`,
          );
        }
      }
    } finally {
      for (const child of started.reverse()) await child.close();
    }
    const direct = results.get('direct')!;
    const through = results.get('socks5')!;
    const of = (runs: WanResult[], pick: (result: WanResult) => number) =>
      summarize(runs.map(pick));
    const roundTrips = of(through, (result) => result.beside.roundTrips).median.toFixed(0);
    const rows: Row[] = [
      {
        workload: `Download over a ${ROUND_TRIP}, alone`,
        door: 'socks5',
        unit: 'MB/s',
        postern: of(through, (result) => result.aloneMBps),
        direct: of(direct, (result) => result.aloneMBps),
        target: null,
        note: 'baseline: TCP through the same delay relay, no bandwidth limit',
      },
      {
        workload: `Download over a ${ROUND_TRIP}, beside an interactive stream`,
        door: 'socks5',
        unit: 'MB/s',
        postern: of(through, (result) => result.beside.bulkMBps),
        direct: of(direct, (result) => result.beside.bulkMBps),
        target: null,
        note: `the interactive stream makes 64-byte round trips back to back (${roundTrips} per run)`,
      },
    ];
    for (const key of ['p50', 'p99'] as const) {
      rows.push({
        workload: `Interactive round trip over a ${ROUND_TRIP} beside a download, ${key}`,
        door: 'socks5',
        unit: 'ms',
        postern: of(through, (result) => result.beside[key]),
        direct: of(direct, (result) => result.beside[key]),
        target: null,
        note: `${roundTrips} round trips per run; the path alone takes ${2 * WAN_DELAY_MS} ms`,
      });
    }
    return rows;
  },
};
