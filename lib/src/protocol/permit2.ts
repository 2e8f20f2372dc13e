/**
 * x402 v2 payments over Permit2 (EVM): scheme `exact` with
 * `extra.assetTransferMethod: "permit2"` (any ERC-20, no EIP-3009 needed)
 * and scheme `upto` (the payer signs a maximum, the server settles what was
 * used). Strict decoding of the `permit2Authorization` payload, bound to the
 * server's own offer, and local EIP-712 verification of the payer's
 * `PermitWitnessTransferFrom` signature (domain "Permit2", the canonical
 * Permit2 address; the spender is the x402 Permit2 proxy of the scheme, the
 * witness binds the recipient and, for `upto`, the settling facilitator).
 *
 * Wire format (as @x402/evm 2.x signs it):
 *   payload: { signature, permit2Authorization: { from, permitted: { token, amount },
 *              spender, nonce, deadline, witness: { to, validAfter[, facilitator] } } }
 * integers are decimal strings (the nonce may also be 0x hex).
 */
import { concat, getAddress, isAddress, keccak256, numberToHex, pad, toBytes, type Address, type Hex } from "viem";
import { ConfigError, PaymentError } from "../errors.js";
import type { ExactAuthorization } from "../chain/settler.js";
import { isErc6492, MAX_SIGNATURE_BYTES, type SignatureKind, type SmartWalletVerifier } from "../chain/smart-wallet.js";
import type { DecodedPayment } from "./payload.js";
import type { Offer } from "./requirements.js";
import type { PaymentPayloadV2 } from "./types.js";
import { recoverSigner, VALID_BEFORE_MARGIN_SECONDS } from "./verify.js";

/** Uniswap's Permit2, at the same address on every EVM chain. */
export const PERMIT2_ADDRESS: Address = "0x000000000022D473030F116dDEE9F6B43aC78BA3";
/** The x402 `exact` Permit2 proxy (the spender payers sign for), as the x402 v2 EVM packages name it. */
export const X402_EXACT_PERMIT2_PROXY: Address = "0x402085c248EeA27D92E8b30b2C58ed07f9E20001";
/** The x402 `upto` Permit2 proxy. */
export const X402_UPTO_PERMIT2_PROXY: Address = "0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002";

/** The scheme a Permit2 payment is made under. */
export type Permit2Scheme = "exact" | "upto";

/** What an offer says about Permit2 (absent: EIP-3009 `exact`). */
export interface Permit2OfferTerms {
  scheme: Permit2Scheme;
  /** `upto`: the address that settles (our relayer); the payer signs it into the witness and only it may settle. */
  facilitator?: Address;
}

/**
 * A decoded Permit2 authorization. JSON-safe (integers as decimal strings),
 * since it travels in the settlement outbox with the SettleRequest.
 */
export interface Permit2Payment {
  scheme: Permit2Scheme;
  /** The x402 proxy the transfer goes through (the signed spender). */
  proxy: Address;
  owner: Address;
  token: Address;
  /** The signed amount: the price (`exact`) or the maximum (`upto`). */
  permitted: string;
  nonce: string;
  deadline: string;
  to: Address;
  validAfter: string;
  facilitator?: Address;
  /** `upto`: what is settled (≤ permitted), set from the handler's charge before settlement. */
  settleAmount?: string;
}

/** A payload decoded as a Permit2 payment. */
export interface DecodedPermit2Payment extends DecodedPayment {
  permit2: Permit2Payment;
}

const UINT = /^[0-9]{1,78}$/;
const HEX_UINT = /^0x[0-9a-fA-F]{1,64}$/;
const SIGNATURE = /^0x(?:[0-9a-fA-F]{2})+$/;
const MAX_UINT256 = (1n << 256n) - 1n;
/** Largest deadline taken: 2^48 s (Permit2's own allowance expirations are uint48). */
const MAX_DEADLINE = 1n << 48n;

function fail(reason: string, message: string, status?: number): never {
  throw new PaymentError(reason, message, status);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return !!v && typeof v === "object" && !Array.isArray(v);
}

