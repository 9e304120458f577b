/**
 * Workload 5, fairness: the load process keeps one endless download running through the door
 * (so the tunnel is saturated), while the parent measures 64-byte round trips on a second,
 * interactive connection through the same door. Baseline: the same two loads made directly.
 */
import { type DoorSpec, openDoor } from './doors.js';
import { Echoer } from './exchange.js';
import type { BenchProcess } from './ipc.js';
import type { SaturationResult } from './load-process.js';
import type { Endpoint } from './socks5-client.js';
import { latencyPercentiles, summarize } from './stats.js';
import type { Row } from './table.js';
import { doorsWithBaseline, endpoint, type Workload, type WorkloadContext } from './workload.js';

export interface FairnessResult {
  p50: number;
  p99: number;
  roundTrips: number;
  bulkMBps: number;
}

/**
 * `warmup` round trips, then as many as `seconds` allow, on a connection through `spec` to
 * `echo`, while the load process keeps a download from `source` running through the same door.
 */
export async function roundTripsUnderBulk(
  load: BenchProcess<unknown>,
  spec: DoorSpec,
  echo: Endpoint,
  source: Endpoint,
  seconds: number,
  warmup: number,
): Promise<FairnessResult> {
  const echoer = new Echoer(await openDoor(spec).connect(echo));
  let result: FairnessResult;
  try {
    for (let i = 0; i < warmup; i++) await echoer.roundTrip();
    await load.request('saturate', { door: spec, target: source });
    const samples: number[] = [];
    const deadline = performance.now() + seconds * 1000;
    try {
      while (performance.now() < deadline) samples.push(await echoer.roundTrip());
    } finally {
      const bulk = await load.request<SaturationResult>('stop');
      result = {
        ...latencyPercentiles(samples),
        roundTrips: samples.length,
        bulkMBps: bulk.bytes / 1e6 / bulk.seconds,
      };
    }
  } finally {
    await echoer.close();
  }
  return result;
}

export const fairnessWorkload: Workload = {
  name: 'fairness',
  async run(context: WorkloadContext): Promise<Row[]> {
    const { system, profile } = context;
    const echo = endpoint(system.echoTarget.ready.echoPort);
    const source = endpoint(system.bulkTarget.ready.sourcePort);
    const doors = doorsWithBaseline(context);
    const results = new Map<string, FairnessResult[]>();
    for (let run = 1; run <= profile.runs; run++) {
      for (const { spec, name } of doors) {
        const result = await roundTripsUnderBulk(
          system.load,
          spec,
          echo,
          source,
          profile.fairnessSeconds,
          profile.warmupRoundTrips,
        );
        await system.idle();
        results.set(name, [...(results.get(name) ?? []), result]);
        context.progress(
          `fairness ${name} run ${run}: p50 ${result.p50.toFixed(3)} ms, p99 ${result.p99.toFixed(3)} ms, bulk ${result.bulkMBps.toFixed(0)} MB/s`,
        );
      }
    }
    const direct = results.get('direct')!;
    const rows: Row[] = [];
    for (const { name } of doors.slice(1)) {
      const through = results.get(name)!;
      const bulk = summarize(through.map((result) => result.bulkMBps));
      const count = summarize(through.map((result) => result.roundTrips));
      for (const key of ['p50', 'p99'] as const) {
        rows.push({
          workload: `Interactive round trip under bulk, ${key}`,
          door: name,
          unit: 'ms',
          postern: summarize(through.map((result) => result[key])),
          direct: summarize(direct.map((result) => result[key])),
          target: key === 'p99' ? '< 5 ms' : null,
          note: `bulk meanwhile ${bulk.median.toFixed(0)} MB/s; ${count.median.toFixed(0)} round trips per run`,
        });
      }
    }
    return rows;
  },
};
