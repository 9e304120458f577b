/** CPU time of processes the benchmark did not fork with an IPC channel (hey, nginx). */
import { readFileSync } from 'node:fs';

/**
 * CPU time of process `pid` so far, in microseconds, from /proc (Linux; undefined elsewhere).
 * `children` counts instead the children it has waited for (cutime and cstime).
 */
export function processCpuMicros(pid: number | 'self', children = false): number | undefined {
  if (process.platform !== 'linux') return undefined;
  // The fields after the command name, which is in parentheses and may hold spaces and ')'.
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(') ') + 2).split(' ');
  // stat(5) numbers utime 14, stime 15, cutime 16, cstime 17; this list starts at field 3.
  const first = children ? 13 : 11;
  // Clock ticks are 1/100 s on Linux (USER_HZ).
  return (Number(fields[first]) + Number(fields[first + 1])) * 10_000;
}
