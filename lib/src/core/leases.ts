/**
 * Keeps the token calls of running handlers reserved (issue 14 A4), for the
 * Express and MCP adapters.
 *
 * Every quarter of a lease, the lease of each call whose handler has not
 * answered yet is renewed (`Store.renewCall`), so a handler slower than
 * `tokenLeaseMs` cannot have its call reserved a second time. One timer for
 * all calls, running only while some are tracked.
 *
 * The rule when renewals cannot get through (a store outage): a call is held
 * only until the end of the last lease the store granted (its reservation or
 * its last renewal). Once a tick finds that end less than a tick and a half
 * away (the renewals of the last two ticks did not get through), the call is
 * *lost*: `onLost` runs at least half a tick (an eighth of the lease, which
 * also covers clock skew between instances) before the lease ends, while the
 * store still holds the reservation, so before anyone else can be given the
 * call, and the adapter stops the answer (Express cuts the response, MCP withholds
 * the result and gives the call back). A renewal the store refuses (the
 * reservation is gone) loses the call at once. So an answer is never
 * delivered as paid after its reservation could have lapsed.
 */
import type { Store } from "../state/store.js";
import type { TokenAttempt } from "./engine.js";

interface Held {
  /** When the store's lease on this call ends (from the `now` sent with the reservation or last renewal). */
  heldUntil: number;
  onLost: () => void;
}

export class LeaseKeeper {
  private readonly live = new Map<TokenAttempt, Held>();
  private readonly tickMs: number;
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly store: Store,
    private readonly leaseMs: number,
  ) {
    // a quarter: a renewal may take up to two ticks to answer, or a tick come 1.5 ticks late, before a call is lost
    this.tickMs = Math.floor(leaseMs / 4);
  }

  /** Keep `attempt` reserved; `reservedAt` is the time sent to the store with its reservation; `onLost` runs if the reservation may lapse. */
  track(attempt: TokenAttempt, reservedAt: number, onLost: () => void): void {
    this.live.set(attempt, { heldUntil: reservedAt + this.leaseMs, onLost });
    if (!this.timer) {
      this.timer = setInterval(this.tick, this.tickMs);
      this.timer.unref();
    }
  }

  untrack(attempt: TokenAttempt): void {
    this.live.delete(attempt);
  }

  private lose(attempt: TokenAttempt, held: Held): void {
    if (this.live.get(attempt) !== held) return; // answered meanwhile
    this.live.delete(attempt);
    try {
      held.onLost();
    } catch {
      // the adapter's reaction must not stop the timer
    }
  }

  private readonly tick = (): void => {
    if (this.live.size === 0) {
      clearInterval(this.timer);
      this.timer = undefined;
      return;
    }
    const now = Date.now();
    for (const [attempt, held] of this.live) {
      // no renewal got through in time: the next tick could be after the lease ends
      if (now + this.tickMs * 1.5 >= held.heldUntil) {
        this.lose(attempt, held);
        continue;
      }
      try {
        this.store.renewCall(attempt.reservationId, now, this.leaseMs).then(
          (kept) => (kept ? void (held.heldUntil = Math.max(held.heldUntil, now + this.leaseMs)) : this.lose(attempt, held)),
          () => {}, // retried at the next tick; the deadline above decides
        );
      } catch {
        // a store without renewCall: the reservation's own lease is all there is, and the deadline above applies
      }
    }
  };
}
