import { createRequire } from 'node:module';

const M_TRIM_THRESHOLD = -1;
const M_MMAP_THRESHOLD = -3;

/**
 * Keeps large allocations (1 MiB blocks, frames) in glibc's heap instead of
 * fresh mmap'd pages: on the test machine a fresh 1 MiB buffer costs ~0.3 ms
 * of page faults, more than copying into it; reused heap memory costs none.
 * Measured with the environment equivalents: sequential reads ~10% faster.
 * Best effort: without glibc (or koffi) nothing changes.
 */
export function tuneMalloc(
  mmapThresholdBytes = 32 * 1024 * 1024,
  trimThresholdBytes = 128 * 1024 * 1024,
): boolean {
  try {
    const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
    const libc = koffi.load('libc.so.6');
    const mallopt = libc.func('int mallopt(int param, int value)') as (p: number, v: number) => number;
    return (
      mallopt(M_MMAP_THRESHOLD, mmapThresholdBytes) === 1 &&
      mallopt(M_TRIM_THRESHOLD, trimThresholdBytes) === 1
    );
  } catch {
    return false;
  }
}
