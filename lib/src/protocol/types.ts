/**
 * x402 wire types (v1 and v2, `exact` scheme on EVM). Amounts are integer
 * strings of atomic units.
 */

/** EIP-712 domain of the asset, carried in `extra`. */
export interface Eip712Extra {
  name: string;
  version: string;
  /** How the payer authorizes the transfer (x402 v2 `exact` on EVM; `eip3009` when absent). */
  assetTransferMethod?: "eip3009" | "permit2" | "erc7710";
  /** The EIP-712 primary type to sign, read by thirdweb's client. */
  primaryType?: "TransferWithAuthorization" | "Permit";
  [key: string]: unknown;
}

/** v1 PaymentRequirements (one entry of the 402 body's `accepts`). */
export interface PaymentRequirementsV1 {
  scheme: "exact";
  network: string;
  maxAmountRequired: string;
  resource: string;
  description: string;
  mimeType: string;
  payTo: string;
  maxTimeoutSeconds: number;
  asset: string;
  outputSchema: Record<string, unknown>;
  extra: Eip712Extra;
}

/** v1 402 body. Extra keys (e.g. how to buy a prepaid token) may follow. */
export interface PaymentRequiredV1 {
  x402Version: 1;
  error: string;
  accepts: PaymentRequirementsV1[];
  [key: string]: unknown;
}

/** v2 PaymentRequirements (`upto`: `amount` is the maximum; over Permit2). */
export interface PaymentRequirementsV2 {
  scheme: "exact" | "upto";
  network: string;
  amount: string;
  asset: string;
  payTo: string;
  maxTimeoutSeconds: number;
  extra: Eip712Extra;
}

/** v2 resource description. */
export interface ResourceInfo {
  url: string;
  description?: string;
  mimeType?: string;
}

/** v2 PaymentRequired (the `PAYMENT-REQUIRED` header, base64 JSON). */
export interface PaymentRequiredV2 {
  x402Version: 2;
  error?: string;
  resource: ResourceInfo;
  accepts: PaymentRequirementsV2[];
  extensions?: Record<string, unknown>;
}

/** EIP-3009 authorization as sent on the wire (decimal strings). */
export interface WireAuthorization {
  from: string;
  to: string;
  value: string;
  validAfter: string;
  validBefore: string;
  nonce: string;
}

export interface ExactEvmPayload {
  signature: string;
  authorization: WireAuthorization;
}

/** v1 `X-PAYMENT` payload. */
export interface PaymentPayloadV1 {
  x402Version: 1;
  scheme: "exact";
  network: string;
  payload: ExactEvmPayload;
}

/** v2 `PAYMENT-SIGNATURE` payload. */
export interface PaymentPayloadV2 {
  x402Version: 2;
  payload: ExactEvmPayload;
  accepted: PaymentRequirementsV2;
  resource?: ResourceInfo;
  extensions?: Record<string, unknown>;
}

/** `X-PAYMENT-RESPONSE` / `PAYMENT-RESPONSE` (base64 JSON). */
export interface SettleResponse {
  success: boolean;
  transaction: string;
  network: string;
  payer?: string;
  errorReason?: string;
  errorMessage?: string;
  /** `upto`: the amount settled (atomic units, may be "0"). */
  amount?: string;
}

/** Request header names, lower-case as Node gives them. */
export const HEADER = {
  v1Payment: "x-payment",
  v2Payment: "payment-signature",
  v1Response: "X-PAYMENT-RESPONSE",
  v2Response: "PAYMENT-RESPONSE",
  v2Required: "PAYMENT-REQUIRED",
  token: "x-payment-token",
} as const;
