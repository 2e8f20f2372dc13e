/**
 * Child process for the SQLite crash test: opens the store at argv[2], creates
 * a paid 1-call payment, reserves its call with a 60 s lease, prints
 * `READY <json>` and blocks until the parent kills it with SIGKILL.
 */
import { SqliteStore } from "../../lib/src/state/sqlite.js";
import { generatePaymentToken, hashToken, newPaymentId } from "../../lib/src/state/tokens.js";

const store = new SqliteStore({ path: process.argv[2] });
const now = Date.now();
const paymentId = newPaymentId();
const tokenHash = hashToken(generatePaymentToken());
await store.createPayment({
  paymentId,
  serviceId: "svc",
  tokenHash,
  status: "pending",
  amountCents: 5,
  amountAtomic: "50000",
  currency: "USD",
  billingMode: "per_call",
  maxCalls: 1,
  callsUsed: 0,
  expiresAt: now + 3600_000,
  createdAt: now,
  payTo: "0x1111111111111111111111111111111111111111",
});
await store.markPaid(paymentId, { paidAt: now, transaction: "0xpaid" });
const leaseMs = 60_000;
const r = await store.reserveCall(tokenHash, "svc", now, leaseMs);
if (!r.ok) throw new Error(`reserve failed: ${r.reason}`);
process.stdout.write(`READY ${JSON.stringify({ paymentId, tokenHash, leaseUntil: now + leaseMs, reservationId: r.reservationId })}\n`);
// Block with the store open (no close, no exit) until killed.
setInterval(() => {}, 1 << 30);
