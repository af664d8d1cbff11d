import { createLogger, targetPlacement } from '@dunix/proto';
import {
  type CliIo,
  type Coordinator,
  MemoryCoordinator,
  type MemoryKv,
  placementCandidates,
  run,
  standings,
  type VolumeSnapshot,
} from '../../src/index.js';

const log = createLogger('cli-test', () => undefined);

/** Runs dunixctl against a MemoryCoordinator on `kv`; what it printed and its exit code. */
export async function runCli(
  kv: MemoryKv,
  argv: string[],
  extra: Partial<CliIo> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await run(argv, {
    stdout: (s) => (stdout += s),
    stderr: (s) => (stderr += s),
    connect: (): Coordinator => new MemoryCoordinator({ kv, log }),
    ...extra,
  });
  return { code, stdout, stderr };
}

/** The target placement of a snapshot, as the controller and dunixctl compute it. */
export function targetOf(snap: VolumeSnapshot): string[][] {
  const c = snap.config!;
  return targetPlacement(
    c.pgCount,
    c.replicas,
    placementCandidates(snap, standings(snap, Date.now())),
    snap.placement,
  );
}
