// @ts-check
/**
 * server402's paywall page script (served by the paywall middleware, no
 * build step, no dependencies). It reads the PAYMENT-REQUIRED value the
 * server put on the page, asks an EIP-1193 wallet (window.ethereum) to sign
 * an EIP-3009 TransferWithAuthorization for the chosen offer, repeats the
 * request with a v2 PAYMENT-SIGNATURE header (or an X-Payment-Token), and
 * shows or offers for download what the server answers.
 */

/** @typedef {{ scheme: string, network: string, amount: string, asset: string, payTo: string, maxTimeoutSeconds: number, extra?: { name?: string, version?: string } }} Requirements */
/** @typedef {{ x402Version: number, error?: string, resource: { url: string, description?: string, mimeType?: string }, accepts: Requirements[], extensions?: Record<string, unknown> }} PaymentRequired */
/** @typedef {{ request(args: { method: string, params?: unknown[] | object }): Promise<unknown> }} Eip1193 */

const root = /** @type {HTMLElement} */ (document.getElementById("x402-paywall"));
const status = /** @type {HTMLElement} */ (document.getElementById("x402-status"));
const select = /** @type {HTMLSelectElement} */ (document.getElementById("x402-option"));
const payButton = /** @type {HTMLButtonElement} */ (document.getElementById("x402-pay"));
const tokenForm = /** @type {HTMLFormElement | null} */ (document.getElementById("x402-token-form"));
const url = root.dataset.url || location.pathname + location.search;

/** @param {string} b64 */
function decodeBase64Json(b64) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

