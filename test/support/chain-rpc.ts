/** A raw JSON-RPC call to a dev chain (anvil methods such as `evm_setAutomine` included); throws the node's error. */
export function chainRpc(rpcUrl: () => string) {
  return async (method: string, params: unknown[] = []): Promise<unknown> => {
    const r = await fetch(rpcUrl(), { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }) });
    const j = (await r.json()) as { result?: unknown; error?: { message: string } };
    if (j.error) throw new Error(j.error.message);
    return j.result;
  };
}
