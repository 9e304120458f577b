/**
 * Workload 2, connection rate: for a fixed time, `parallel` workers each open a new connection
 * through the door, make one 64-byte request/response, end the connection and start over.
 * Connections per second = exchanges completed / time until the last one completed.
 */
import type { Socket } from 'node:net';
import { type Door, openDoor } from './doors.js';
import { Echoer } from './exchange.js';
import type { Endpoint } from './socks5-client.js';
import { summarize } from './stats.js';
import type { Row } from './table.js';
import {
  doorsWithBaseline,
  endpoint,
  type Workload,
  type WorkloadContext,
  withCpuRecord,
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

const TARGETS: Record<number, string> = { 100: '≥ 3,000 /s' };

export const connectionsWorkload: Workload = {
  name: 'connections',
  async run(context: WorkloadContext): Promise<Row[]> {
    const { system, profile } = context;
    const echo = endpoint(system.echoTarget.ready.echoPort);
    const doors = doorsWithBaseline(context);
    const results = new Map<string, RateResult[]>();
    for (let run = 1; run <= profile.runs; run++) {
      for (const parallel of profile.parallelism) {
        for (const { spec, name } of doors) {
          const result = await withCpuRecord(context, `connections x${parallel}`, name, () =>
            connectionRate(openDoor(spec), echo, parallel, profile.connectionSeconds),
          );
          await system.idle();
          const key = `${parallel} ${name}`;
          results.set(key, [...(results.get(key) ?? []), result]);
          context.progress(
            `connections x${parallel} ${name} run ${run}: ${result.perSecond.toFixed(0)}/s` +
              (result.failed > 0 ? ` (${result.failed} failed: ${result.firstFailure})` : ''),
          );
        }
      }
    }
    const rows: Row[] = [];
    const rate = (key: string) => summarize(results.get(key)!.map((result) => result.perSecond));
    for (const parallel of profile.parallelism) {
      for (const { name } of doors.slice(1)) {
        const runs = results.get(`${parallel} ${name}`)!;
        const failed = runs.reduce((sum, result) => sum + result.failed, 0);
        const completed = runs.reduce((sum, result) => sum + result.completed, 0);
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
          note: `${completed.toLocaleString('en-US')} exchanges${failed > 0 ? `, ${failed} FAILED` : ''}`,
        });
      }
    }
    return rows;
  },
};
