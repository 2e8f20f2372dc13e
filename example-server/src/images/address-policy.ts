/**
 * Which network addresses the image fetcher may connect to.
 *
 * The policy is a deny-list over the IANA special-purpose registries plus
 * known cloud metadata endpoints, and for IPv6 additionally a positive rule:
 * only global unicast (2000::/3) is acceptable. IPv6 forms that embed an IPv4
 * address (IPv4-mapped, IPv4-translated, NAT64 64:ff9b::/96, 6to4 2002::/16)
 * are judged by the embedded IPv4 address. Anything that cannot be parsed is
 * refused (fail closed).
 */
import { isIP } from "node:net";

/** A parsed IP address: 4 bytes (IPv4) or 16 bytes (IPv6), network order. */
export interface ParsedIp {
  family: 4 | 6;
  bytes: Uint8Array;
}

/** Why an address is refused. */
export interface AddressVerdict {
  /** Short category, e.g. "loopback", "private", "cloud metadata endpoint". */
  reason: string;
  /**
   * True for addresses that stay refused even when they are on the caller's
   * explicit allowlist (cloud metadata endpoints).
   */
  alwaysForbidden: boolean;
}

/**
 * Parses an IP address literal (no brackets, no zone id) into bytes.
 * Returns undefined for anything that is not a plain IPv4 dotted quad or a
 * valid IPv6 literal (IPv6 may end in a dotted quad).
 */
export function parseIp(text: string): ParsedIp | undefined {
  const kind = isIP(text);
  if (kind === 4) {
    const parts = text.split(".").map(Number);
    return { family: 4, bytes: Uint8Array.from(parts) };
  }
  if (kind !== 6 || text.includes("%")) return undefined;
  let head = text;
  let tailV4: number[] = [];
  const lastColon = head.lastIndexOf(":");
  if (head.slice(lastColon + 1).includes(".")) {
    tailV4 = head.slice(lastColon + 1).split(".").map(Number);
    // Replace the dotted quad with two placeholder groups so the group count works out.
    head = head.slice(0, lastColon + 1) + "0:0";
  }
  const halves = head.split("::");
  if (halves.length > 2) return undefined;
  const toGroups = (s: string): number[] => (s === "" ? [] : s.split(":").map((g) => parseInt(g, 16)));
  const left = toGroups(halves[0]);
  const right = halves.length === 2 ? toGroups(halves[1]) : [];
  const fill = 8 - left.length - right.length;
  if (halves.length === 1 ? fill !== 0 : fill < 1) return undefined;
  const groups = [...left, ...new Array<number>(halves.length === 2 ? fill : 0).fill(0), ...right];
  if (groups.length !== 8 || groups.some((g) => !Number.isInteger(g) || g < 0 || g > 0xffff)) return undefined;
  const bytes = new Uint8Array(16);
  groups.forEach((g, i) => {
    bytes[2 * i] = g >> 8;
    bytes[2 * i + 1] = g & 0xff;
  });
  if (tailV4.length === 4) bytes.set(tailV4, 12);
  return { family: 6, bytes };
}

/** Formats IPv4 bytes as a dotted quad. */
function v4String(bytes: Uint8Array): string {
  return Array.from(bytes).join(".");
}

interface Rule {
  prefix: Uint8Array;
  bits: number;
  reason: string;
  alwaysForbidden?: boolean;
}

function rule(cidr: string, reason: string, alwaysForbidden = false): Rule {
  const [addr, bitsText] = cidr.split("/");
  const parsed = parseIp(addr);
  if (!parsed) throw new Error(`bad CIDR in address policy: ${cidr}`);
  return { prefix: parsed.bytes, bits: Number(bitsText), reason, alwaysForbidden };
}

function matches(bytes: Uint8Array, r: Rule): boolean {
  if (bytes.length !== r.prefix.length) return false;
  let bits = r.bits;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((bytes[i] & mask) !== (r.prefix[i] & mask)) return false;
  }
  return true;
}

const METADATA = "cloud metadata endpoint";

/** IPv4 rules, most specific first (first match wins). */
const V4_RULES: Rule[] = [
  rule("169.254.169.254/32", METADATA, true), // AWS, GCP, Azure, OCI, DigitalOcean, ...
  rule("169.254.170.2/32", METADATA, true), // AWS ECS task metadata
  rule("100.100.100.200/32", METADATA, true), // Alibaba Cloud
  rule("168.63.129.16/32", METADATA, true), // Azure WireServer (a public-looking address)
  rule("192.0.0.192/32", METADATA, true), // Oracle Cloud (inside 192.0.0.0/24 anyway)
  rule("0.0.0.0/8", "unspecified (\"this network\")"),
  rule("10.0.0.0/8", "private"),
  rule("100.64.0.0/10", "carrier-grade NAT (shared address space)"),
  rule("127.0.0.0/8", "loopback"),
  rule("169.254.0.0/16", "link-local"),
  rule("172.16.0.0/12", "private"),
  rule("192.0.0.0/24", "IETF protocol assignments"),
  rule("192.0.2.0/24", "documentation (TEST-NET-1)"),
  rule("192.88.99.0/24", "6to4 relay anycast"),
  rule("192.168.0.0/16", "private"),
  rule("198.18.0.0/15", "benchmarking"),
  rule("198.51.100.0/24", "documentation (TEST-NET-2)"),
  rule("203.0.113.0/24", "documentation (TEST-NET-3)"),
  rule("224.0.0.0/4", "multicast"),
  rule("255.255.255.255/32", "broadcast"),
  rule("240.0.0.0/4", "reserved"),
];

