/**
 * Workload 1, bulk throughput: one download (target → user) and one upload (user → target) of
 * `bulkBytes`, each through every door and directly. The receiver counts the bytes and compares
 * each with the byte sent at its offset; a transfer counts as intact only if all match. Each run
 * also moves the same bytes through a bare TLS relay (bench/tls-pipe-process.ts), the second
 * baseline the notes give, and makes two downloads at once (a quarter of `bulkBytes` between
 * them) through every door, directly and through two connections of the relay.
 */
import type { Socket } from 'node:net';
import { type Door, openDoor } from './doors.js';
import {
  decodeVerdict,
  encodeLength,
  PayloadCheck,
  VERDICT_SIZE,
  writePayload,
} from './payload.js';
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

export interface TransferResult {
  seconds: number;
  intact: boolean;
}

const MB = 1_000_000;

function failOnError(socket: Socket, reject: (error: Error) => void): void {
  socket.once('error', reject);
  socket.once('close', () => reject(new Error('connection closed before the transfer finished')));
}

/** Asks the source for `bytes` bytes and times their arrival from request to last byte. */
export async function download(
  door: Door,
  source: Endpoint,
  bytes: number,
): Promise<TransferResult> {
  const socket = await door.connect(source);
  const check = new PayloadCheck();
  const started = performance.now();
  await new Promise<void>((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => check.update(chunk));
    socket.once('end', () => resolve());
    failOnError(socket, reject);
    socket.end(encodeLength(bytes));
  });
  const seconds = (performance.now() - started) / 1000;
  socket.destroy();
  return { seconds, intact: check.intact(bytes) };
}

/** Sends `bytes` bytes to the sink and times them until the sink's verdict comes back. */
export async function upload(door: Door, sink: Endpoint, bytes: number): Promise<TransferResult> {
  const socket = await door.connect(sink);
  const chunks: Buffer[] = [];
  const started = performance.now();
  await new Promise<void>((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.once('end', () => resolve());
    failOnError(socket, reject);
    writePayload(socket, bytes);
  });
  const seconds = (performance.now() - started) / 1000;
  socket.destroy();
  const reply = Buffer.concat(chunks);
  const verdict = reply.length === VERDICT_SIZE ? decodeVerdict(reply) : undefined;
  return { seconds, intact: verdict?.intact(bytes) ?? false };
}

type Direction = 'download' | 'upload';

function formatSize(bytes: number): string {
  return bytes >= 1024 ** 3 ? `${bytes / 1024 ** 3} GiB` : `${bytes / 1024 ** 2} MiB`;
}

/**
 * Two downloads at once through `door`, `total` bytes between them, timed from the first request
 * to the last byte of both: how the tunnel shares itself between transfers.
 */
async function twoDownloads(door: Door, source: Endpoint, total: number): Promise<TransferResult> {
  const started = performance.now();
  const both = await Promise.all([
    download(door, source, total / 2),
    download(door, source, total / 2),
  ]);
  return {
    seconds: (performance.now() - started) / 1000,
    intact: both.every((result) => result.intact),
  };
}

/** The bytes both parallel downloads carry together: a quarter of a single transfer's. */
function parallelBytes(bytes: number): number {
  return bytes / 4;
}

export const bulkWorkload: Workload = {
  name: 'bulk',
  async run(context: WorkloadContext): Promise<Row[]> {
    const { system, profile } = context;
    const bytes = profile.bulkBytes;
    const { sourcePort, sinkPort } = system.bulkTarget.ready;
    const doors = doorsWithBaseline(context);
    const pipe = openDoor(system.tlsPipe);
    /** Each transfer's rate in MB/s and whether it arrived intact, by way. */
    const results = new Map<string, { rate: number; intact: boolean }[]>();
    const record = (key: string, { seconds, intact }: TransferResult, size = bytes) => {
      const rate = size / MB / seconds;
      results.set(key, [...(results.get(key) ?? []), { rate, intact }]);
      context.progress(
        `bulk ${key} run ${results.get(key)!.length}: ${rate.toFixed(0)} MB/s${intact ? '' : ' DATA MISMATCH'}`,
      );
    };
    for (let run = 1; run <= profile.runs; run++) {
      for (const direction of ['download', 'upload'] as Direction[]) {
        const transferThrough = (door: Door) =>
          direction === 'download'
            ? download(door, endpoint(sourcePort), bytes)
            : upload(door, endpoint(sinkPort), bytes);
        for (const { spec, name } of doors) {
          const door = openDoor(spec);
          const result = await withCpuRecord(context, `bulk ${direction}`, name, () =>
            transferThrough(door),
          );
          await system.idle();
          record(`${direction} ${name}`, result);
        }
        record(`${direction} ${pipe.name}`, await transferThrough(pipe));
        await system.idle();
      }
      for (const { spec, name } of [...doors, { spec: system.tlsPipe, name: pipe.name }]) {
        const size = parallelBytes(bytes);
        record(`two ${name}`, await twoDownloads(openDoor(spec), endpoint(sourcePort), size), size);
        await system.idle();
      }
    }
    const rows: Row[] = [];
    const throughput = (key: string) => summarize(results.get(key)!.map(({ rate }) => rate));
    const intactNote = (transfers: readonly { intact: boolean }[]) => {
      const intact = transfers.filter((result) => result.intact).length;
      return intact === transfers.length
        ? `intact ${intact}/${transfers.length} (every byte compared)`
        : `DATA MISMATCH: intact ${intact}/${transfers.length}`;
    };
    for (const direction of ['download', 'upload'] as Direction[]) {
      const direct = throughput(`${direction} direct`);
      const relay = throughput(`${direction} ${pipe.name}`);
      const pipeIntact = results.get(`${direction} ${pipe.name}`)!.every((result) => result.intact);
      for (const { name } of doors.slice(1)) {
        const transfers = results.get(`${direction} ${name}`)!;
        const postern = throughput(`${direction} ${name}`);
        const againstPipe = `bare TLS relay ${relay.median.toFixed(0)} MB/s (Postern ${(postern.median / relay.median).toFixed(2)}×)${pipeIntact ? '' : ' (pipe DATA MISMATCH)'}`;
        rows.push({
          workload: `Bulk ${direction} ${formatSize(bytes)}`,
          door: name,
          unit: 'MB/s',
          postern,
          direct,
          target: '≥ 400 MB/s',
          note: `${intactNote(transfers)}; ${againstPipe}`,
        });
      }
    }
    const pairRelay = throughput(`two ${pipe.name}`);
    for (const { name } of doors.slice(1)) {
      const postern = throughput(`two ${name}`);
      rows.push({
        workload: `Bulk download ${formatSize(parallelBytes(bytes))}, two streams at once`,
        door: name,
        unit: 'MB/s',
        postern,
        direct: throughput('two direct'),
        target: null,
        note: `${intactNote(results.get(`two ${name}`)!)}; both streams together; two connections through the bare TLS relay ${pairRelay.median.toFixed(0)} MB/s (Postern ${(postern.median / pairRelay.median).toFixed(2)}×)`,
      });
    }
    return rows;
  },
};