function onlyKeys(o: Record<string, unknown>, allowed: readonly string[], where: string): void {
  for (const k of Object.keys(o)) if (!allowed.includes(k)) fail("invalid_payload", `${where} has an unknown field ${JSON.stringify(k)} (the signature covers only ${allowed.join(", ")}).`);
}

function uint(v: unknown, field: string, hexOk = false): bigint {
  if (typeof v !== "string" || !(UINT.test(v) || (hexOk && HEX_UINT.test(v)))) fail("invalid_payload", `permit2Authorization.${field} must be a decimal integer string${hexOk ? " (or 0x hex)" : ""}.`);
  const n = BigInt(v);
  if (n > MAX_UINT256) fail("invalid_payload", `permit2Authorization.${field} exceeds uint256.`);
  return n;
}

function address(v: unknown, field: string): Address {
  if (typeof v !== "string" || !isAddress(v, { strict: false })) fail("invalid_payload", `permit2Authorization.${field} must be an EVM address.`);
  return getAddress(v);
}

/** An address that must equal `expected`: checked without checksumming (a keccak each), the expected spelling returned. */
function expectedAddress(v: unknown, field: string, expected: Address | undefined, reason: string, message: string): Address {
  if (typeof v !== "string" || !isAddress(v, { strict: false })) fail("invalid_payload", `permit2Authorization.${field} must be an EVM address.`);
  if (expected === undefined || v.toLowerCase() !== expected.toLowerCase()) fail(reason, message);
  return expected;
}

function sameAddress(a: unknown, b: string): boolean {
  return typeof a === "string" && a.toLowerCase() === b.toLowerCase();
}

/** True when a v2 payload object carries a Permit2 authorization (whatever the offer). */
export function isPermit2Payload(raw: Record<string, unknown>): boolean {
  return isObject(raw.payload) && "permit2Authorization" in raw.payload;
}

/**
 * Decode a v2 `PAYMENT-SIGNATURE` payload object carrying a
 * `permit2Authorization` and bind it to `offer` (which must be a Permit2
 * offer): scheme, network, asset, payTo, amount, spender, recipient and (for
 * `upto`) facilitator must all be the offer's. Time and signature are checked
 * by {@link verifyPermit2}. Every refusal is a PaymentError with an x402 reason.
 */
