import { readFileSync } from 'node:fs';

/**
 * A process's CPU time so far (user + system, every thread), in ms, from /proc (Linux); NaN
 * elsewhere. Steadier than wall time on a shared machine.
 */
export function cpuMs(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    // utime and stime are fields 14 and 15 of the line, in clock ticks (100 a second on Linux).
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
  } catch {
    return NaN;
  }
}
