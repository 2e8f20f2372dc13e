/**
 * Loading optional packages (better-sqlite3, ioredis, zod, anvil): when one
 * is missing, the error is a one-line `MissingDependencyError` naming the
 * `npm install` that fixes it, instead of a module-resolution stack.
 */
import { createRequire } from "node:module";
import { dirname } from "node:path";
import { MissingDependencyError } from "./errors.js";

const require = createRequire(import.meta.url);

/** True when `err` says that `specifier` (or its package) cannot be found. */
function isNotFound(err: unknown, specifier: string): boolean {
  if (specifier.startsWith(".") || specifier.startsWith("/")) return false; // a file, not a package
  const e = err as { code?: unknown; message?: unknown } | undefined;
  const pkg = specifier.startsWith("@") ? specifier.split("/").slice(0, 2).join("/") : specifier.split("/")[0];
  if (e?.code === "ERR_PACKAGE_PATH_NOT_EXPORTED") return typeof e.message === "string" && e.message.includes(`/${pkg}/package.json`);
  const msg = typeof e?.message === "string" ? e.message : "";
  return (e?.code === "MODULE_NOT_FOUND" || e?.code === "ERR_MODULE_NOT_FOUND") && (msg.includes(`'${pkg}'`) || msg.includes(`'${pkg}/`));
}

/** `require(specifier)`; throws MissingDependencyError when it is not installed. */
export function requireOptional<T>(specifier: string, install: string, feature: string): T {
  try {
    return require(specifier) as T;
  } catch (err) {
    throw isNotFound(err, specifier) ? new MissingDependencyError(install, feature, { cause: err }) : err;
  }
}

/** `import(specifier)`; throws MissingDependencyError when it is not installed. */
export async function importOptional<T>(specifier: string, install: string, feature: string): Promise<T> {
  try {
    return (await import(specifier)) as T;
  } catch (err) {
    throw isNotFound(err, specifier) ? new MissingDependencyError(install, feature, { cause: err }) : err;
  }
}

/** Directory of an installed package, found through its package.json; throws MissingDependencyError when absent. */
export function packageDir(pkg: string, install: string, feature: string): string {
  try {
    return dirname(require.resolve(`${pkg}/package.json`));
  } catch (err) {
    throw isNotFound(err, pkg) ? new MissingDependencyError(install, feature, { cause: err }) : err;
  }
}
