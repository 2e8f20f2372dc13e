/**
 * The dev wallet: signs with one of anvil's public test keys, which the
 * server publishes at /api/devchain only while the embedded dev chain runs.
 * Loaded on demand (its own chunk), so the page stays light for wallet users.
 */
import { privateKeyToAccount } from "viem/accounts";
import type { Signer } from "./wire.js";

export async function devSigner(): Promise<Signer> {
  const res = await fetch("/api/devchain", { headers: { Accept: "application/json" } });
  if (!res.ok) throw new Error("The dev wallet exists only on the embedded dev chain, and this server does not run one.");
  const chain = (await res.json()) as { payers: { address: string; privateKey: `0x${string}` }[] };
  const payer = chain.payers[0];
  if (!payer) throw new Error("The dev chain has no funded test account.");
  const account = privateKeyToAccount(payer.privateKey);
  return { address: account.address, signTypedData: (td) => account.signTypedData(td) };
}