export function decodePermit2V2(raw: Record<string, unknown>, offer: Offer & { permit2: Permit2OfferTerms }): DecodedPermit2Payment {
  const terms = offer.permit2;
  if (raw.x402Version !== 2) fail("invalid_x402_version", `PAYMENT-SIGNATURE carries x402Version ${JSON.stringify(raw.x402Version)}; expected 2.`);
  const acc = raw.accepted;
  if (!isObject(acc)) fail("invalid_payload", "accepted must be the payment requirements object the client chose.");
  if (acc.scheme !== terms.scheme) fail("unsupported_scheme", `scheme ${JSON.stringify(acc.scheme)} is not offered here; use ${JSON.stringify(terms.scheme)}.`);
  if (acc.network !== offer.network.caip2) fail("invalid_network", `accepted.network ${JSON.stringify(acc.network)} does not match the required ${JSON.stringify(offer.network.caip2)}.`);
  if (!sameAddress(acc.asset, offer.asset.address)) fail("invalid_payment_requirements", `accepted.asset does not match the required asset ${offer.asset.address}.`);
  if (!sameAddress(acc.payTo, offer.payTo)) fail("invalid_payment_requirements", `accepted.payTo does not match the required payTo ${offer.payTo}.`);
  if (acc.amount !== offer.amount.toString()) fail("invalid_payment_requirements", `accepted.amount ${JSON.stringify(acc.amount)} does not match the ${terms.scheme === "upto" ? "maximum" : "price"} ${offer.amount}.`);

  const p = raw.payload;
  if (!isObject(p)) fail("invalid_payload", "payload must be an object with signature and permit2Authorization.");
  onlyKeys(p, ["signature", "permit2Authorization"], "payload");
  const { signature, permit2Authorization: a } = p;
  if (typeof signature !== "string" || signature.length > 2 + 2 * MAX_SIGNATURE_BYTES || signature.length < 2 + 2 * 65 || !SIGNATURE.test(signature)) {
    fail("invalid_permit2_signature", `payload.signature must be 0x-prefixed hex of 65 to ${MAX_SIGNATURE_BYTES} bytes.`);
  }
  // Permit2 asks the owner's code (ERC-1271) at settlement and x402's Permit2 flow deploys nothing; an undeployed wallet cannot have approved Permit2 either
  if (isErc6492(signature as Hex)) {
    fail(
      "invalid_permit2_signature",
      "ERC-6492 (counterfactual wallet) signatures are not taken for Permit2 payments: Permit2 checks a deployed account's signature only. To pay over Permit2, deploy the wallet and approve Permit2 on the token, then sign with the deployed wallet (ERC-1271); or pay an EIP-3009 route, where counterfactual wallets are deployed at settlement.",
    );
  }
  if (!isObject(a)) fail("invalid_payload", "payload.permit2Authorization must be an object.");
  onlyKeys(a, ["from", "permitted", "spender", "nonce", "deadline", "witness"], "permit2Authorization");
  const permitted = a.permitted;
  if (!isObject(permitted)) fail("invalid_payload", "permit2Authorization.permitted must be { token, amount }.");
  onlyKeys(permitted, ["token", "amount"], "permit2Authorization.permitted");
  const witness = a.witness;
  if (!isObject(witness)) fail("invalid_payload", "permit2Authorization.witness must be an object.");
  const witnessKeys = terms.scheme === "upto" ? ["to", "facilitator", "validAfter"] : ["to", "validAfter"];
  onlyKeys(witness, witnessKeys, "permit2Authorization.witness");

  const proxy = terms.scheme === "upto" ? X402_UPTO_PERMIT2_PROXY : X402_EXACT_PERMIT2_PROXY;
  const from = address(a.from, "from");
  const token = expectedAddress(permitted.token, "permitted.token", offer.asset.address, "permit2_token_mismatch", `permit2Authorization.permitted.token is not the required asset ${offer.asset.address}.`);
  const amount = uint(permitted.amount, "permitted.amount");
  expectedAddress(a.spender, "spender", proxy, "invalid_permit2_spender", `permit2Authorization.spender must be the x402 ${terms.scheme} Permit2 proxy ${proxy}.`);
  const nonce = uint(a.nonce, "nonce", true);
  const deadline = uint(a.deadline, "deadline");
  const to = expectedAddress(witness.to, "witness.to", offer.payTo, "invalid_permit2_recipient_mismatch", `permit2Authorization.witness.to is not the payTo address ${offer.payTo}.`);
  const validAfter = uint(witness.validAfter, "witness.validAfter");
  const facilitator =
    terms.scheme === "upto"
      ? expectedAddress(witness.facilitator, "witness.facilitator", terms.facilitator, "upto_facilitator_mismatch", `permit2Authorization.witness.facilitator must be ${terms.facilitator ?? "the server's facilitator"} (extra.facilitatorAddress).`)
      : undefined;

  if (amount !== offer.amount) {
    fail("permit2_amount_mismatch", `permit2Authorization.permitted.amount ${amount} is not the ${terms.scheme === "upto" ? "maximum" : "price"} ${offer.amount}; sign exactly that amount.`);
  }
  if (deadline > MAX_DEADLINE) fail("invalid_payload", "permit2Authorization.deadline is not a plausible unix time in seconds.");
  if (deadline <= validAfter) fail("invalid_payload", "permit2Authorization.deadline must be after witness.validAfter.");

  const permit2: Permit2Payment = {
    scheme: terms.scheme,
    proxy,
    owner: from,
    token,
    permitted: amount.toString(),
    nonce: nonce.toString(),
    deadline: deadline.toString(),
    to,
    validAfter: validAfter.toString(),
    ...(facilitator ? { facilitator } : {}),
  };
  // The EIP-3009-shaped view the engine's locks, checks and ledger use: the nonce as 32 bytes of hex, the deadline as validBefore.
  const authorization: ExactAuthorization = { from, to, value: amount, validAfter, validBefore: deadline, nonce: numberToHex(nonce, { size: 32 }) };
  return { x402Version: 2, authorization, signature: (signature as string).toLowerCase() as Hex, payload: raw as unknown as PaymentPayloadV2, permit2 };
}

