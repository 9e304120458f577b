/**
 * Connection rate with third-party tools, opt-in (`--only external`): hey, a load generator
 * written in Go, makes HTTP requests with keep-alive off, 100 at a time, to nginx, which closes
 * every connection after its reply. It runs directly (the baseline), through the SOCKS5 door
 * (hey's socks5:// proxy), through the HTTP door (absolute-form GET: the forward-proxy path, not
 * CONNECT) and through the bare SOCKS5 relay. The tools share no code with Postern or with the
 * hand-rolled generator, and the target closes first, as web servers do.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { ceilingNote, cpuPerConnection, medianOf, relayNote, TARGETS } from './connections.js';
import { DIRECT, type DoorSpec, openDoor } from './doors.js';
import { Nginx } from './nginx.js';
import { processCpuMicros } from './proc-stat.js';
import { summarize } from './stats.js';
import type { ProcessName } from './system.js';
import type { Row } from './table.js';
import { measureCpu, type Workload, type WorkloadContext } from './workload.js';

const PARALLEL = 100;
const TOOLS = ['hey', 'nginx'];

interface HeyResult {
  perSecond: number;
  ok: number;
  failed: number;
  firstFailure: string | undefined;
  /** CPU hey used, microseconds (undefined off Linux). */
  cpuMicros: number | undefined;
}

function onPath(command: string): boolean {
  return (process.env.PATH ?? '').split(delimiter).some((dir) => existsSync(join(dir, command)));
}

/** Reads hey's summary: the request rate, the status codes and the error lines. */
export function parseHeySummary(text: string): Omit<HeyResult, 'cpuMicros'> {
  const rate = /Requests\/sec:\s+([\d.]+)/.exec(text);
  if (!rate) throw new Error(`hey printed no request rate:\n${text}`);
  let ok = 0;
  let failed = 0;
  let firstFailure: string | undefined;
  for (const [, code, count] of text.matchAll(/\[(\d{3})\]\s+(\d+) responses/g)) {
    if (code === '200') ok += Number(count);
    else {
      failed += Number(count);
      firstFailure ??= `status ${code}`;
    }
  }
  const errors = /Error distribution:\n([\s\S]*)/.exec(text)?.[1] ?? '';
  for (const [, count, message] of errors.matchAll(/\[(\d+)\]\s+(.+)/g)) {
    failed += Number(count);
    firstFailure ??= message!.trim();
  }
  return { perSecond: Number(rate[1]), ok, failed, firstFailure };
}

