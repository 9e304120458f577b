/**
 * Workload 4, many idle streams: open N connections through the door to the echo target and
 * hold them idle; the RSS the gateway and the client grew by, divided by N, is the memory a
 * stream costs each side. Baseline: the same N connections made directly, costing a plain Node
 * TCP server (a fresh target process) RSS per socket. Every run starts fresh processes, so a
 * heap grown by an earlier run does not hide the cost; RSS is read after a full GC.
 */
import type { Socket } from 'node:net';
import { type Door, openDoor } from './doors.js';
import { BenchProcess, type ProcessStats } from './ipc.js';
import type { Endpoint } from './socks5-client.js';
import { summarize } from './stats.js';
import type { Row } from './table.js';
import type { TargetReady } from './target-process.js';
import { endpoint, type Workload, type WorkloadContext } from './workload.js';

/** Connections opened at a time while filling up. */
const OPEN_CONCURRENCY = 100;
const KIB = 1024;
const MIB = 1024 * 1024;

/** Opens `count` connections and returns them, all idle. */
export async function openIdle(door: Door, target: Endpoint, count: number): Promise<Socket[]> {
  const sockets: Socket[] = [];
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (next < count && !failed) {
      next += 1;
      try {
        const socket = await door.connect(target);
        socket.on('error', (error) => {
          process.stderr.write(`idle stream failed: ${error.message}\n`);
        });
        sockets.push(socket);
      } catch (error) {
        failed = true;
        throw error;
      }
    }
  };
  const workers = await Promise.allSettled(
    Array.from({ length: Math.min(OPEN_CONCURRENCY, count) }, worker),
  );
  const failure = workers.find((worker) => worker.status === 'rejected');
  if (failure) {
    for (const socket of sockets) socket.destroy();
    throw new Error(`opened ${sockets.length} of ${count} idle streams`, {
      cause: failure.reason,
    });
  }
  return sockets;
}

interface Growth {
  perStream: number;
  heapPerStream: number;
  rssBefore: number;
  rssAfter: number;
  counted: number;
}

function growth(before: ProcessStats, after: ProcessStats, count: number): Growth {
  return {
    perStream: (after.rss - before.rss) / count,
    heapPerStream: (after.heapUsed - before.heapUsed) / count,
    rssBefore: before.rss,
    rssAfter: after.rss,
    counted: after.openStreams,
  };
}

type Side = 'gateway' | 'client' | 'plain socket';

/** One run for one count: the direct baseline, then every door, on fresh processes. */
async function measureRun(
  context: WorkloadContext,
  count: number,
): Promise<Map<string, Map<Side, Growth>>> {
  const { system } = context;
  const results = new Map<string, Map<Side, Growth>>();
  const target = await BenchProcess.start<TargetReady>('idle target', './target-process.js');
  try {
    const echo = endpoint(target.ready.echoPort);
    const before = await target.stats(true);
    const sockets = await openIdle(openDoor({ kind: 'direct' }), echo, count);
    await target.request('holding', { count });
    const after = await target.stats(true);
    for (const socket of sockets) socket.destroy();
    await target.request('idle');
    results.set('direct', new Map([['plain socket', growth(before, after, count)]]));
  } finally {
    await target.close();
  }
  for (let index = 0; index < system.doors.length; index++) {
    await system.restartTunnel();
    // The fresh gateway listens on new ports.
    const door = openDoor(system.doors[index]!);
    const echo = endpoint(system.echoTarget.ready.echoPort);
    const [gatewayBefore, clientBefore] = await Promise.all([
      system.gateway.stats(true),
      system.client.stats(true),
    ]);
    const sockets = await openIdle(door, echo, count);
    const [gatewayAfter, clientAfter] = await Promise.all([
      system.gateway.stats(true),
      system.client.stats(true),
    ]);
    for (const socket of sockets) socket.destroy();
    await system.idle();
    results.set(
      door.name,
      new Map([
        ['gateway', growth(gatewayBefore, gatewayAfter, count)],
        ['client', growth(clientBefore, clientAfter, count)],
      ]),
    );
  }
  return results;
}

export const streamsWorkload: Workload = {
  name: 'streams',
  async run(context: WorkloadContext): Promise<Row[]> {
    const { profile } = context;
    const rows: Row[] = [];
    for (const count of profile.streamCounts) {
      const runs: Map<string, Map<Side, Growth>>[] = [];
      for (let run = 1; run <= profile.runs; run++) {
        const result = await measureRun(context, count);
        runs.push(result);
        for (const [door, sides] of result) {
          for (const [side, grown] of sides) {
            context.progress(
              `idle streams ${count} ${door} ${side} run ${run}: ${(grown.perStream / KIB).toFixed(1)} KiB/stream, RSS ${(grown.rssBefore / MIB).toFixed(0)}→${(grown.rssAfter / MIB).toFixed(0)} MiB, ${grown.counted} open`,
            );
          }
        }
      }
      const series = (door: string, side: Side) => runs.map((run) => run.get(door)!.get(side)!);
      const direct = summarize(series('direct', 'plain socket').map((g) => g.perStream / KIB));
      for (const spec of context.system.doors) {
        const door = openDoor(spec).name;
        for (const side of ['gateway', 'client'] as const) {
          const grown = series(door, side);
          const last = grown[grown.length - 1]!;
          const heap = summarize(grown.map((g) => g.heapPerStream / KIB)).median;
          const miscounted = grown.filter((g) => g.counted !== count).length;
          rows.push({
            workload: `Idle streams ${count.toLocaleString('en-US')}: RSS per stream, ${side}`,
            door,
            unit: 'KiB',
            postern: summarize(grown.map((g) => g.perStream / KIB)),
            direct,
            target: count >= 10_000 ? '≤ 12 KiB' : null,
            note:
              `RSS ${(last.rssBefore / MIB).toFixed(0)}→${(last.rssAfter / MIB).toFixed(0)} MiB (last run), JS heap ${heap.toFixed(1)} KiB/stream` +
              (miscounted > 0 ? `; ${side} held ≠ ${count} streams in ${miscounted} runs` : ''),
          });
        }
      }
    }
    return rows;
  },
};
