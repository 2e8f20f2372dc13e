/**
 * Runs @modelcontextprotocol/conformance 0.1.16 on Node 20 without touching
 * its files: its bundle imports `globSync` from "fs", which Node 20 lacks
 * (only its `tier-check` command calls it). Preload with
 * `node --import ./node20-fs-glob.mjs node_modules/@modelcontextprotocol/conformance/dist/index.js server ...`:
 * a resolve hook hands that package, and only it, a "fs" that is Node's own
 * plus a `globSync` that says it needs Node 22 when called.
 */
import { register } from "node:module";

const hooks = `
const SHIM = "data:text/javascript," + encodeURIComponent(
  'import * as fs from "node:fs"; export * from "node:fs"; export default fs;' +
  'export const globSync = fs.globSync ?? (() => { throw new Error("globSync needs Node 22 (only the conformance tier-check command uses it)"); });'
);
export async function resolve(specifier, context, next) {
  if ((specifier === "fs" || specifier === "node:fs") && context.parentURL && context.parentURL.includes("/@modelcontextprotocol/conformance/")) {
    return { url: SHIM, shortCircuit: true };
  }
  return next(specifier, context);
}`;
register("data:text/javascript," + encodeURIComponent(hooks));