/** IPv6 rules that refuse outright, most specific first. */
const V6_RULES: Rule[] = [
  rule("fd00:ec2::254/128", METADATA, true), // AWS IMDS over IPv6
  rule("::/128", "unspecified"),
  rule("::1/128", "loopback"),
  rule("::/96", "deprecated IPv4-compatible IPv6"),
  rule("64:ff9b:1::/48", "local-use NAT64"),
  rule("100::/64", "discard-only"),
  rule("2001::/32", "Teredo tunnelling"),
  rule("2001::/23", "IETF protocol assignments"),
  rule("2001:db8::/32", "documentation"),
  rule("3fff::/20", "documentation"),
  rule("5f00::/16", "SRv6 segment identifiers"),
  rule("fc00::/7", "unique local (private)"),
  rule("fe80::/10", "link-local"),
  rule("fec0::/10", "site-local (deprecated)"),
  rule("ff00::/8", "multicast"),
];

/** IPv6 forms that embed an IPv4 address; judged by the embedded address. */
const V6_EMBEDDING: Array<{ rule: Rule; v4Offset: number; label: string }> = [
  { rule: rule("::ffff:0:0/96", ""), v4Offset: 12, label: "IPv4-mapped IPv6" },
  { rule: rule("::ffff:0:0:0/96", ""), v4Offset: 12, label: "IPv4-translated IPv6" },
  { rule: rule("64:ff9b::/96", ""), v4Offset: 12, label: "NAT64 IPv6" },
  { rule: rule("2002::/16", ""), v4Offset: 2, label: "6to4 IPv6" },
];

const GLOBAL_UNICAST_V6 = rule("2000::/3", "");

function classifyV4(bytes: Uint8Array): AddressVerdict | undefined {
  const hit = V4_RULES.find((r) => matches(bytes, r));
  return hit ? { reason: hit.reason, alwaysForbidden: hit.alwaysForbidden === true } : undefined;
}

/**
 * The IPv4 address an IPv6 address stands for, when it is one of the
 * embedding forms (mapped, translated, NAT64, 6to4); otherwise undefined.
 */
export function embeddedIpv4(ip: ParsedIp): Uint8Array | undefined {
  if (ip.family !== 6) return undefined;
  for (const e of V6_EMBEDDING) {
    if (matches(ip.bytes, e.rule)) return ip.bytes.slice(e.v4Offset, e.v4Offset + 4);
  }
  return undefined;
}

/**
 * Classifies an IP address literal (as returned by DNS or taken from a URL,
 * without brackets). Returns undefined when the address is publicly
 * routable and may be fetched from, or a verdict explaining the refusal.
 * Unparseable input is refused.
 */
export function classifyAddress(address: string): AddressVerdict | undefined {
  const ip = parseIp(address);
  if (!ip) return { reason: "not a plain IP address", alwaysForbidden: true };
  if (ip.family === 4) return classifyV4(ip.bytes);

  // Exact IPv6 rules (metadata, loopback, ...) take precedence over embedding.
  const direct = V6_RULES.find((r) => matches(ip.bytes, r) && r.bits === 128);
  if (direct) return { reason: direct.reason, alwaysForbidden: direct.alwaysForbidden === true };

  for (const e of V6_EMBEDDING) {
    if (!matches(ip.bytes, e.rule)) continue;
    const v4 = ip.bytes.slice(e.v4Offset, e.v4Offset + 4);
    const inner = classifyV4(v4);
    return inner
      ? { reason: `${e.label} form of a ${inner.reason} address`, alwaysForbidden: inner.alwaysForbidden }
      : undefined;
  }
  const hit = V6_RULES.find((r) => matches(ip.bytes, r));
  if (hit) return { reason: hit.reason, alwaysForbidden: hit.alwaysForbidden === true };
  if (!matches(ip.bytes, GLOBAL_UNICAST_V6)) return { reason: "not global unicast", alwaysForbidden: false };
  return undefined;
}

/**
 * A canonical comparison key for an address: IPv4 dotted quad, with IPv6
 * embedding forms reduced to their IPv4 address, other IPv6 as 32 hex digits.
 * Returns undefined for non-IP input.
 */
export function addressKey(address: string): string | undefined {
  const ip = parseIp(address);
  if (!ip) return undefined;
  if (ip.family === 4) return v4String(ip.bytes);
  const v4 = embeddedIpv4(ip);
  // Only the mapped/translated forms are the same host as the IPv4 address;
  // NAT64/6to4 go through a gateway, so keep them distinct.
  if (v4 && (matches(ip.bytes, V6_EMBEDDING[0].rule) || matches(ip.bytes, V6_EMBEDDING[1].rule))) return v4String(v4);
  return Buffer.from(ip.bytes).toString("hex");
}
