/**
 * server402 — charge per call on any Express route or MCP tool with x402
 * (v1 and v2 on the same route) and prepaid payment tokens.
 *
 * This is the public API; README.md lists every export and why it is here.
 * Other entry points: `server402/sqlite`, `/redis`, `/postgres` (stores),
 * `/mcp` (MCP tools), `/devchain` (a local chain with test USDC).
 * `server402/internal` is for this repository's example and tests only.
 */

// Express: the middleware, its options and what a handler sees
export { paywall, requirePayment, type PaywallOptions, type PaywallMiddleware } from "./adapters/express/paywall.js";
export type { PaymentOptions, RouteOptions, SettlementMode, ResolvedRoute } from "./core/options.js";
export type { AbuseLimits } from "./core/limits.js";
export type { PaymentInfo, X402PaymentInfo, TokenPaymentInfo, PaymentEvent } from "./core/engine.js";
export type { UptoPaymentInfo } from "./core/upto.js";
export type { PaymentIdentifierOptions } from "./core/idempotency.js";
export { PAYWALL_PAGE_CSP, type PaywallPageOptions, type PaywallPageContext, type PaywallPageSetting } from "./adapters/express/paywall-page.js";
export { paymentsRouter, type PaymentsRouterOptions, type PaymentsApiOptions } from "./adapters/express/payments-router.js";
export type { PublicPayment } from "./core/payment-object.js";
export type { PaymentHooks, PaymentHookContext, VerifiedHookContext, HookAbort } from "./core/hooks.js";
export type { PaymentRequiredBody, PaymentRequiredBodyContext } from "./core/bodies.js";
export type { ProtectedRequestContext, ProtectedRequestResult } from "./adapters/express/protected-request.js";

// Settlement and on-chain checks
export { relayerSettler, type RelayerSettlerOptions, type RelayerSettler, type RelayerEvent } from "./chain/relayer.js";
export { facilitatorSettler, type FacilitatorOptions, type FacilitatorSettler } from "./chain/facilitator.js";
export type { Settler, SettleRequest, SettleResult, ChainReader, ExactAuthorization } from "./chain/settler.js";
export { createChainReader, type ChainReaderOptions } from "./chain/reader.js";
export { chainChecker, type PaymentChecker } from "./core/checker.js";
export { PERMIT2_ADDRESS, X402_EXACT_PERMIT2_PROXY, X402_UPTO_PERMIT2_PROXY } from "./protocol/permit2.js";
export { settlerByNetwork, type PaymentOption, type NetworkSettler, type NetworkSettlerEntry } from "./core/offers.js";

// Stores (SqliteStore: "server402/sqlite", RedisStore: "server402/redis", PostgresStore: "server402/postgres")
export { MemoryStore, type MemoryStoreOptions } from "./state/memory.js";
export type { Store, StoredPayment, PaymentStatus, LedgerEntry, ReserveResult, ReserveFailure, ReservedPayment, NonceState, PayerHold, PayerClaim, PayerClaimFailure, OutboxItem, PaymentIdClaim } from "./state/store.js";

// Networks, prices and the x402 wire format
export { findNetwork, KNOWN_NETWORKS, type AssetInfo, type NetworkInfo } from "./protocol/networks.js";
export { formatUnitsExact, type PriceInput, type AtomicPrice } from "./protocol/price.js";
export type { Offer } from "./protocol/requirements.js";
export { encodeHeader, decodeHeader } from "./protocol/encoding.js";
export { TRANSFER_WITH_AUTHORIZATION_TYPES } from "./protocol/verify.js";
export {
  HEADER,
  type Eip712Extra,
  type PaymentRequirementsV1,
  type PaymentRequiredV1,
  type PaymentRequirementsV2,
  type PaymentRequiredV2,
  type ResourceInfo,
  type WireAuthorization,
  type ExactEvmPayload,
  type PaymentPayloadV1,
  type PaymentPayloadV2,
  type SettleResponse,
} from "./protocol/types.js";

// Errors: every error server402 throws is one of these, with a `code` from Server402ErrorCode
export { Server402Error, ConfigError, PaymentError, SettlementError, StoreError, ChainError, MissingDependencyError, RelayerFundsError, type Server402ErrorCode } from "./errors.js";
