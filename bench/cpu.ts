/**
 * Workload 6, multi-core, and the load-generator check. Both read the CPU time every process
 * used during the timed runs of the other workloads (the records `measureCpu` makes, kept in
 * `context.cpu`): no extra load is generated. The verdicts are computed from the figures, not
 * written in advance.
 */
import { cpus } from 'node:os';
import { summarize } from './stats.js';
import type { ProcessName } from './system.js';
import type { Row } from './table.js';
import type { CpuRecord, Workload, WorkloadContext } from './workload.js';

/** A process above this share of one core is treated as CPU-bound on its one thread. */
const BUSY_CORE_PERCENT = 85;
/** All processes together above this share of the machine mean the cores are saturated. */
const BUSY_MACHINE_SHARE = 0.9;

function shares(records: readonly CpuRecord[], name: ProcessName): number[] {
  return records.map((record) => record.shares[name] ?? 0);
}

function total(record: CpuRecord): number {
  return Object.values(record.shares).reduce((sum, share) => sum + (share ?? 0), 0);
}

function cpuRow(
  workload: string,
  door: string,
  proxied: readonly CpuRecord[],
  direct: readonly CpuRecord[] | null,
  pick: (record: CpuRecord) => number,
  note: string,
): Row {
  return {
    workload,
    door,
    unit: '% core',
    postern: summarize(proxied.map(pick)),
    direct: direct ? summarize(direct.map(pick)) : null,
    target: null,
    note,
  };
}

/** Says, from the timed runs of one workload, whether gateway or client would gain from a core. */
function verdict(workload: string, door: string, proxied: readonly CpuRecord[]): string {
  const cores = cpus().length;
  const gateway = summarize(shares(proxied, 'gateway')).median;
  const client = summarize(shares(proxied, 'client')).median;
  const ours = summarize(proxied.map(total)).median;
  const machine = summarize(proxied.map((record) => record.machine)).median;
  const prefix = `Multi-core, ${workload} via ${door} (gateway ${gateway.toFixed(0)}%, client ${client.toFixed(0)}% of one core; benchmark processes ${ours.toFixed(0)}%, whole machine ${machine.toFixed(0)}% of ${cores * 100}%)`;
  const bound = [
    ...(gateway >= BUSY_CORE_PERCENT ? ['gateway'] : []),
    ...(client >= BUSY_CORE_PERCENT ? ['client'] : []),
  ];
  if (bound.length > 0) {
    const each = bound.length === 1 ? 'fills one core, so its' : 'each fill one core, so their';
    return `${prefix}: the ${bound.join(' and the ')} ${each} single JavaScript thread is the limit (TLS, WebSocket framing and the multiplexer all run on it). A second core helps only if that work is split across threads or processes, e.g. one worker per tunnel session; it would not help one stream.`;
  }
  if (machine >= BUSY_MACHINE_SHARE * cores * 100) {
    const others =
      machine - ours >= 0.25 * cores * 100
        ? ` (other work on the machine took ${(machine - ours).toFixed(0)}% of it: rerun on an idle machine)`
        : '';
    return `${prefix}: neither side fills a core, but the machine's cores are saturated${others}: gateway, client, generator and target compete for the same cores, so deployed on separate machines each side would go faster; a second core per side helps here, threads inside the gateway would not.`;
  }
  return `${prefix}: no process fills a core and the machine has idle CPU, so the work waits rather than computes (on round trips between the processes, e.g. for flow-control credit); a second core would not raise this figure.`;
}

/** The timed runs whose CPU use is reported: both bulk directions and the busiest connection rate. */
function analysedWorkloads(records: readonly CpuRecord[]): string[] {
  const names = [...new Set(records.map((record) => record.workload))];
  const parallel = names
    .filter((name) => name.startsWith('connections x'))
    .sort(
      (a, b) => Number(b.slice('connections x'.length)) - Number(a.slice('connections x'.length)),
    );
  return [
    ...names.filter((name) => name.startsWith('bulk ')),
    ...(parallel.length > 0 ? [parallel[0]!] : []),
  ];
}

export const multicoreWorkload: Workload = {
  name: 'multicore',
  async run(context: WorkloadContext): Promise<Row[]> {
    const rows: Row[] = [];
    const workloads = analysedWorkloads(context.cpu);
    if (workloads.length === 0) {
      context.notes.push('Multi-core: needs the bulk or connections workload, which did not run.');
      return rows;
    }
    for (const workload of workloads) {
      const records = context.cpu.filter((record) => record.workload === workload);
      const direct = records.filter((record) => record.door === 'direct');
      const doors = [...new Set(records.map((record) => record.door))].filter(
        (door) => door !== 'direct',
      );
      for (const door of doors) {
        const proxied = records.filter((record) => record.door === door);
        const label = `CPU during ${workload}`;
        rows.push(
          cpuRow(`${label}: gateway`, door, proxied, null, (r) => r.shares.gateway ?? 0, ''),
          cpuRow(`${label}: client`, door, proxied, null, (r) => r.shares.client ?? 0, ''),
          cpuRow(
            `${label}: generator`,
            door,
            proxied,
            direct,
            (r) => r.shares.generator ?? 0,
            'load generator (parent process)',
          ),
          cpuRow(
            `${label}: benchmark processes`,
            door,
            proxied,
            direct,
            total,
            `of ${cpus().length * 100}%; whole machine ${summarize(proxied.map((r) => r.machine)).median.toFixed(0)}%`,
          ),
        );
        context.notes.push(verdict(workload, door, proxied));
      }
    }
    return rows;
  },
};

/**
 * The evidence that the generator is not the bottleneck, per workload: its CPU share during
 * the proxied runs, and how much faster the same generator code ran directly.
 */
export function generatorCheck(records: readonly CpuRecord[]): string[] {
  const lines: string[] = [];
  const workloads = [...new Set(records.map((record) => record.workload))];
  for (const workload of workloads) {
    const runs = records.filter((record) => record.workload === workload);
    const direct = runs.filter((record) => record.door === 'direct');
    const proxied = runs.filter((record) => record.door !== 'direct');
    if (direct.length === 0 || proxied.length === 0) continue;
    const busiest = Math.max(...shares(proxied, 'generator'));
    const directShare = Math.max(...shares(direct, 'generator'));
    const proxiedSeconds = summarize(proxied.map((record) => record.seconds)).median;
    const directSeconds = summarize(direct.map((record) => record.seconds)).median;
    lines.push(
      `Generator check, ${workload}: the generator used at most ${busiest.toFixed(0)}% of one core during proxied runs and up to ${directShare.toFixed(0)}% during direct runs` +
        (workload.startsWith('bulk')
          ? ` (direct transfers took ${(directSeconds / proxiedSeconds).toFixed(2)}× the proxied time).`
          : '.'),
    );
  }
  return lines;
}
