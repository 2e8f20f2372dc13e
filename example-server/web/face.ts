/**
 * The face-comparison page: pick, drop or link two photos, pay (browser
 * wallet, prepaid token, or the dev wallet on the dev chain), then draw both
 * photos with their face boxes and show Confidence against the Thresholds.
 */
import type { CompareFaceResult as CompareResult } from "../src/engine/types.js";
import { chainIdOf, decodeBase64Json, type PaymentRequired, type Signer } from "./wire.js";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const app = $<HTMLElement>("face-app");
const endpoint = app.dataset.endpoint!;
const form = $<HTMLFormElement>("compare-form");
const status = $<HTMLElement>("status");
const button = $<HTMLButtonElement>("compare");

/** Per side: the picked file or the URL, and an image to draw. */
const sides: Record<"a" | "b", { file?: File; image?: HTMLImageElement }> = { a: {}, b: {} };

function say(text: string, isError = false): void {
  status.textContent = text;
  status.classList.toggle("error", isError);
}

function loadImage(src: string): Promise<HTMLImageElement> {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the image could not be loaded"));
    img.src = src;
  });
}

/** Draw `img` into `canvas` (fit to 480 px wide) with an optional face box [left, top, width, height]. */
function draw(canvas: HTMLCanvasElement, img: HTMLImageElement, rect?: number[]): void {
  const scale = Math.min(1, 480 / img.naturalWidth);
  canvas.width = Math.round(img.naturalWidth * scale);
  canvas.height = Math.round(img.naturalHeight * scale);
  const ctx = canvas.getContext("2d")!;
  ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
  if (rect && rect.length >= 4) {
    const [x, y, w, h] = rect.map((v) => v * scale) as [number, number, number, number];
    ctx.lineWidth = Math.max(3, canvas.width / 120);
    ctx.strokeStyle = "#00e676";
    ctx.strokeRect(x, y, w, h);
    ctx.strokeStyle = "rgba(0,0,0,.6)";
    ctx.lineWidth = 1;
    ctx.strokeRect(x - ctx.lineWidth * 2, y - ctx.lineWidth * 2, w + ctx.lineWidth * 4, h + ctx.lineWidth * 4);
  }
}

async function pick(side: "a" | "b", file: File): Promise<void> {
  sides[side].file = file;
  $<HTMLInputElement>(`url-${side}`).value = "";
  try {
    sides[side].image = await loadImage(URL.createObjectURL(file));
    draw($<HTMLCanvasElement>(`preview-${side}`), sides[side].image!);
    $(`drop-${side}`).classList.add("has-image");
  } catch {
    say(`Photo ${side.toUpperCase()} is not an image this browser can show.`, true);
  }
}

for (const side of ["a", "b"] as const) {
  const input = $<HTMLInputElement>(`file-${side}`);
  input.addEventListener("change", () => input.files?.[0] && void pick(side, input.files[0]));
  const drop = $(`drop-${side}`);
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const f = e.dataTransfer?.files?.[0];
    if (f) void pick(side, f);
  });
  const url = $<HTMLInputElement>(`url-${side}`);
  url.addEventListener("change", async () => {
    sides[side].file = undefined;
    if (!url.value) return;
    try {
      sides[side].image = await loadImage(url.value);
      draw($<HTMLCanvasElement>(`preview-${side}`), sides[side].image!);
      $(`drop-${side}`).classList.add("has-image");
    } catch {
      sides[side].image = undefined;
      say(`Photo ${side.toUpperCase()}: the URL did not load as an image here; the server will still try it.`);
    }
  });
}

const payChoice = () => (form.elements.namedItem("pay") as RadioNodeList).value as "wallet" | "token" | "dev";
form.addEventListener("change", () => {
  $("token-box").hidden = payChoice() !== "token";
});

function base64Of(file: File): Promise<string> {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(String(r.result).replace(/^data:[^,]*,/, ""));
    r.onerror = () => reject(new Error("the file could not be read"));
    r.readAsDataURL(file);
  });
}

async function requestBody(): Promise<Record<string, string>> {
  const body: Record<string, string> = {};
  for (const side of ["a", "b"] as const) {
    const key = side.toUpperCase();
    const url = $<HTMLInputElement>(`url-${side}`).value.trim();
    const file = sides[side].file;
    if (file) body[`ImageData${key}`] = await base64Of(file);
    else if (url) body[`ImageURL${key}`] = url;
    else throw new Error(`Choose, drop or link photo ${key} first.`);
  }
  return body;
}

