/**
 * Child process for the SQLite crash test: opens the store at argv[2], creates
 * a paid 1-call payment, reserves its call with a 60 s lease, prints
 * `READY <json>` and blocks until the parent kills it with SIGKILL.
 */
import { SqliteStore } from "../../lib/src/state/sqlite.js";
import { generatePaymentToken, hashToken } from "../../lib/src/state/tokens.js";
import { samplePayment } from "../store-conformance.js";

const store = new SqliteStore({ path: process.argv[2] });
const now = Date.now();
const tokenHash = hashToken(generatePaymentToken());
const payment = samplePayment({ tokenHash, createdAt: now, expiresAt: now + 3600_000 });
const { paymentId } = payment;
await store.createPayment(payment);
await store.markPaid(paymentId, { paidAt: now, transaction: "0xpaid" });
const leaseMs = 60_000;
const r = await store.reserveCall(tokenHash, "svc", now, leaseMs);
if (!r.ok) throw new Error(`reserve failed: ${r.reason}`);
process.stdout.write(`READY ${JSON.stringify({ paymentId, tokenHash, leaseUntil: now + leaseMs, reservationId: r.reservationId })}\n`);
// Block with the store open (no close, no exit) until killed.
setInterval(() => {}, 1 << 30);
