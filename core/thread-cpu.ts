import { closeSync, openSync, readSync } from 'node:fs';

/**
 * The CPU time of the calling thread so far, in ms, or undefined where the system does not say
 * (Linux only: the first field of /proc/thread-self/schedstat is its time on a CPU, in ns). Wall
 * time is not the same thing for a thread that gives way to others, as run threads do.
 *
 * One file descriptor per thread (module state is per thread): /proc/thread-self names the thread
 * that opened it, and each read from offset 0 gives the figure anew, one system call.
 */
let fd: number | null | undefined;
const buffer = Buffer.alloc(64);

export function threadCpuMs(): number | undefined {
  if (fd === undefined) {
    try {
      fd = openSync('/proc/thread-self/schedstat', 'r');
    } catch {
      fd = null;
    }
  }
  if (fd === null) return undefined;
  try {
    const n = readSync(fd, buffer, 0, buffer.length, 0);
    const ns = Number(buffer.toString('latin1', 0, n).split(' ', 1)[0]);
    return Number.isFinite(ns) ? ns / 1e6 : undefined;
  } catch {
    closeSync(fd);
    fd = null;
    return undefined;
  }
}