async function runHey(url: string, proxy: string | undefined, seconds: number): Promise<HeyResult> {
  const args = ['-z', `${Math.round(seconds * 1000)}ms`, '-c', String(PARALLEL)];
  args.push('-disable-keepalive', ...(proxy ? ['-x', proxy] : []), url);
  const cpuBefore = processCpuMicros('self', true);
  const hey = spawn('hey', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  hey.stdout.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  hey.stderr.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  const [code] = (await once(hey, 'close')) as [number | null];
  if (code !== 0) throw new Error(`hey ${args.join(' ')} exited with ${code}:\n${output}`);
  const cpuAfter = processCpuMicros('self', true);
  const cpuMicros =
    cpuBefore === undefined || cpuAfter === undefined ? undefined : cpuAfter - cpuBefore;
  return { ...parseHeySummary(output), cpuMicros };
}

type Measured = HeyResult & {
  /** CPU per completed request by process, microseconds (hey and nginx undefined off Linux). */
  perRequest: Partial<Record<ProcessName | 'hey' | 'nginx', number>>;
  /** hey's CPU in percent of one core. */
  heyShare: number | undefined;
};

/** The proxy URL hey takes for a door: its scheme, the benchmark's credentials, host and port. */
function proxyUrl(spec: DoorSpec): string | undefined {
  if (spec.kind === 'direct' || spec.kind === 'tls-pipe') return undefined;
  const { username, password, host, port } = spec.proxy;
  const scheme = spec.kind === 'http-connect' ? 'http' : 'socks5';
  return `${scheme}://${username}:${password}@${host}:${port}`;
}

export const externalWorkload: Workload = {
  name: 'external',
  optIn: true,
  preflight(): void {
    const missing = TOOLS.filter((tool) => !onPath(tool));
    if (missing.length > 0) {
      throw new Error(
        `the external workload needs ${missing.join(' and ')} on PATH (Debian: apt-get install hey nginx)`,
      );
    }
  },
  async run(context: WorkloadContext): Promise<Row[]> {
    const { system, profile } = context;
    const relaySpec = system.socks5Relay;
    const relay = openDoor(relaySpec).name;
    const ways = [DIRECT, ...system.doors, relaySpec].map((spec) => {
      const name = openDoor(spec).name;
      // Through the HTTP door hey sends absolute-form GETs, not CONNECT: named for what it is.
      return { name: name === 'http-connect' ? 'http-proxy GET' : name, proxy: proxyUrl(spec) };
    });
    const nginx = await Nginx.start();
    const runs = new Map<string, Measured[]>();
    try {
      const url = `http://127.0.0.1:${nginx.port}/`;
      for (let run = 1; run <= profile.runs; run++) {
        for (const way of ways) {
          const nginxBefore = nginx.cpuMicros();
          const { result, record } = await measureCpu(context, 'external', way.name, () =>
            runHey(url, way.proxy, profile.connectionSeconds),
          );
          const nginxAfter = nginx.cpuMicros();
          // Per completed request, as the connections workload counts.
          const requests = result.ok;
          const nginxMicros =
            nginxBefore === undefined || nginxAfter === undefined
              ? undefined
              : nginxAfter - nginxBefore;
          const perConnection = (micros: number | undefined) =>
            micros === undefined ? undefined : micros / Math.max(1, requests);
          const measured: Measured = {
            ...result,
            perRequest: {
              ...cpuPerConnection(record, requests),
              hey: perConnection(result.cpuMicros),
              nginx: perConnection(nginxMicros),
            },
            heyShare:
              result.cpuMicros === undefined
                ? undefined
                : (100 * result.cpuMicros) / (record.seconds * 1e6),
          };
          runs.set(way.name, [...(runs.get(way.name) ?? []), measured]);
          await system.idle();
          context.progress(
            `external (hey → nginx) x${PARALLEL} ${way.name} run ${run}: ${result.perSecond.toFixed(0)}/s` +
              (result.failed > 0 ? ` (${result.failed} failed: ${result.firstFailure})` : ''),
          );
        }
      }
    } finally {
      await nginx.close();
    }
    const of = (name: string) => runs.get(name)!;
    const rate = (name: string) => summarize(of(name).map(({ perSecond }) => perSecond));
    const cpu = (name: string, process: keyof Measured['perRequest']) => {
      const known = of(name).flatMap(({ perRequest }) => perRequest[process] ?? []);
      return known.length === 0 ? '?' : medianOf(known);
    };
    const cpuOfRuns = (name: string) => of(name).map(({ perRequest }) => perRequest);
    const failures = (name: string) => of(name).reduce((sum, { failed }) => sum + failed, 0);
    // hey's CPU is its own, not the parent's: kept out of context.cpu and the generator check.
    const heyShares = (proxied: boolean) =>
      ways
        .filter((way) => (way.name !== 'direct') === proxied)
        .flatMap((way) => of(way.name).map(({ heyShare }) => heyShare ?? 0));
    if (heyShares(true).some((share) => share > 0)) {
      context.notes.push(
        `Generator check, hey → nginx: hey used at most ${Math.max(...heyShares(true)).toFixed(0)}% of one core during proxied runs and up to ${Math.max(...heyShares(false)).toFixed(0)}% during direct runs (hey runs on every core).`,
      );
    }
    return ways
      .filter((way) => way.name !== 'direct' && way.name !== relay)
      .map((way): Row => {
        const results = of(way.name);
        const ok = results.reduce((sum, result) => sum + result.ok, 0);
        const failed = failures(way.name);
        const firstFailure = results.find((result) => result.firstFailure)?.firstFailure;
        const againstRelay =
          way.name === 'socks5'
            ? `; ${relayNote(rate(relay).median, cpu(relay, 'socks5 relay'), failures(relay), rate(way.name).median, ceilingNote(cpuOfRuns(relay)))}`
            : '';
        return {
          workload: `New connections, ${PARALLEL} parallel, hey → nginx`,
          door: way.name,
          unit: '/s',
          postern: rate(way.name),
          direct: rate('direct'),
          target: way.name === 'socks5' ? (TARGETS[PARALLEL] ?? null) : null,
          note:
            `${ok.toLocaleString('en-US')} answered 200` +
            (failed > 0 ? `, ${failed} FAILED (${firstFailure})` : '') +
            `; CPU per connection: gateway ${cpu(way.name, 'gateway')} µs, client ${cpu(way.name, 'client')} µs, ` +
            `hey ${cpu(way.name, 'hey')} µs, nginx ${cpu(way.name, 'nginx')} µs, ${ceilingNote(cpuOfRuns(way.name))} (direct: hey ${cpu('direct', 'hey')} µs, nginx ${cpu('direct', 'nginx')} µs)` +
            againstRelay,
        };
      });
  },
};