/** @param {unknown} value */
function encodeBase64Json(value) {
  const bytes = new TextEncoder().encode(JSON.stringify(value));
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

/** @type {PaymentRequired} */
const required = decodeBase64Json(root.dataset.paymentRequired || "");
const offers = required.accepts.filter((a) => a.scheme === "exact" && /^eip155:\d+$/.test(a.network));

/** @param {string} text @param {boolean} [isError] */
function say(text, isError = false) {
  status.textContent = text;
  status.classList.toggle("error", isError);
}

/** "200000" with 6 decimals → "0.2" */
function formatAmount(/** @type {string} */ amount, decimals = 6) {
  const s = amount.padStart(decimals + 1, "0");
  const whole = s.slice(0, -decimals);
  const frac = s.slice(-decimals).replace(/0+$/, "");
  return frac ? `${whole}.${frac}` : whole;
}

for (const [i, o] of offers.entries()) {
  const opt = document.createElement("option");
  opt.value = String(i);
  opt.textContent = `${formatAmount(o.amount)} ${o.extra?.name ?? "tokens"} on ${o.network}`;
  select.append(opt);
}
if (offers.length === 0) {
  payButton.disabled = true;
  say("This resource offers no payment a browser wallet can make.", true);
}

/** 32 random bytes as 0x-hex. */
function randomNonce() {
  const b = crypto.getRandomValues(new Uint8Array(32));
  return `0x${Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("")}`;
}

/** @param {unknown} err */
function messageOf(err) {
  const e = /** @type {{ code?: number, message?: string }} */ (err);
  if (e && e.code === 4001) return "You declined the request in your wallet.";
  return e && typeof e.message === "string" ? e.message : String(err);
}

/**
 * Connect, switch to the offer's chain, sign the transfer authorization.
 * @param {Eip1193} wallet @param {Requirements} offer
 */
async function signPayment(wallet, offer) {
  const chainId = Number(offer.network.split(":")[1]);
  const accounts = /** @type {string[]} */ (await wallet.request({ method: "eth_requestAccounts" }));
  const from = accounts[0];
  if (!from) throw new Error("The wallet gave no account.");
  const current = Number(await wallet.request({ method: "eth_chainId" }));
  if (current !== chainId) {
    say(`Switching your wallet to chain ${chainId}…`);
    try {
      await wallet.request({ method: "wallet_switchEthereumChain", params: [{ chainId: `0x${chainId.toString(16)}` }] });
    } catch (err) {
      if (/** @type {{ code?: number }} */ (err).code === 4902) throw new Error(`Your wallet does not know chain ${chainId} (${offer.network}); add it, then try again.`);
      throw err;
    }
  }
  const now = Math.floor(Date.now() / 1000);
  const authorization = {
    from,
    to: offer.payTo,
    value: offer.amount,
    validAfter: String(now - 600),
    validBefore: String(now + (offer.maxTimeoutSeconds || 300)),
    nonce: randomNonce(),
  };
  const typedData = {
    // EIP712Domain and TransferWithAuthorization, as the server verifies them
    types: JSON.parse(root.dataset.typedTypes || "{}"),
    primaryType: "TransferWithAuthorization",
    domain: { name: offer.extra?.name ?? "USD Coin", version: offer.extra?.version ?? "2", chainId, verifyingContract: offer.asset },
    message: authorization,
  };
  say("Sign the payment in your wallet…");
  const signature = /** @type {string} */ (await wallet.request({ method: "eth_signTypedData_v4", params: [from, JSON.stringify(typedData)] }));
  return encodeBase64Json({ x402Version: 2, resource: required.resource, accepted: offer, payload: { signature, authorization }, ...(required.extensions ? { extensions: required.extensions } : {}) });
}

/** Repeat the request with the payment and show the answer. @param {Record<string, string>} headers */
async function fetchPaid(headers) {
  say("Paying…");
  const res = await fetch(url, { headers: { Accept: "application/json, text/plain;q=0.9, */*;q=0.8", ...headers }, credentials: "same-origin" });
  if (!res.ok) {
    let detail = `${res.status} ${res.statusText}`;
    try {
      const body = await res.json();
      detail = body.message || body.error || detail;
    } catch {
      /* not JSON */
    }
    const settled = res.headers.get("PAYMENT-RESPONSE");
    const reason = settled ? decodeBase64Json(settled).errorReason : undefined;
    throw new Error(`The server refused the payment: ${detail}${reason ? ` (${reason})` : ""}`);
  }
  await show(res);
}

/** @param {Response} res */
async function show(res) {
  const type = res.headers.get("Content-Type") || "application/octet-stream";
  const blob = await res.blob();
  const content = /** @type {HTMLElement} */ (document.getElementById("x402-content"));
  content.replaceChildren();
  if (/json/.test(type)) {
    const pre = document.createElement("pre");
    const text = await blob.text();
    try {
      pre.textContent = JSON.stringify(JSON.parse(text), null, 2);
    } catch {
      pre.textContent = text;
    }
    content.append(pre);
  } else if (type.startsWith("text/")) {
    const pre = document.createElement("pre");
    pre.textContent = await blob.text();
    content.append(pre);
  } else if (type.startsWith("image/")) {
    const img = document.createElement("img");
    img.src = URL.createObjectURL(blob);
    img.alt = required.resource.description || "the paid image";
    content.append(img);
  } else {
    const p = document.createElement("p");
    p.textContent = `The answer is ${blob.size} bytes of ${type}; download it below.`;
    content.append(p);
  }
  const download = /** @type {HTMLAnchorElement} */ (document.getElementById("x402-download"));
  download.href = URL.createObjectURL(blob);
  download.download = (new URL(url, location.href).pathname.split("/").pop() || "answer") + (/json/.test(type) ? ".json" : "");
  const receipt = /** @type {HTMLElement} */ (document.getElementById("x402-receipt"));
  const settled = res.headers.get("PAYMENT-RESPONSE") || res.headers.get("X-PAYMENT-RESPONSE");
  if (settled) {
    const s = decodeBase64Json(settled);
    receipt.textContent = `Paid. Transaction ${s.transaction} on ${s.network}.`;
  } else {
    receipt.textContent = "Paid with your prepaid token.";
  }
  /** @type {HTMLElement} */ (document.getElementById("x402-result")).hidden = false;
  say("Done.");
}

payButton.addEventListener("click", async () => {
  const wallet = /** @type {Eip1193 | undefined} */ (/** @type {{ ethereum?: Eip1193 }} */ (/** @type {unknown} */ (window)).ethereum);
  if (!wallet) return say("No browser wallet was found. Install one that supports EIP-1193, or use a prepaid token.", true);
  const offer = offers[Number(select.value)];
  if (!offer) return;
  payButton.disabled = true;
  try {
    const header = await signPayment(wallet, offer);
    await fetchPaid({ "PAYMENT-SIGNATURE": header });
  } catch (err) {
    say(messageOf(err), true);
  } finally {
    payButton.disabled = false;
  }
});

tokenForm?.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const token = /** @type {HTMLInputElement} */ (document.getElementById("x402-token")).value.trim();
  if (!token) return;
  try {
    await fetchPaid({ "X-Payment-Token": token });
  } catch (err) {
    say(messageOf(err), true);
  }
});

export {}; // a module: its names stay out of the page's global scope
