import type { Logger } from '@dunix/proto';
import type { Clock } from './clock.js';
import { HeldLease } from './held-lease.js';
import type { CoordinatorKnobs } from './knobs.js';
import type { KvBackend, KvEntry } from './kv.js';

/** Who leads a volume's controller election, as one candidate sees it. */
export interface ElectionState {
  /** This candidate holds the controller key with a lease confirmed within ttl - fenceMarginMs. */
  leading: boolean;
  /** The id in the controller key, or undefined while nobody holds it (or it could not be read). */
  leaderId: string | undefined;
}

/** One candidate's standing in a volume's controller election (Coordinator.campaign). */
export interface Campaign {
  state(): ElectionState;
  /** Leaves the election: revokes the election lease, so another candidate wins at once. Idempotent. */
  resign(): Promise<void>;
}

/** The record in the controller key. */
export interface ControllerRecord {
  id: string;
  sinceMs: number;
}

export function parseControllerRecord(e: KvEntry): ControllerRecord {
  const v = JSON.parse(e.value) as ControllerRecord;
  if (typeof v !== 'object' || v === null || typeof v.id !== 'string') {
    throw new Error(`malformed control-plane record at ${e.key}: not a controller record`);
  }
  return v;
}

/**
 * Leader election on one key: a candidate creates the key bound to its own
 * lease in a create-only transaction (mod revision 0); whoever created it
 * leads until its lease ends (expiry, revoke, resign). Every candidate
 * watches the key and tries again when it goes. A leader whose lease goes
 * unconfirmed for ttl - fenceMarginMs stops leading (another candidate may
 * have won after an expiry it has not heard of) and reclaims the lead if a
 * later keepalive shows the key is still its own.
 */
export class KvCampaign implements Campaign {
  private current: ElectionState = { leading: false, leaderId: undefined };
  private held: HeldLease | undefined;
  private cancelWatch: (() => Promise<void>) | undefined;
  private closed = false;
  private running = false;
  private again = false;
  private retryTimer: unknown;

  constructor(
    private readonly kv: KvBackend,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly knobs: CoordinatorKnobs,
    private readonly key: string,
    private readonly candidateId: string,
    private readonly ttlMs: number,
    private readonly onChange: (s: ElectionState) => void,
    private readonly ctx: Record<string, unknown>,
  ) {}

  /** Grants the lease, starts watching and makes the first attempt (settled before it resolves). */
  async start(): Promise<void> {
    const sentAt = this.clock.now();
    const lease = await this.kv.grantLease(this.ttlMs);
    this.held = new HeldLease(
      this.kv,
      this.clock,
      this.log,
      this.knobs,
      this.ttlMs,
      lease,
      sentAt,
      this.ctx,
      {
        bind: () => this.attemptNow(),
        onLost: () => this.set({ leading: false, leaderId: this.current.leaderId }),
        onUnconfirmed: () => this.set({ leading: false, leaderId: this.current.leaderId }),
        onConfirmed: () => this.kick(),
      },
    );
    try {
      this.cancelWatch = await this.kv.watchPrefix(this.key, () => this.kick());
      await this.attemptNow();
    } catch (e) {
      await this.end(true);
      throw e;
    }
  }

  state(): ElectionState {
    return { ...this.current };
  }

  resign(): Promise<void> {
    return this.end(true);
  }

  /** Stops without revoking: the lease expires as after a crash. */
  abandon(): Promise<void> {
    return this.end(false);
  }

  private async end(revoke: boolean): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.retryTimer !== undefined) this.clock.clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    const held = this.held;
    held?.cancel();
    await this.cancelWatch?.().catch(() => undefined);
    if (revoke && held) {
      await held.revoke().catch((e: unknown) => {
        this.log.warn('election lease revoke failed; it will expire', { ...this.ctx, err: e });
      });
    }
    this.emit({ leading: false, leaderId: this.current.leading ? undefined : this.current.leaderId });
  }

  private set(s: ElectionState): void {
    if (this.closed) return;
    this.emit(s);
  }

  private emit(s: ElectionState): void {
    if (s.leading === this.current.leading && s.leaderId === this.current.leaderId) return;
    const was = this.current;
    this.current = s;
    if (s.leading !== was.leading) {
      this.log.info(s.leading ? 'elected controller' : 'no longer controller', { ...this.ctx });
    }
    try {
      this.onChange({ ...s });
    } catch (e) {
      this.log.error('BUG: election listener threw', { ...this.ctx, err: e });
    }
  }

  /** Runs an attempt now, or right after the one in progress. */
  private kick(): void {
    if (this.closed) return;
    if (this.running) {
      this.again = true;
      return;
    }
    void this.attemptNow().catch((e: unknown) => {
      if (this.closed) return;
      this.log.warn('controller election attempt failed; retrying', { ...this.ctx, err: e });
      this.retryLater();
    });
  }

  /** One more attempt after regrantRetryMs (at most one pending). */
  private retryLater(): void {
    if (this.closed || this.retryTimer !== undefined) return;
    this.retryTimer = this.clock.setTimeout(() => {
      this.retryTimer = undefined;
      this.kick();
    }, this.knobs.regrantRetryMs);
  }

  /** Attempts until no change arrived meanwhile. Throws on a store error. */
  private async attemptNow(): Promise<void> {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    try {
      do {
        this.again = false;
        if (this.closed) return;
        await this.attemptOnce();
      } while (this.again);
    } finally {
      this.running = false;
    }
  }

  private async attemptOnce(): Promise<void> {
    const held = this.held!;
    const e = await this.kv.get(this.key);
    if (e) {
      const r = parseControllerRecord(e);
      const mine = r.id === this.candidateId && e.lease === held.lease;
      this.set({ leading: mine && held.healthy(), leaderId: r.id });
      return;
    }
    this.set({ leading: false, leaderId: undefined });
    if (!held.healthy()) {
      // Only a confirmed lease may take the key. Look again soon: a lease being replaced is held
      // only once its bind (this attempt) has returned, and no watch event may come to wake us
      // (found by CI: a candidate whose lease was being replaced when the key went never led).
      this.retryLater();
      return;
    }
    const lease = held.lease;
    const record: ControllerRecord = { id: this.candidateId, sinceMs: this.clock.now() };
    const won = await this.kv.txn(
      [{ key: this.key, modRevision: 0 }],
      [{ key: this.key, value: JSON.stringify(record), lease }],
    );
    // Lost the race: the next read names the winner.
    if (!won) this.again = true;
    else this.set({ leading: held.healthy() && held.lease === lease, leaderId: this.candidateId });
  }
}