// --- EIP-712: PermitWitnessTransferFrom with the x402 witness ---
const TOKEN_PERMISSIONS = "TokenPermissions(address token,uint256 amount)";
const WITNESS = { exact: "Witness(address to,uint256 validAfter)", upto: "Witness(address to,address facilitator,uint256 validAfter)" } as const;
const hashString = (s: string): Hex => keccak256(toBytes(s));
const TOKEN_PERMISSIONS_TYPEHASH = hashString(TOKEN_PERMISSIONS);
const WITNESS_TYPEHASH = { exact: hashString(WITNESS.exact), upto: hashString(WITNESS.upto) };
const PERMIT_TYPEHASH = {
  exact: hashString(`PermitWitnessTransferFrom(TokenPermissions permitted,address spender,uint256 nonce,uint256 deadline,Witness witness)${TOKEN_PERMISSIONS}${WITNESS.exact}`),
  upto: hashString(`PermitWitnessTransferFrom(TokenPermissions permitted,address spender,uint256 nonce,uint256 deadline,Witness witness)${TOKEN_PERMISSIONS}${WITNESS.upto}`),
};
const DOMAIN_TYPEHASH = hashString("EIP712Domain(string name,uint256 chainId,address verifyingContract)");
const domains = new Map<number, Hex>();

/** Permit2's EIP-712 domain separator on `chainId` (cached). */
export function permit2DomainSeparator(chainId: number): Hex {
  let d = domains.get(chainId);
  if (!d) {
    d = keccak256(concat([DOMAIN_TYPEHASH, hashString("Permit2"), numberToHex(chainId, { size: 32 }), pad(PERMIT2_ADDRESS)]));
    domains.set(chainId, d);
  }
  return d;
}

const u256 = (v: string): Hex => numberToHex(BigInt(v), { size: 32 });

/** The EIP-712 digest the payer signs for a Permit2 payment. */
export function permit2Digest(p: Permit2Payment, chainId: number): Hex {
  const permissions = keccak256(concat([TOKEN_PERMISSIONS_TYPEHASH, pad(p.token), u256(p.permitted)]));
  const witness =
    p.scheme === "upto"
      ? keccak256(concat([WITNESS_TYPEHASH.upto, pad(p.to), pad(p.facilitator!), u256(p.validAfter)]))
      : keccak256(concat([WITNESS_TYPEHASH.exact, pad(p.to), u256(p.validAfter)]));
  const struct = keccak256(concat([PERMIT_TYPEHASH[p.scheme], permissions, pad(p.proxy), u256(p.nonce), u256(p.deadline), witness]));
  return keccak256(concat(["0x1901", permit2DomainSeparator(chainId), struct]));
}

/** The typed data a client signs (viem `signTypedData` shape), for clients written to the specification. */
export function permit2TypedData(p: Permit2Payment, chainId: number) {
  const witnessFields =
    p.scheme === "upto"
      ? [
          { name: "to", type: "address" },
          { name: "facilitator", type: "address" },
          { name: "validAfter", type: "uint256" },
        ]
      : [
          { name: "to", type: "address" },
          { name: "validAfter", type: "uint256" },
        ];
  return {
    domain: { name: "Permit2", chainId, verifyingContract: PERMIT2_ADDRESS },
    types: {
      PermitWitnessTransferFrom: [
        { name: "permitted", type: "TokenPermissions" },
        { name: "spender", type: "address" },
        { name: "nonce", type: "uint256" },
        { name: "deadline", type: "uint256" },
        { name: "witness", type: "Witness" },
      ],
      TokenPermissions: [
        { name: "token", type: "address" },
        { name: "amount", type: "uint256" },
      ],
      Witness: witnessFields,
    },
    primaryType: "PermitWitnessTransferFrom" as const,
    message: {
      permitted: { token: p.token, amount: BigInt(p.permitted) },
      spender: p.proxy,
      nonce: BigInt(p.nonce),
      deadline: BigInt(p.deadline),
      witness: p.scheme === "upto" ? { to: p.to, facilitator: p.facilitator!, validAfter: BigInt(p.validAfter) } : { to: p.to, validAfter: BigInt(p.validAfter) },
    },
  };
}

