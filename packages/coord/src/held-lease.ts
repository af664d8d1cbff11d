import type { Logger } from '@dunix/proto';
import type { Clock } from './clock.js';
import type { CoordinatorKnobs } from './knobs.js';
import type { KvBackend } from './kv.js';

/**
 * How sure a lease holder can be that its lease is still alive in etcd.
 * Times are readings of the coordinator's injected clock.
 *
 * Fencing rule (`leaseFenced`): a brick acting on what its lease gives it
 * (a primary acknowledging writes) must stop as soon as
 *
 * - `now - confirmedAtMs > ttlMs - margin`: etcd may have expired the lease
 *   and the controller may have replaced the brick (the margin covers clock
 *   rate differences and etcd's expiry check), or
 * - `lost`: the lease is known gone and no replacement is in place, or
 * - `now - reboundAtMs < ttlMs`: the lease was replaced after a loss; the
 *   controller may still be acting on the loss (dropping the brick from
 *   in-sync sets), so whatever the brick held under the old lease waits
 *   until the placement it watches has caught up.
 */
export interface LeaseHealth {
  lease: string;
  ttlMs: number;
  /**
   * When the last successful grant or keepalive of the current lease was
   * sent: etcd restarted the TTL no earlier than this.
   */
  confirmedAtMs: number;
  /** The lease was found gone (expired or revoked) and its replacement is not bound yet. */
  lost: boolean;
  /** When a replacement lease was last bound after a loss; undefined if the first lease still holds. */
  reboundAtMs: number | undefined;
}

/** True when the holder must act as if it had no lease (see LeaseHealth). */
export function leaseFenced(h: LeaseHealth | undefined, nowMs: number, marginMs: number): boolean {
  if (!h || h.lost) return true;
  if (nowMs - h.confirmedAtMs > h.ttlMs - marginMs) return true;
  return h.reboundAtMs !== undefined && nowMs - h.reboundAtMs < h.ttlMs;
}

export interface HeldLeaseHooks {
  /** Writes the holder's keys bound to a replacement lease. Throws to be retried. */
  bind(lease: string): Promise<void>;
  /** The lease was found gone; a replacement is being granted. */
  onLost?(): void;
  /** The lease has gone unconfirmed for ttl - fenceMarginMs (only armed when this hook is given). */
  onUnconfirmed?(): void;
  /** A keepalive confirmed the lease again after onUnconfirmed. */
  onConfirmed?(): void;
}

/**
 * A lease this session keeps alive: a keepalive every keepaliveIntervalMs;
 * when the lease is found gone, a new one is granted and bound (the holder
 * writes its keys again) until cancelled.
 */
export class HeldLease {
  private state: 'held' | 'lost' | 'granted' = 'held';
  private confirmedAtMs: number;
  private grantSentAtMs: number;
  private reboundAtMs: number | undefined;
  private timer: unknown;
  private fenceTimer: unknown;
  private unconfirmed = false;
  private cancelled = false;

  constructor(
    private readonly kv: KvBackend,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly knobs: CoordinatorKnobs,
    readonly ttlMs: number,
    /** The current lease id. */
    public lease: string,
    /** When the grant of `lease` was sent. */
    grantSentAtMs: number,
    private readonly ctx: Record<string, unknown>,
    private readonly hooks: HeldLeaseHooks,
  ) {
    this.confirmedAtMs = grantSentAtMs;
    this.grantSentAtMs = grantSentAtMs;
    this.armFence();
    this.schedule(knobs.keepaliveIntervalMs);
  }

  health(): LeaseHealth {
    return {
      lease: this.lease,
      ttlMs: this.ttlMs,
      confirmedAtMs: this.confirmedAtMs,
      lost: this.state !== 'held',
      reboundAtMs: this.reboundAtMs,
    };
  }

  /** Held, and confirmed within ttl - fenceMarginMs. */
  healthy(): boolean {
    return this.state === 'held' && !this.unconfirmed;
  }

