/**
 * Ranked text search over the catalog: every query word is scored against a
 * service's name, id and aliases, keywords and description (whole-word
 * matches score more than partial ones); services that match no word are
 * left out.
 */
import type { ServiceDescriptor } from "./catalog.js";

/** Longest accepted query, in characters. */
export const MAX_QUERY_LENGTH = 200;

/** One search hit. */
export interface SearchHit {
  score: number;
  /** Which fields matched, for explanation. */
  matched: string[];
  service: ServiceDescriptor;
}

function words(text: string): string[] {
  return text.toLowerCase().split(/[^\p{L}\p{N}]+/u).filter(Boolean);
}

/** A crude English stem, so "faces" finds "face" and "compare" finds "comparison". */
function stem(word: string): string {
  const singular = word.length > 3 ? word.replace(/s$/, "") : word;
  return singular.length > 4 ? singular.replace(/(ing|ed|e)$/, "") : singular;
}

/** Weights per field: an exact word match scores `word`, a prefix/substring match `part`. */
const FIELDS: Array<{ name: string; word: number; part: number; get: (s: ServiceDescriptor) => string[] }> = [
  { name: "name", word: 10, part: 6, get: (s) => words(s.name) },
  { name: "id", word: 8, part: 5, get: (s) => [s.id, ...s.aliases].flatMap((x) => [x.toLowerCase(), ...words(x)]) },
  { name: "keywords", word: 6, part: 3, get: (s) => s.keywords.flatMap((k) => words(k)) },
  { name: "description", word: 2, part: 1, get: (s) => words(s.description) },
];

/** Score every service against `query` (already validated: 1..MAX_QUERY_LENGTH characters) and return hits, best first. */
export function searchServices(services: readonly ServiceDescriptor[], query: string): SearchHit[] {
  const terms = [...new Set(words(query).map(stem))];
  const hits: SearchHit[] = [];
  for (const service of services) {
    let score = 0;
    const matched = new Set<string>();
    for (const term of terms) {
      for (const f of FIELDS) {
        const values = f.get(service).map(stem);
        const points = values.includes(term) ? f.word : term.length >= 3 && values.some((v) => v.startsWith(term) || v.includes(term)) ? f.part : 0;
        if (points) {
          score += points;
          matched.add(f.name);
        }
      }
    }
    if (score > 0) hits.push({ score, matched: [...matched], service });
  }
  return hits.sort((a, b) => b.score - a.score || a.service.id.localeCompare(b.service.id));
}

/** Check a raw `q` query value; returns an error message, or undefined when usable. */
export function queryProblem(q: unknown): string | undefined {
  if (typeof q !== "string") return "give one search query as ?q=, e.g. ?q=face%20compare.";
  if (!q.trim()) return "the search query is empty; give ?q= with at least one word.";
  if (q.length > MAX_QUERY_LENGTH) return `the search query is ${q.length} characters; at most ${MAX_QUERY_LENGTH} are accepted.`;
  if (!words(q).length) return "the search query has no letters or digits.";
  return undefined;
}
