/**
 * Prints the functions with the most self time in V8 CPU profiles, e.g. those written by
 * `node dist/bench/run.js --cpu-prof DIR`:
 *
 *   node dist/bench/profile-summary.js DIR/gateway-*.cpuprofile [--top 25]
 */
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { parseArgs } from 'node:util';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** Self time in microseconds per function (name, file, line), largest first. */
export function selfTimes(profile: CpuProfile): { name: string; micros: number }[] {
  const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
  const byFunction = new Map<string, number>();
  profile.samples.forEach((id, index) => {
    const frame = nodes.get(id)?.callFrame;
    if (!frame) return;
    const where = frame.url ? ` ${basename(frame.url)}:${frame.lineNumber + 1}` : '';
    const name = `${frame.functionName || '(anonymous)'}${where}`;
    byFunction.set(name, (byFunction.get(name) ?? 0) + (profile.timeDeltas[index] ?? 0));
  });
  return [...byFunction]
    .map(([name, micros]) => ({ name, micros }))
    .sort((a, b) => b.micros - a.micros);
}

/** V8's name for samples taken while the event loop waited. */
const IDLE = '(idle)';

function main(): void {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { top: { type: 'string', default: '25' } },
  });
  const top = Number(values.top);
  for (const file of positionals) {
    const times = selfTimes(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile);
    const idle = times.find((entry) => entry.name === IDLE)?.micros ?? 0;
    const busy = times.reduce((sum, entry) => sum + entry.micros, 0) - idle;
    process.stdout.write(
      `${basename(file)}: main thread busy ${(busy / 1e6).toFixed(1)} s, idle ${(idle / 1e6).toFixed(1)} s; share of busy time:\n`,
    );
    for (const { name, micros } of times.filter((entry) => entry.name !== IDLE).slice(0, top)) {
      const share = ((100 * micros) / busy).toFixed(1).padStart(5);
      process.stdout.write(`  ${share}%  ${(micros / 1000).toFixed(0).padStart(7)} ms  ${name}\n`);
    }
  }
}

main();