  /** Stops keepalives; the lease is left to expire. Idempotent. */
  cancel(): void {
    this.cancelled = true;
    for (const t of [this.timer, this.fenceTimer]) if (t !== undefined) this.clock.clearTimeout(t);
    this.timer = undefined;
    this.fenceTimer = undefined;
  }

  /** Stops keepalives and revokes the lease (its keys go at once). */
  async revoke(): Promise<void> {
    this.cancel();
    await this.kv.revokeLease(this.lease);
  }

  private schedule(ms: number): void {
    if (this.cancelled) return;
    this.timer = this.clock.setTimeout(() => {
      this.timer = undefined;
      void this.tick();
    }, ms);
  }

  private armFence(): void {
    if (!this.hooks.onUnconfirmed || this.cancelled) return;
    if (this.fenceTimer !== undefined) this.clock.clearTimeout(this.fenceTimer);
    const due = this.confirmedAtMs + this.ttlMs - this.knobs.fenceMarginMs - this.clock.now();
    this.fenceTimer = this.clock.setTimeout(
      () => {
        this.fenceTimer = undefined;
        if (this.cancelled || this.unconfirmed) return;
        this.unconfirmed = true;
        this.log.warn('lease unconfirmed for its TTL less the fencing margin', {
          ...this.ctx,
          lease: this.lease,
        });
        this.hooks.onUnconfirmed?.();
      },
      Math.max(0, due),
    );
  }

  private confirm(sentAtMs: number): void {
    this.confirmedAtMs = Math.max(this.confirmedAtMs, sentAtMs);
    this.armFence();
    if (this.unconfirmed) {
      this.unconfirmed = false;
      this.hooks.onConfirmed?.();
    }
  }

  /** One step: keepalive; on a lost lease, grant a new one and bind it. Never throws. */
  private async tick(): Promise<void> {
    if (this.cancelled) return;
    const ctx = this.ctx;
    if (this.state === 'held') {
      const sentAt = this.clock.now();
      let alive: boolean;
      try {
        alive = await this.kv.keepalive(
          this.lease,
          Math.min(this.knobs.rpcTimeoutMs, Math.floor(this.ttlMs / 3)),
        );
      } catch (e) {
        if (!this.cancelled) this.log.warn('lease keepalive failed; retrying', { ...ctx, err: e });
        this.schedule(this.knobs.keepaliveIntervalMs);
        return;
      }
      if (this.cancelled) return;
      if (alive) {
        this.confirm(sentAt);
        this.schedule(this.knobs.keepaliveIntervalMs);
        return;
      }
      this.log.warn('lease lost; granting a new one', { ...ctx, lease: this.lease });
      this.state = 'lost';
      this.hooks.onLost?.();
    }
    if (this.state === 'lost') {
      try {
        const sentAt = this.clock.now();
        const lease = await this.kv.grantLease(this.ttlMs);
        if (this.cancelled) {
          await this.kv.revokeLease(lease).catch(() => undefined);
          return;
        }
        this.lease = lease;
        this.grantSentAtMs = sentAt;
        this.state = 'granted';
      } catch (e) {
        if (this.cancelled) return;
        this.log.warn('lease re-grant failed; retrying', { ...ctx, err: e });
        this.schedule(this.knobs.regrantRetryMs);
        return;
      }
    }
    if (this.state === 'granted') {
      try {
        await this.hooks.bind(this.lease);
      } catch (e) {
        if (this.cancelled) return;
        // Bound next time; if the new lease is lost meanwhile, binding fails and the next tick finds out.
        this.log.warn('binding the new lease failed; retrying', { ...ctx, lease: this.lease, err: e });
        this.state = (await this.kv.keepalive(this.lease, this.knobs.rpcTimeoutMs).catch(() => true))
          ? 'granted'
          : 'lost';
        this.schedule(this.knobs.regrantRetryMs);
        return;
      }
      if (this.cancelled) return;
      this.state = 'held';
      this.reboundAtMs = this.clock.now();
      this.confirmedAtMs = this.grantSentAtMs;
      this.log.info('lease replaced', { ...ctx, lease: this.lease });
      this.confirm(this.grantSentAtMs);
      this.schedule(this.knobs.keepaliveIntervalMs);
    }
  }
}
