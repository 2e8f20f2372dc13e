/**
 * Pre-handler on-chain checks: the authorization is still unused and the
 * payer's balance covers it. Runs after the local signature check and the
 * replay lock, before the paid handler.
 */
import { ChainError, PaymentError } from "../errors.js";
import type { ChainReader, SettleRequest } from "../chain/settler.js";

/** A check run before the paid handler. Throws PaymentError (refuse) or ChainError (cannot tell). */
export interface PaymentChecker {
  /** Resolves with the payer's balance when the check read it: the engine then also counts the payer's unsettled payments against it. */
  check(req: SettleRequest): Promise<void | { balance?: bigint }>;
  /** True when a passing check proves on-chain that the nonce is unused and the balance covers the value (settlers may then skip their own simulation). */
  readonly onChain?: boolean;
}

/** The default checker: `authorizationState` and `balanceOf` read from the chain (one batched request when the reader can). */
export function chainChecker(reader: ChainReader): PaymentChecker {
  return {
    onChain: true,
    async check({ authorization: a, asset }) {
      let used: boolean, balance: bigint;
      try {
        if (reader.paymentState) ({ used, balance } = await reader.paymentState(asset, a.from, a.nonce));
        else [used, balance] = await Promise.all([reader.authorizationUsed(asset, a.from, a.nonce), reader.balanceOf(asset, a.from)]);
      } catch (err) {
        throw err instanceof ChainError ? err : new ChainError(`chain check failed: ${(err as Error).message}`, { cause: err });
      }
      if (used) throw new PaymentError("invalid_exact_evm_nonce_already_used", "this authorization nonce was already used on-chain; sign a new payment.");
      if (balance < a.value) throw new PaymentError("insufficient_funds", `payer balance ${balance} is below the authorized value ${a.value}.`);
      return { balance };
    },
  };
}
