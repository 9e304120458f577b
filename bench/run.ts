/**
 * `npm run bench`: starts the gateway, the client, the targets and a second load generator as
 * separate processes on 127.0.0.1, runs every workload through each front door and directly,
 * prints the table and writes it with the raw runs to bench/results/<timestamp>.json.
 *
 * Options: --quick (small sizes, < 1 minute), --runs N (default 3), --only a,b (workload names;
 * `external`, which needs hey and nginx, runs only when named), --cpu-prof DIR (gateway and
 * client write V8 CPU profiles to DIR).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inspect, parseArgs } from 'node:util';
import { bulkWorkload, download, upload } from './bulk.js';
import { connectionRate, connectionsWorkload } from './connections.js';
import { generatorCheck, multicoreWorkload } from './cpu.js';
import { type Door, openDoor } from './doors.js';
import { externalWorkload } from './external.js';
import { fairnessWorkload } from './fairness.js';
import { formatJson } from './json.js';
import { latencyWorkload } from './latency.js';
import { streamsWorkload } from './streams.js';
import { BenchSystem } from './system.js';
import { type Row, renderTable } from './table.js';
import { wanWorkload } from './wan.js';
import {
  doorsWithBaseline,
  endpoint,
  PROFILES,
  type Profile,
  type Workload,
  type WorkloadContext,
} from './workload.js';

/**
 * In the order they run. Streams goes last of the measuring ones because it replaces gateway
 * and client with fresh processes; multicore reads the CPU use the others recorded.
 */
const WORKLOADS: readonly Workload[] = [
  bulkWorkload,
  connectionsWorkload,
  externalWorkload,
  latencyWorkload,
  fairnessWorkload,
  wanWorkload,
  streamsWorkload,
  multicoreWorkload,
];

const RESULTS_DIR = fileURLToPath(new URL('../../bench/results/', import.meta.url));
const WARMUP_BYTES = 32 * 1024 * 1024;
/** Load average per core above which a run is flagged as disturbed by other work. */
const BUSY_LOAD = 0.25;

interface Options {
  profile: Profile;
  workloads: readonly Workload[];
  cpuProfileDir: string | undefined;
}

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      runs: { type: 'string' },
      only: { type: 'string' },
      'cpu-prof': { type: 'string' },
    },
  });
  const base = PROFILES[values.quick ? 'quick' : 'default'];
  const runs = values.runs === undefined ? base.runs : Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs must be a whole number ≥ 1`);
  const names = values.only?.split(',').map((name) => name.trim());
  const unknown = names?.filter((name) => !WORKLOADS.some((w) => w.name === name)) ?? [];
  if (unknown.length > 0) {
    throw new Error(
      `unknown workload ${unknown.join(', ')}; known: ${WORKLOADS.map((w) => w.name).join(', ')}`,
    );
  }
  const workloads = names
    ? WORKLOADS.filter((w) => names.includes(w.name))
    : WORKLOADS.filter((w) => !w.optIn);
  for (const workload of workloads) workload.preflight?.();
  return {
    profile: { ...base, runs },
    workloads,
    cpuProfileDir: values['cpu-prof'] && resolve(values['cpu-prof']),
  };
}

function machine() {
  const processors = cpus();
  return {
    node: process.version,
    platform: `${process.platform} ${process.arch}`,
    cores: processors.length,
    cpuModel: processors[0]?.model.trim() ?? 'unknown',
    memoryGiB: Math.round(totalmem() / 1024 ** 3),
    /** 1-minute load average when the run started: other work on the machine skews figures. */
    loadBefore: Number(loadavg()[0]!.toFixed(2)),
  };
}

/**
 * Unrecorded traffic through every door and both bare relays (each for the workload it is a
 * baseline of), so every path is compiled before the clock runs.
 */
async function warmUp(context: WorkloadContext): Promise<void> {
  const { bulkTarget, echoTarget, tlsPipe, socks5Relay } = context.system;
  const bulk = async (door: Door) => {
    await download(door, endpoint(bulkTarget.ready.sourcePort), WARMUP_BYTES);
    await upload(door, endpoint(bulkTarget.ready.sinkPort), WARMUP_BYTES);
  };
  const connections = (door: Door) =>
    connectionRate(door, endpoint(echoTarget.ready.echoPort), 50, 0.5);
  for (const { spec } of doorsWithBaseline(context)) {
    await bulk(openDoor(spec));
    await connections(openDoor(spec));
  }
  await bulk(openDoor(tlsPipe));
  await connections(openDoor(socks5Relay));
  await context.system.idle();
}

async function main(): Promise<void> {
  const options = parseOptions();
  const started = new Date();
  const host = machine();
  const progress = (line: string) => process.stderr.write(`${line}\n`);
  progress(
    `postern bench (${options.profile.name}): node ${host.node}, ${host.cores} cores, ${host.cpuModel}`,
  );
  const system = await BenchSystem.start({ cpuProfileDir: options.cpuProfileDir });
  const context: WorkloadContext = {
    system,
    profile: options.profile,
    cpu: [],
    notes: [],
    progress,
  };
  const rows: Row[] = [];
  try {
    await warmUp(context);
    for (const workload of options.workloads) {
      const began = performance.now();
      rows.push(...(await workload.run(context)));
      progress(`${workload.name} done in ${((performance.now() - began) / 1000).toFixed(1)} s`);
    }
  } finally {
    await system.close();
  }
  const notes = [...context.notes, ...generatorCheck(context.cpu)];
  if (host.loadBefore >= BUSY_LOAD * host.cores) {
    notes.push(
      `The machine was already busy when the run started (1-minute load average ${host.loadBefore} on ${host.cores} cores): other work shares the cores, so figures are likely low and noisy.`,
    );
  }
  const seconds = (Date.now() - started.getTime()) / 1000;
  const header =
    `Postern benchmark, ${options.profile.name} profile, ${started.toISOString()}: node ${host.node}, ` +
    `${host.platform}, ${host.cores} cores (${host.cpuModel}), ${host.memoryGiB} GiB RAM, ` +
    `load average ${host.loadBefore} at start; ` +
    `each figure is the median of ${options.profile.runs} runs (min–max); SOCKS5 load from the ` +
    `hand-rolled client in bench/socks5-client.ts; total ${seconds.toFixed(0)} s.`;
  process.stdout.write(
    `${header}\n\n${renderTable(rows)}\n\n${notes.map((n) => `- ${n}`).join('\n')}\n`,
  );
  mkdirSync(RESULTS_DIR, { recursive: true });
  const file = resolve(RESULTS_DIR, `${started.toISOString().replaceAll(':', '-')}.json`);
  writeFileSync(
    file,
    formatJson({
      startedAt: started.toISOString(),
      seconds,
      profile: options.profile,
      machine: host,
      socks5Client: 'bench/socks5-client.ts (hand-rolled, username/password, no pipelining)',
      rows,
      notes,
      cpu: context.cpu,
    }),
  );
  progress(`results written to ${file}`);
}

// A run ended by SIGINT or SIGTERM leaves through process.exit, so that 'exit' handlers run:
// nginx, which has no IPC channel to notice its parent is gone, is killed there. Forked
// children close by themselves when their channel drops.
for (const [signal, number] of [
  ['SIGINT', 2],
  ['SIGTERM', 15],
] as const) {
  process.once(signal, () => {
    process.stderr.write(`bench interrupted by ${signal}\n`);
    process.exit(128 + number);
  });
}

main().catch((error: unknown) => {
  process.stderr.write(`bench failed: ${inspect(error)}\n`);
  process.exitCode = 1;
});
