/**
 * The operator dashboard: polls /admin/api/summary (session cookie) every
 * five seconds and renders the counters, the revenue chart (uPlot, x402 and
 * prepaid apart, per hour or day), recent payments, pending settlements and
 * the ledger.
 */
import uPlot from "uplot";

interface Series {
  bucket: "hour" | "day";
  times: number[];
  x402: string[];
  prepaid: string[];
}
interface Summary {
  now: number;
  counters: Record<string, number>;
  revenue: { hour: Series; day: Series; totalX402: string; totalPrepaid: string };
  ledger: { id?: number; time: number; method: string; payer: string; amount: string; transaction?: string; resource: string; paymentId?: string }[];
  ledgerCount: number;
  recent: { time: number; method: string; status: string; amount?: string; reason?: string; resource: string }[];
  pending: { settlements: { time: number; resource: string; reason?: string }[]; prepaidAwaitingPayment: number };
}

const $ = (id: string) => document.getElementById(id)!;
let bucket: "hour" | "day" = "hour";
let last: Summary | undefined;
let plot: uPlot | undefined;

/** Atomic USDC (6 decimals) as dollars, exact: "200000" → "0.20". */
function usd(atomic: string | number): string {
  const s = String(atomic).padStart(7, "0");
  const whole = s.slice(0, -6);
  const frac = s.slice(-6).replace(/0{1,4}$/, "").padEnd(2, "0");
  return `${whole}.${frac}`;
}

function cell(tr: HTMLTableRowElement, text: string, cls?: string): void {
  const td = tr.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
}

function rows(tableId: string, items: unknown[], fill: (tr: HTMLTableRowElement, item: never) => void, empty: string): void {
  const tbody = ($(tableId) as HTMLTableElement).tBodies[0]!;
  tbody.replaceChildren();
  if (items.length === 0) {
    const tr = tbody.insertRow();
    const td = tr.insertCell();
    td.colSpan = 8;
    td.className = "empty";
    td.textContent = empty;
    return;
  }
  for (const item of items) fill(tbody.insertRow(), item as never);
}

const pathOf = (url: string) => {
  try {
    return new URL(url).pathname;
  } catch {
    return url;
  }
};
const time = (ms: number) => new Date(ms).toLocaleString();

function chart(s: Series): void {
  const el = $("chart");
  const size = s.bucket === "hour" ? 3600 : 86400;
  const data: uPlot.AlignedData = [s.times, s.x402.map((v) => Number(v) / 1e6), s.prepaid.map((v) => Number(v) / 1e6)];
  // What the chart plots, for people using assistive technology (and tests): buckets with revenue.
  const points = s.times.filter((_t, i) => s.x402[i] !== "0" || s.prepaid[i] !== "0").length;
  el.dataset.points = String(points);
  el.setAttribute("aria-label", `Revenue per ${s.bucket}: ${points} period(s) with payments`);
  el.setAttribute("role", "img");
  const width = Math.max(280, el.clientWidth || 600);
  // Rebuilt on each refresh: the x range is fixed to the data's first and last bucket, padded by one.
  plot?.destroy();
  const first = s.times[0] ?? Math.floor(Date.now() / 1000);
  const lastT = s.times[s.times.length - 1] ?? first;
  const bars = uPlot.paths.bars!({ size: [0.4, 60], align: 0 });
  plot = new uPlot(
    {
      width,
      height: 260,
      title: `Revenue per ${s.bucket} (USD)`,
      scales: { x: { time: true, range: () => [first - size, lastT + size] }, y: { range: (_u, _min, max) => [0, Math.max(0.25, (max ?? 0) * 1.2)] } },
      series: [
        {},
        { label: "x402 calls", stroke: "#1f6feb", fill: "rgba(31,111,235,.35)", paths: bars, points: { show: true, size: 8 }, value: (_u, v) => (v == null ? "–" : `$${v.toFixed(2)}`) },
        { label: "prepaid purchases", stroke: "#e67e22", fill: "rgba(230,126,34,.35)", paths: bars, points: { show: true, size: 8 }, value: (_u, v) => (v == null ? "–" : `$${v.toFixed(2)}`) },
      ],
      axes: [{}, { values: (_u, vals) => vals.map((v) => `$${v.toFixed(2)}`) }],
    },
    data,
    el,
  );
}

function render(s: Summary): void {
  const c = s.counters;
  $("c-revenue").textContent = usd(String(c.revenue_atomic ?? 0));
  $("c-settled").textContent = String(c.payments_settled ?? 0);
  $("c-verified").textContent = String(c.payments_verified ?? 0);
  $("c-failed").textContent = String(c.payments_failed ?? 0);
  $("c-required").textContent = String(c.payment_required ?? 0);
  $("totals").textContent = `All time: $${usd(s.revenue.totalX402)} from x402 calls, $${usd(s.revenue.totalPrepaid)} from prepaid purchases (${s.ledgerCount} ledger entries).`;
  chart(bucket === "hour" ? s.revenue.hour : s.revenue.day);
  rows("recent", s.recent, (tr, e: Summary["recent"][number]) => {
    cell(tr, time(e.time));
    cell(tr, e.method === "token" ? "prepaid token" : "x402");
    cell(tr, e.status, `status ${e.status}`);
    cell(tr, e.amount ? `$${usd(e.amount)}` : "");
    cell(tr, e.resource);
    cell(tr, e.reason ?? "");
  }, "No payments since the server started.");
  $("pending").textContent = `${s.pending.settlements.length} settlement(s) with an unknown outcome; ${s.pending.prepaidAwaitingPayment} prepaid payment(s) created and not yet paid.`;
  rows("pending-list", s.pending.settlements, (tr, e: Summary["pending"]["settlements"][number]) => {
    cell(tr, time(e.time));
    cell(tr, e.resource);
    cell(tr, e.reason ?? "");
  }, "None.");
  rows("ledger", s.ledger, (tr, e: Summary["ledger"][number]) => {
    cell(tr, String(e.id ?? ""));
    cell(tr, time(e.time));
    cell(tr, e.paymentId ? `prepaid ${e.paymentId}` : "x402 call");
    cell(tr, `$${usd(e.amount)}`);
    cell(tr, `${e.payer.slice(0, 8)}…${e.payer.slice(-6)}`, "mono");
    tr.cells[tr.cells.length - 1]!.title = e.payer;
    cell(tr, e.transaction ?? "", "mono tx");
    cell(tr, pathOf(e.resource));
  }, "The ledger is empty.");
  $("updated").textContent = `Updated ${new Date(s.now).toLocaleTimeString()}.`;
}

async function refresh(): Promise<void> {
  try {
    const res = await fetch("/admin/api/summary", { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (res.status === 401) {
      location.reload();
      return;
    }
    if (!res.ok) throw new Error(`${res.status}`);
    last = (await res.json()) as Summary;
    render(last);
  } catch (err) {
    $("updated").textContent = `Could not refresh (${(err as Error).message}); retrying.`;
  }
}

for (const [id, b] of [["by-hour", "hour"], ["by-day", "day"]] as const) {
  $(id).addEventListener("click", () => {
    bucket = b;
    $("by-hour").setAttribute("aria-pressed", String(b === "hour"));
    $("by-day").setAttribute("aria-pressed", String(b === "day"));
    if (last) render(last);
  });
}
addEventListener("resize", () => plot?.setSize({ width: Math.max(280, $("chart").clientWidth), height: 260 }));
void refresh();
setInterval(() => void refresh(), 5000);
