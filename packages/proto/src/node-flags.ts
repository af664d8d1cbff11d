/**
 * Node options every brickd is started with (the test harness, `npm start`,
 * the benchmarks, the installed `brickd` command and so its systemd unit).
 *
 * Why: V8 sizes the old generation for the machine (a 4 GiB heap limit on
 * this 24 GiB host) and then lets it grow to up to 4x what survived the
 * last full collection before collecting again. A brick's live heap is
 * ~40 MiB with 100,000 files, but it allocates fast (every RPC, entry and
 * store batch) and what lives for a group-commit window is promoted, so
 * its heap grew to 130-160 MiB of mostly garbage and its resident memory
 * peaked at 310-335 MiB in the 100,000-file check, over the 300 MiB limit.
 * A smaller old-space limit makes V8 grow the heap by less between full
 * collections (its growing factor shrinks with the limit): 224-233 MiB
 * peaks in the same check with 384 MiB (213-245 with 256; ARCHITECTURE.md,
 * "Memory"). The limit is ~10x the live heap, so a brick meets it only
 * when far over its memory budget anyway; one started without it says so
 * at start.
 */
export const BRICKD_OLD_SPACE_MIB = 384;
export const brickdNodeFlags: readonly string[] = [`--max-old-space-size=${BRICKD_OLD_SPACE_MIB}`];