function post(body: unknown, headers: Record<string, string>): Promise<Response> {
  return fetch(endpoint, { method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json", ...headers }, body: JSON.stringify(body) });
}

async function errorOf(res: Response): Promise<string> {
  try {
    const j = (await res.json()) as { message?: string; error?: string };
    return j.message || j.error || `${res.status} ${res.statusText}`;
  } catch {
    return `${res.status} ${res.statusText}`;
  }
}

async function signer(kind: "wallet" | "dev", chainId: number): Promise<Signer> {
  if (kind === "wallet") return (await import("./pay.js")).walletSigner(chainId, say);
  const { devSigner } = await import("./devwallet.js");
  return devSigner();
}

function show(result: CompareResult, requestId: string, paidBy: string, tx: string): void {
  for (const side of ["a", "b"] as const) {
    const img = sides[side].image;
    const canvas = $<HTMLCanvasElement>(`out-${side}`);
    if (img) draw(canvas, img, side === "a" ? result.RectAList : result.RectBList);
    const q = side === "a" ? result.QualityScoreA : result.QualityScoreB;
    $(`cap-${side}`).textContent = `Photo ${side.toUpperCase()}${q !== undefined ? ` · quality ${q.toFixed(1)} / 100` : ""}`;
  }
  const c = result.Confidence;
  const [t3, t4, t5] = result.Thresholds;
  const verdict =
    c >= t5 ? "Same person — very sure (above the 1-in-100,000 false-accept threshold)." :
    c >= t4 ? "Same person — sure (above the 1-in-10,000 false-accept threshold)." :
    c >= t3 ? "Probably the same person (above the 1-in-1,000 false-accept threshold only)." :
    "Not the same person (below every threshold).";
  const v = $("verdict");
  v.textContent = verdict;
  v.className = `verdict ${c >= t3 ? "same" : "different"}`;
  const gauge = $("gauge");
  gauge.setAttribute("aria-valuenow", String(c));
  gauge.setAttribute("aria-valuetext", `${c.toFixed(1)} — ${verdict}`);
  $("gauge-fill").style.width = `${Math.max(0, Math.min(100, c))}%`;
  gauge.querySelectorAll(".tick").forEach((t) => t.remove());
  for (const [t, label] of [[t3, "1e-3"], [t4, "1e-4"], [t5, "1e-5"]] as const) {
    const tick = document.createElement("span");
    tick.className = "tick";
    tick.style.left = `${t}%`;
    tick.title = `threshold at false-accept rate ${label}: ${t}`;
    tick.textContent = label;
    gauge.append(tick);
  }
  $("confidence").textContent = `${c.toFixed(2)} / 100`;
  $("thresholds").textContent = `${t3} (FAR 1e-3) · ${t4} (1e-4) · ${t5} (1e-5)`;
  $("quality").textContent = `A ${result.QualityScoreA?.toFixed(1) ?? "–"} · B ${result.QualityScoreB?.toFixed(1) ?? "–"}`;
  $("request-id").textContent = requestId;
  $("paid-by").textContent = paidBy;
  $("tx").textContent = tx;
  $("result").hidden = false;
  $("result").scrollIntoView({ behavior: "smooth", block: "start" });
}

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  button.disabled = true;
  try {
    const body = await requestBody();
    const kind = payChoice();
    let res: Response;
    let paidBy: string;
    if (kind === "token") {
      const token = $<HTMLInputElement>("token").value.trim();
      if (!token) throw new Error("Paste a prepaid payment token first.");
      say("Comparing (paid with your token)…");
      res = await post(body, { "X-Payment-Token": token });
      paidBy = "prepaid token";
    } else {
      say("Asking the price…");
      const first = await post(body, {});
      if (first.status !== 402) throw new Error(first.ok ? "The server did not ask for payment." : await errorOf(first));
      const header = first.headers.get("PAYMENT-REQUIRED");
      if (!header) throw new Error("The 402 answer has no PAYMENT-REQUIRED header.");
      const required = decodeBase64Json<PaymentRequired>(header);
      const offer = required.accepts.find((a) => a.scheme === "exact" && a.network.startsWith("eip155:"));
      if (!offer) throw new Error("The server offers no EVM payment.");
      const s = await signer(kind, chainIdOf(offer));
      say("Sign the payment…");
      const payment = await (await import("./pay.js")).paymentHeader(required, offer, s);
      say("Comparing and settling the payment…");
      res = await post(body, { "PAYMENT-SIGNATURE": payment });
      paidBy = `${kind === "dev" ? "dev wallet" : "browser wallet"} ${s.address}`;
    }
    if (!res.ok) throw new Error(`Not charged: ${await errorOf(res)}`);
    const out = (await res.json()) as { requestId: string; data: { Result: CompareResult } };
    const settled = res.headers.get("PAYMENT-RESPONSE");
    const tx = settled ? decodeBase64Json<{ transaction: string }>(settled).transaction : "none (prepaid token call)";
    show(out.data.Result, out.requestId, paidBy, tx);
    say("Done.");
  } catch (err) {
    const m = (err as { code?: number; shortMessage?: string; message?: string }).code === 4001 ? "You declined in your wallet; nothing was charged." : ((err as { shortMessage?: string }).shortMessage ?? (err as Error).message);
    say(m, true);
  } finally {
    button.disabled = false;
  }
});
