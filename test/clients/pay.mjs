/**
 * Child process of test/x402-clients.test.ts: one independent x402 client
 * from npm pays one request, with `--import ./no-network.mjs` (loopback
 * only). Usage: node --import ./no-network.mjs pay.mjs <client> <url>
 * [<method> <json body>], payer key in PAYER_KEY. Prints one JSON line:
 * { status, body, receipt } (receipt: the decoded payment-response header).
 */
const [client, url, method = "GET", body] = process.argv.slice(2);
const key = process.env.PAYER_KEY;
const init = { method, ...(body ? { headers: { "content-type": "application/json" }, body } : {}) };

function receiptOf(headers) {
  const raw = headers.get?.("payment-response") ?? headers.get?.("x-payment-response") ?? headers["payment-response"] ?? headers["x-payment-response"];
  return raw ? JSON.parse(Buffer.from(raw, "base64").toString("utf8")) : null;
}

async function viaFetch(pay) {
  const res = await pay(url, init);
  return { status: res.status, body: await res.text(), receipt: receiptOf(res.headers) };
}

const clients = {
  /** thirdweb 5.x `wrapFetchWithPayment` with a private-key wallet adapter (no thirdweb account needed to sign). */
  async thirdweb() {
    const { createThirdwebClient, defineChain } = await import("thirdweb");
    const { privateKeyToAccount, createWalletAdapter } = await import("thirdweb/wallets");
    const { wrapFetchWithPayment } = await import("thirdweb/x402");
    const tw = createThirdwebClient({ clientId: "server402-test" });
    const chain = defineChain(84532);
    const account = privateKeyToAccount({ client: tw, privateKey: key });
    const wallet = createWalletAdapter({ client: tw, adaptedAccount: account, chain, onDisconnect: () => {}, switchChain: () => {} });
    return viaFetch(wrapFetchWithPayment(fetch, tw, wallet));
  },
  /** x402-axios 0.7 (v1, X-PAYMENT) with a viem wallet client. */
  async "x402-axios"() {
    const { default: axios } = await import("axios");
    const { withPaymentInterceptor } = await import("x402-axios");
    const { createWalletClient, http } = await import("viem");
    const { privateKeyToAccount } = await import("viem/accounts");
    const { baseSepolia } = await import("viem/chains");
    // the transport is never used to sign; it points at loopback so nothing could leave anyway
    const wallet = createWalletClient({ account: privateKeyToAccount(key), chain: baseSepolia, transport: http("http://127.0.0.1:9") });
    const api = withPaymentInterceptor(axios.create(), wallet);
    // the interceptor pays on the 402 error; any other error status is reported as is
    const res = await api.request({ url, method, data: body ? JSON.parse(body) : undefined }).catch((err) => {
      if (err.response) return err.response;
      throw err;
    });
    return { status: res.status, body: typeof res.data === "string" ? res.data : JSON.stringify(res.data), receipt: receiptOf(res.headers) };
  },
  /** @faremeter/fetch 0.22 with @faremeter/payment-evm's exact (EIP-3009) handler. */
  async faremeter() {
    const { wrap } = await import("@faremeter/fetch");
    const { exact } = await import("@faremeter/payment-evm");
    const { privateKeyToAccount } = await import("viem/accounts");
    const account = privateKeyToAccount(key);
    const handler = exact.createPaymentHandler({ chain: { id: 84532, name: "Base Sepolia" }, address: account.address, account });
    return viaFetch(wrap(fetch, { handlers: [handler], retryCount: 0 }));
  },
  /**
   * x402-mcp 0.0.5 (Vercel) over ai 5.0.78's MCP client: call the tool unpaid,
   * read the v1 requirements from the payment-required text as a model would,
   * sign with its generatePaymentAuthorization tool, call again with the
   * authorization (sent as `_meta["x402.payment"]`). <url> is the MCP
   * endpoint, <method> the tool name, <json body> its arguments.
   */
  async "x402-mcp"() {
    const { experimental_createMCPClient } = await import("ai");
    const { StreamableHTTPClientTransport } = await import("@modelcontextprotocol/sdk/client/streamableHttp.js");
    const { withPayment } = await import("x402-mcp");
    const { privateKeyToAccount } = await import("viem/accounts");
    const mcp = await experimental_createMCPClient({ transport: new StreamableHTTPClientTransport(new URL(url)) });
    try {
      const client = await withPayment(mcp, { account: privateKeyToAccount(key), network: "base-sepolia" });
      const tools = await client.tools();
      const opts = { toolCallId: "1", messages: [] };
      const args = body ? JSON.parse(body) : {};
      const unpaid = await tools[method].execute(args, opts);
      const required = JSON.parse(unpaid.content[0].text)["x402/error"].data;
      const { paymentAuthorization } = await tools.generatePaymentAuthorization.execute({ paymentRequirements: required.x402v1.accepts[0] }, opts);
      const paid = await tools[method].execute({ ...args, paymentAuthorization }, opts);
      const receipt = paid._meta?.["x402.payment-response"] ?? null;
      return { status: paid.isError ? 402 : 200, body: JSON.stringify(paid), receipt };
    } finally {
      await mcp.close();
    }
  },
  /** @x402/axios 2.11 (the official v2 axios client, with @x402/core 2.11) and @x402/evm 2.11's exact scheme. */
  async "@x402/axios"() {
    const { default: axios } = await import("axios");
    const { wrapAxiosWithPayment, x402Client } = await import("@x402/axios");
    const { ExactEvmScheme } = await import("@x402/evm/exact/client");
    const { privateKeyToAccount } = await import("viem/accounts");
    const api = wrapAxiosWithPayment(axios.create(), new x402Client().register("eip155:*", new ExactEvmScheme(privateKeyToAccount(key))));
    const res = await api.request({ url, method, data: body ? JSON.parse(body) : undefined }).catch((err) => {
      if (err.response) return err.response;
      throw err;
    });
    return { status: res.status, body: typeof res.data === "string" ? res.data : JSON.stringify(res.data), receipt: receiptOf(res.headers) };
  },
  /** @dexterai/x402 2.0 `wrapFetch` with an EVM key; its balance check reads the local chain (RPC_URL, loopback). */
  async dexter() {
    const { wrapFetch } = await import("@dexterai/x402/client");
    const rpcUrls = process.env.RPC_URL ? { "eip155:84532": process.env.RPC_URL } : undefined;
    return viaFetch(wrapFetch(fetch, { evmPrivateKey: key, preferredNetwork: "eip155:84532", rpcUrls, maxAmountAtomic: "1000000" }));
  },
};

try {
  const run = clients[client];
  if (!run) throw new Error(`unknown client ${client}`);
  process.stdout.write(JSON.stringify(await run()) + "\n");
} catch (err) {
  process.stdout.write(JSON.stringify({ error: String(err?.stack ?? err) }) + "\n");
  process.exitCode = 1;
}
