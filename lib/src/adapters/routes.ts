/**
 * Route keys: `"POST /api/x"`, `"/api/x"` (any verb), `"/files/*"`,
 * `"/items/:id"`, `"/items/[id]"`. Matching is case-insensitive on a
 * normalised path; the most specific key (most literal characters) wins.
 */
import { ConfigError } from "../errors.js";

const VERBS = new Set(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "*"]);

export interface CompiledRoute<T> {
  key: string;
  method: string | undefined;
  /** The path part of the key as written. */
  path: string;
  regex: RegExp;
  specificity: number;
  value: T;
}

/** `s` with every regular-expression metacharacter escaped. */
export function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Anything normalizePath would change: query, hash, escapes, backslashes, double or trailing slashes. */
const NEEDS_NORMALIZING = /[?#%\\]|\/\/|.\/$/;

/** `s` percent-decoded, or as written when it is not valid percent-encoding. */
function decodeOrKeep(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s; // it simply will not match a decoded key
  }
}

/**
 * Normalise a request path: no query/hash, percent-decoded, single slashes, no trailing slash. An
 * encoded slash or backslash (`%2F`, `%5C`) stays encoded and a backslash stays one: Express matches
 * them inside one segment (`/items/a%2Fb` reaches `/items/:id`), so they must not split it here.
 */
export function normalizePath(path: string): string {
  if (!NEEDS_NORMALIZING.test(path)) return path || "/";
  let p = path.split(/[?#]/, 1)[0]!;
  p = p
    .split(/(%2f|%5c)/i)
    .map((part, i) => (i % 2 ? part : decodeOrKeep(part)))
    .join("");
  p = p.replace(/\/{2,}/g, "/");
  if (p.length > 1 && p.endsWith("/")) p = p.slice(0, -1);
  return p || "/";
}

/** Compile one route key. Throws ConfigError for malformed keys. */
export function compileRoute<T>(key: string, value: T): CompiledRoute<T> {
  const m = /^(?:([A-Za-z*]+)\s+)?(\/\S*)$/.exec(key.trim());
  if (!m) throw new ConfigError(`routes[${JSON.stringify(key)}]`, `route keys look like "POST /api/thing", "/api/thing", "/files/*" or "/items/:id".`);
  const method = m[1]?.toUpperCase();
  if (method && !VERBS.has(method)) throw new ConfigError(`routes[${JSON.stringify(key)}]`, `unknown HTTP method ${m[1]}.`);
  const path = normalizePath(m[2]!);
  let specificity = 0;
  const source = path
    .split("/")
    .map((seg) => {
      if (seg === "*") return ".*";
      if (/^:[A-Za-z0-9_]+$/.test(seg) || /^\[[A-Za-z0-9_]+\]$/.test(seg)) return "[^/]+";
      specificity += seg.length + 1;
      return seg.split("*").map(escapeRegExp).join(".*");
    })
    .join("/")
    .replace(/\/\.\*$/, "(?:/.*)?");
  return { key, method: method === "*" ? undefined : method, path, regex: new RegExp(`^${source}$`, "i"), specificity, value };
}

/** A compiled route table. */
export class RouteTable<T> {
  readonly routes: CompiledRoute<T>[];
  constructor(entries: Record<string, T>) {
    this.routes = Object.entries(entries)
      .map(([k, v]) => compileRoute(k, v))
      .sort((a, b) => b.specificity - a.specificity || Number(!!b.method) - Number(!!a.method));
  }
  /** The best route for a request, or undefined. `path` must already be normalised. */
  match(method: string, path: string): CompiledRoute<T> | undefined {
    const verb = method === "HEAD" ? "GET" : method;
    for (const r of this.routes) {
      if (r.method && r.method !== verb && r.method !== method) continue;
      if (r.regex.test(path)) return r;
    }
    return undefined;
  }
}
