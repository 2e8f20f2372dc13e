/** A prepaid token of the example server, paid by the operator's confirmation (needs ADMIN_KEY). */
import assert from "node:assert/strict";

/** The ADMIN_KEY tests start the example server with when they need {@link paidToken}. */
export const TEST_ADMIN_KEY = "admin-key-0123456789abcdef";

/** Create a face-comparison payment and confirm it as the operator. */
export async function paidToken(url: string, adminKey = TEST_ADMIN_KEY): Promise<{ token: string; paymentId: string }> {
  const headers = { "content-type": "application/json" };
  const created = await fetch(`${url}/api/payments`, { method: "POST", headers, body: JSON.stringify({ serviceId: "face-comparison" }) });
  assert.equal(created.status, 201, await created.clone().text());
  const p = await created.json();
  const confirmed = await fetch(`${url}/api/payments/${p.paymentId}/confirm`, { method: "POST", headers: { ...headers, authorization: `Bearer ${adminKey}` }, body: "{}" });
  assert.equal(confirmed.status, 200, await confirmed.clone().text());
  return { token: p.token, paymentId: p.paymentId };
}