/**
 * Check the time window and the payer's signature. EOA signatures (65
 * bytes) are recovered locally; anything else goes to the smart-wallet
 * verifier (ERC-1271 `isValidSignature` over the same digest, which is what
 * Permit2 itself asks a contract owner) when one is configured.
 */
export async function verifyPermit2(p: Permit2Payment, signature: Hex, chainId: number, now: bigint, smartWallets?: SmartWalletVerifier): Promise<{ payer: Address; kind: SignatureKind }> {
  if (BigInt(p.validAfter) > now) fail("permit2_not_yet_valid", `the permit is not valid before ${p.validAfter} (now ${now}).`);
  if (BigInt(p.deadline) < now + VALID_BEFORE_MARGIN_SECONDS) fail("permit2_deadline_expired", `the permit's deadline ${p.deadline} has passed or is too close (now ${now}); sign a new payment.`);
  const digest = permit2Digest(p, chainId);
  const signer = await recoverSigner(digest, signature);
  if (signer === p.owner) return { payer: p.owner, kind: "eoa" };
  // not the owner's EOA signature: a deployed smart account may still accept it (a wallet owner's signature, or a longer one)
  if (smartWallets) {
    try {
      return { payer: p.owner, kind: await smartWallets.verify(p.owner, digest, signature) };
    } catch (err) {
      if (err instanceof PaymentError && err.status === 402) fail("invalid_permit2_signature", `the Permit2 signature is not permit2Authorization.from's: ${err.message}`);
      throw err; // the chain could not be asked, or too many checks at once
    }
  }
  fail("invalid_permit2_signature", "the Permit2 signature does not recover to permit2Authorization.from.");
}

/** Parse what an `upto` handler reports: "$0.07" (dollars of a USD asset), or atomic units as bigint or an integer string. */
export function parseCharge(amount: unknown, decimals: number): bigint {
  if (typeof amount === "bigint") {
    if (amount < 0n) throw new ConfigError("req.payment.charge", "takes an amount ≥ 0.");
    return amount;
  }
  if (typeof amount === "string") {
    if (/^[0-9]{1,78}$/.test(amount)) return BigInt(amount);
    const m = /^\$\s*([0-9]+)(?:\.([0-9]+))?$/.exec(amount.trim());
    if (m) {
      const frac = m[2] ?? "";
      if (frac.length > decimals) throw new ConfigError("req.payment.charge", `${JSON.stringify(amount)} has more decimals than the asset's ${decimals}.`);
      return BigInt(m[1]!) * 10n ** BigInt(decimals) + BigInt(frac.padEnd(decimals, "0") || "0");
    }
  }
  throw new ConfigError("req.payment.charge", `takes "$0.07" (dollars) or atomic units as a bigint or an integer string, got ${JSON.stringify(typeof amount === "bigint" ? String(amount) : amount)}.`);
}

/** Decode a payment for a Permit2 offer: v2 only (x402 v1 has no Permit2 form). */
export function decodePermit2(version: 1 | 2, raw: Record<string, unknown>, offer: Offer): DecodedPermit2Payment {
  if (version !== 2 || !offer.permit2) {
    fail("unsupported_scheme", `this resource is paid over Permit2 (scheme ${JSON.stringify(offer.permit2?.scheme ?? "exact")}), which x402 v1 has no form for; pay with x402 v2 (PAYMENT-SIGNATURE).`);
  }
  return decodePermit2V2(raw, offer as Offer & { permit2: Permit2OfferTerms });
}
