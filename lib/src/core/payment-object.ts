/** The prepaid payment object as server402 publishes it (field names are part of the API). */
import { paymentStatus, type PaymentStatus, type StoredPayment } from "../state/store.js";

export interface PublicPayment {
  paymentId: string;
  serviceId: string;
  status: PaymentStatus;
  amountCents: number;
  /** Price in the asset's smallest unit, integer string. */
  amount: string;
  currency: string;
  billingMode: "per_call";
  maxCalls: number;
  callsRemaining: number;
  /** ISO 8601. */
  expiresAt: string;
  paidAt: string | null;
  payTo: string;
  provider: string | null;
  transaction: string | null;
  network: string | null;
  createdAt: string;
  /** Only in the creation answer. */
  token?: string;
}

/** Render a stored payment for clients (never includes the token hash). */
export function toPublicPayment(p: StoredPayment, now: number): PublicPayment {
  return {
    paymentId: p.paymentId,
    serviceId: p.serviceId,
    status: paymentStatus(p, now),
    amountCents: p.amountCents,
    amount: p.amountAtomic,
    currency: p.currency,
    billingMode: p.billingMode,
    maxCalls: p.maxCalls,
    callsRemaining: Math.max(0, p.maxCalls - p.callsUsed),
    expiresAt: new Date(p.expiresAt).toISOString(),
    paidAt: p.paidAt ? new Date(p.paidAt).toISOString() : null,
    payTo: p.payTo,
    provider: p.provider ?? null,
    transaction: p.transaction ?? null,
    network: p.network ?? null,
    createdAt: new Date(p.createdAt).toISOString(),
  };
}
