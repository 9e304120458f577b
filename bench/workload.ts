/**
 * What every workload shares: the run profile (sizes, durations, number of runs), the running
 * system, and a record of how much CPU each process used during each timed run.
 */
import { type DoorSpec, openDoor } from './doors.js';
import type { Endpoint } from './socks5-client.js';
import { type BenchSystem, cpuShares, machineShare, type ProcessName } from './system.js';
import type { Row } from './table.js';

export interface Profile {
  name: 'default' | 'quick';
  /** Runs per figure; each figure is the median of these. */
  runs: number;
  bulkBytes: number;
  /** How long each connection-rate run keeps opening connections. */
  connectionSeconds: number;
  /** Connections in flight for the connection-rate figures (1 = sequential). */
  parallelism: readonly number[];
  roundTrips: number;
  warmupRoundTrips: number;
  streamCounts: readonly number[];
  /** How long the interactive stream is measured while the bulk stream saturates. */
  fairnessSeconds: number;
  /** How long each download over the long path is measured (bench/wan.ts). */
  wanSeconds: number;
}

export const PROFILES: Record<Profile['name'], Profile> = {
  default: {
    name: 'default',
    runs: 3,
    bulkBytes: 1024 ** 3,
    connectionSeconds: 2,
    parallelism: [1, 50, 100],
    roundTrips: 2_000,
    warmupRoundTrips: 200,
    streamCounts: [1_000, 10_000],
    fairnessSeconds: 3,
    wanSeconds: 2,
  },
  quick: {
    name: 'quick',
    runs: 3,
    bulkBytes: 64 * 1024 ** 2,
    connectionSeconds: 0.3,
    parallelism: [1, 50, 100],
    roundTrips: 300,
    warmupRoundTrips: 50,
    streamCounts: [1_000],
    fairnessSeconds: 1,
    wanSeconds: 0.5,
  },
};

/** CPU use of every process during one timed run, in percent of one core. */
export interface CpuRecord {
  workload: string;
  door: string;
  seconds: number;
  shares: Partial<Record<ProcessName, number>>;
  /** The whole machine, other people's processes included. */
  machine: number;
}

export interface WorkloadContext {
  system: BenchSystem;
  profile: Profile;
  cpu: CpuRecord[];
  /** Findings in words (verdicts, warnings), printed under the table. */
  notes: string[];
  /** Progress for the person watching; goes to stderr. */
  progress(line: string): void;
}

export interface Workload {
  name: string;
  /** Runs only when named in `--only` (it needs tools from outside npm). */
  optIn?: boolean;
  /** Throws, before any process starts, when the workload cannot run on this machine. */
  preflight?(): void;
  run(context: WorkloadContext): Promise<Row[]>;
}

/** The direct baseline followed by every proxied door, each with its name. */
export function doorsWithBaseline(context: WorkloadContext): { spec: DoorSpec; name: string }[] {
  return [{ kind: 'direct' } as DoorSpec, ...context.system.doors].map((spec) => ({
    spec,
    name: openDoor(spec).name,
  }));
}

export function endpoint(port: number): Endpoint {
  return { host: '127.0.0.1', port };
}

/** Runs `timed` between two snapshots; returns its result and each process's CPU share meanwhile. */
export async function measureCpu<T>(
  context: WorkloadContext,
  workload: string,
  door: string,
  timed: () => Promise<T>,
): Promise<{ result: T; record: CpuRecord }> {
  const before = await context.system.snapshot();
  const result = await timed();
  const after = await context.system.snapshot();
  const record = {
    workload,
    door,
    seconds: (after.at - before.at) / 1000,
    shares: Object.fromEntries(cpuShares(before, after)),
    machine: machineShare(before, after),
  };
  return { result, record };
}

/** `measureCpu`, keeping the record for the multi-core analysis and the generator check. */
export async function withCpuRecord<T>(
  context: WorkloadContext,
  workload: string,
  door: string,
  timed: () => Promise<T>,
): Promise<T> {
  const { result, record } = await measureCpu(context, workload, door, timed);
  context.cpu.push(record);
  return result;
}
