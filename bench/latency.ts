/**
 * Workload 3, added latency: on one established connection per door, sequential round trips
 * of a 64-byte message to the echo target. p50/p99 through the door minus p50/p99 direct, run
 * by run, is the latency the tunnel adds.
 */
import { type Door, openDoor } from './doors.js';
import { Echoer, MESSAGE_SIZE } from './exchange.js';
import type { Endpoint } from './socks5-client.js';
import { latencyPercentiles, summarize } from './stats.js';
import type { Row } from './table.js';
import { doorsWithBaseline, endpoint, type Workload, type WorkloadContext } from './workload.js';

/** Round-trip times in ms of `count` exchanges after `warmup` unmeasured ones. */
export async function roundTrips(
  door: Door,
  echo: Endpoint,
  count: number,
  warmup: number,
): Promise<number[]> {
  const echoer = new Echoer(await door.connect(echo));
  try {
    for (let i = 0; i < warmup; i++) await echoer.roundTrip();
    const samples: number[] = [];
    for (let i = 0; i < count; i++) samples.push(await echoer.roundTrip());
    return samples;
  } finally {
    await echoer.close();
  }
}

export const latencyWorkload: Workload = {
  name: 'latency',
  async run(context: WorkloadContext): Promise<Row[]> {
    const { system, profile } = context;
    const echo = endpoint(system.echoTarget.ready.echoPort);
    const doors = doorsWithBaseline(context);
    const percentiles = new Map<string, { p50: number; p99: number }[]>();
    for (let run = 1; run <= profile.runs; run++) {
      for (const { spec, name } of doors) {
        const samples = await roundTrips(
          openDoor(spec),
          echo,
          profile.roundTrips,
          profile.warmupRoundTrips,
        );
        await system.idle();
        const result = latencyPercentiles(samples);
        percentiles.set(name, [...(percentiles.get(name) ?? []), result]);
        context.progress(
          `latency ${name} run ${run}: p50 ${result.p50.toFixed(3)} ms, p99 ${result.p99.toFixed(3)} ms`,
        );
      }
    }
    const direct = percentiles.get('direct')!;
    const rows: Row[] = [];
    for (const { name } of doors.slice(1)) {
      const through = percentiles.get(name)!;
      for (const key of ['p50', 'p99'] as const) {
        const added = summarize(through.map((result, run) => result[key] - direct[run]![key]));
        rows.push({
          workload: `Round trip ${MESSAGE_SIZE} B, ${key}`,
          door: name,
          unit: 'ms',
          postern: summarize(through.map((result) => result[key])),
          direct: summarize(direct.map((result) => result[key])),
          target: null,
          note: `added ${added.median.toFixed(3)} ms (${added.min.toFixed(3)}–${added.max.toFixed(3)}); ${profile.roundTrips} round trips per run`,
        });
      }
    }
    return rows;
  },
};
