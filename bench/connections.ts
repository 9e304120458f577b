/**
 * Workload 2, connection rate: for a fixed time, `parallel` workers each open a new connection
 * through the door, make one 64-byte request/response, end the connection and start over.
 * Connections per second = exchanges completed / time until the last one completed. Besides the
 * direct baseline, the same generator runs through a bare SOCKS5 relay
 * (bench/socks5-relay-process.ts), the second baseline the SOCKS5 rows' notes compare with.
 */
import type { Socket } from 'node:net';
import { cpus } from 'node:os';
import { type Door, openDoor } from './doors.js';
import { Echoer } from './exchange.js';
import type { Endpoint } from './socks5-client.js';
import { summarize } from './stats.js';
import type { ProcessName } from './system.js';
import type { Row } from './table.js';
import {
  type CpuRecord,
  doorsWithBaseline,
  endpoint,
  measureCpu,
  type Workload,
  type WorkloadContext,
} from './workload.js';

export interface RateResult {
  perSecond: number;
  completed: number;
  failed: number;
  firstFailure: string | undefined;
}

export async function connectionRate(
  door: Door,
  echo: Endpoint,
  parallel: number,
  seconds: number,
): Promise<RateResult> {
  const started = performance.now();
  const deadline = started + seconds * 1000;
  let completed = 0;
  let failed = 0;
  let firstFailure: string | undefined;
  let finishedAt = started;
  const worker = async () => {
    while (performance.now() < deadline) {
      let socket: Socket | undefined;
      try {
        socket = await door.connect(echo);
        const echoer = new Echoer(socket);
        await echoer.roundTrip();
        completed += 1;
        finishedAt = performance.now();
        // The user hangs up without waiting for the close to travel back, as curl does.
        void echoer.close();
      } catch (error) {
        socket?.destroy();
        failed += 1;
        firstFailure ??= error instanceof Error ? error.message : String(error);
      }
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  return {
    perSecond: completed / ((finishedAt - started) / 1000),
    completed,
    failed,
    firstFailure,
  };
}

export const TARGETS: Record<number, string> = { 100: '≥ 3,000 /s' };

/** A rate with the CPU each named process spent per completed connection, in microseconds. */
interface MeasuredRate {
  result: RateResult;
  cpuMicros: Partial<Record<ProcessName, number>>;
}

export function cpuPerConnection(record: CpuRecord, completed: number): MeasuredRate['cpuMicros'] {
  const micros: MeasuredRate['cpuMicros'] = {};
  for (const [name, share] of Object.entries(record.shares) as [ProcessName, number][]) {
    micros[name] = ((share / 100) * record.seconds * 1e6) / Math.max(1, completed);
  }
  return micros;
}

/**
 * The CPU ceiling: the CPU all benchmark processes together (generator and targets included)
 * spent per connection, and the rate the machine's cores would allow at that cost if they were
 * busy all the time. No shorter wait raises a rate above it; only less CPU per connection does.
 */
export function cpuCeiling(
  cpuMicros: Partial<Record<string, number>>,
  cores: number,
): { micros: number; perSecond: number } {
  const micros = Object.values(cpuMicros).reduce((sum: number, value) => sum + (value ?? 0), 0);
  return { micros, perSecond: micros > 0 ? (cores * 1e6) / micros : Number.POSITIVE_INFINITY };
}

/** `cpuCeiling` of each run, medians, in words. */
export function ceilingNote(runs: readonly Partial<Record<string, number>>[]): string {
  const cores = cpus().length;
  const ceilings = runs.map((cpuMicros) => cpuCeiling(cpuMicros, cores));
  const micros = medianOf(ceilings.map(({ micros }) => micros));
  const perSecond = Math.round(summarize(ceilings.map(({ perSecond }) => perSecond)).median);
  return `all processes ${micros} µs, so ${cores} cores allow at most ${perSecond.toLocaleString('en-US')} /s`;
}

export function medianOf(values: readonly number[]): string {
  return summarize(values).median.toFixed(0);
}

/** The SOCKS5 rows' comparison with the bare SOCKS5 relay measured in the same runs. */
export function relayNote(
  relayRate: number,
  relayCpu: string,
  failed: number,
  posternRate: number,
  ceiling: string,
): string {
  const failures = failed > 0 ? ` (relay: ${failed} FAILED)` : '';
  const rate = Math.round(relayRate).toLocaleString('en-US');
  return `bare SOCKS5 relay ${rate} /s, ${relayCpu} µs${failures} (Postern ${(posternRate / relayRate).toFixed(2)}×; ${ceiling})`;
}

export const connectionsWorkload: Workload = {
  name: 'connections',
  async run(context: WorkloadContext): Promise<Row[]> {
    const { system, profile } = context;
    const echo = endpoint(system.echoTarget.ready.echoPort);
    const relay = { spec: system.socks5Relay, name: openDoor(system.socks5Relay).name };
    const results = new Map<string, MeasuredRate[]>();
    for (let run = 1; run <= profile.runs; run++) {
      for (const parallel of profile.parallelism) {
        for (const { spec, name } of [...doorsWithBaseline(context), relay]) {
          const { result, record } = await measureCpu(
            context,
            `connections x${parallel}`,
            name,
            () => connectionRate(openDoor(spec), echo, parallel, profile.connectionSeconds),
          );
          // The relay is a baseline, not a door: its CPU goes into its note, not the analysis.
          if (spec !== relay.spec) context.cpu.push(record);
          await system.idle();
          const key = `${parallel} ${name}`;
          const measured = { result, cpuMicros: cpuPerConnection(record, result.completed) };
          results.set(key, [...(results.get(key) ?? []), measured]);
          context.progress(
            `connections x${parallel} ${name} run ${run}: ${result.perSecond.toFixed(0)}/s` +
              (result.failed > 0 ? ` (${result.failed} failed: ${result.firstFailure})` : ''),
          );
        }
      }
    }
    const rows: Row[] = [];
    const runsOf = (key: string) => results.get(key)!;
    const rate = (key: string) => summarize(runsOf(key).map(({ result }) => result.perSecond));
    const cpuOfRuns = (key: string) => runsOf(key).map(({ cpuMicros }) => cpuMicros);
    const cpu = (key: string, name: ProcessName) =>
      medianOf(cpuOfRuns(key).map((cpuMicros) => cpuMicros[name] ?? 0));
    for (const parallel of profile.parallelism) {
      const relayKey = `${parallel} ${relay.name}`;
      const relayRate = rate(relayKey);
      const relayFailed = runsOf(relayKey).reduce((sum, { result }) => sum + result.failed, 0);
      for (const { name } of doorsWithBaseline(context).slice(1)) {
        const key = `${parallel} ${name}`;
        const runs = runsOf(key).map(({ result }) => result);
        const failed = runs.reduce((sum, result) => sum + result.failed, 0);
        const completed = runs.reduce((sum, result) => sum + result.completed, 0);
        const againstRelay =
          name === 'socks5'
            ? `; ${relayNote(relayRate.median, cpu(relayKey, 'socks5 relay'), relayFailed, rate(key).median, ceilingNote(cpuOfRuns(relayKey)))}`
            : '';
        rows.push({
          workload:
            parallel === 1
              ? 'New connections, sequential'
              : `New connections, ${parallel} parallel`,
          door: name,
          unit: '/s',
          postern: rate(`${parallel} ${name}`),
          direct: rate(`${parallel} direct`),
          target: TARGETS[parallel] ?? null,
          note:
            `${completed.toLocaleString('en-US')} exchanges${failed > 0 ? `, ${failed} FAILED` : ''}; ` +
            `CPU per connection: gateway ${cpu(key, 'gateway')} µs, client ${cpu(key, 'client')} µs, ${ceilingNote(cpuOfRuns(key))}` +
            againstRelay,
        });
      }
    }
    return rows;
  },
};
