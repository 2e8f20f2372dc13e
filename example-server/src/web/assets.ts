/**
 * The browser assets of the example server's pages: the TypeScript modules in
 * `example-server/web/` bundled with esbuild (viem and uPlot included, code
 * split so the dev wallet's signer loads only when used) plus the style
 * sheets, built once in memory on first use and served under `/assets/` with
 * content-hashed names. Nothing is fetched from elsewhere at run time.
 */
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import type { RequestHandler } from "express";

/** Public path of the assets. */
export const ASSETS_PATH = "/assets/";

const WEB_DIR = fileURLToPath(new URL("../../web/", import.meta.url));

interface Built {
  /** name → content */
  files: Map<string, { body: Buffer; type: string }>;
  /** entry point ("face", "admin", "style", "uplot") → served file name */
  entries: Record<string, string>;
}

export interface WebAssets {
  /** The file names of the entry points (waits for the first build). */
  entries(): Promise<Record<string, string>>;
  /** `GET /assets/:file`. */
  handler: RequestHandler;
  /** Bytes of each served file (page weight). */
  sizes(): Promise<Record<string, number>>;
}

async function build(): Promise<Built> {
  const esbuild = await import("esbuild");
  const result = await esbuild.build({
    entryPoints: { face: `${WEB_DIR}face.ts`, admin: `${WEB_DIR}admin.ts` },
    bundle: true,
    splitting: true,
    format: "esm",
    minify: true,
    target: "es2022",
    platform: "browser",
    write: false,
    outdir: "/out",
    entryNames: "[name]-[hash]",
    chunkNames: "chunk-[hash]",
    metafile: true,
    legalComments: "none",
    logLevel: "silent",
  });
  const files = new Map<string, { body: Buffer; type: string }>();
  const entries: Record<string, string> = {};
  for (const f of result.outputFiles) {
    const name = f.path.slice("/out/".length);
    files.set(name, { body: Buffer.from(f.contents), type: "text/javascript; charset=utf-8" });
    const entry = /^(face|admin)-/.exec(name)?.[1];
    if (entry && !name.startsWith("chunk-")) entries[entry] = name;
  }
  const css = async (key: string, path: string) => {
    const body = await readFile(path);
    const { createHash } = await import("node:crypto");
    const name = `${key}-${createHash("sha256").update(body).digest("hex").slice(0, 10)}.css`;
    files.set(name, { body, type: "text/css; charset=utf-8" });
    entries[key] = name;
  };
  await css("style", `${WEB_DIR}style.css`);
  await css("uplot", createRequire(import.meta.url).resolve("uplot/dist/uPlot.min.css"));
  return { files, entries };
}

/** The assets, built on first use. */
export function webAssets(): WebAssets {
  let built: Promise<Built> | undefined;
  const get = () => {
    built ??= build();
    built.catch(() => (built = undefined));
    return built;
  };
  return {
    entries: async () => (await get()).entries,
    sizes: async () => Object.fromEntries([...(await get()).files].map(([k, v]) => [k, v.body.length])),
    handler: async (req, res, next) => {
      try {
        const { files } = await get();
        const f = files.get(String(req.params.file));
        if (!f) return void res.status(404).json({ error: "not_found", message: "no such asset." });
        res.status(200).set({ "Content-Type": f.type, "Cache-Control": "public, max-age=31536000, immutable", "X-Content-Type-Options": "nosniff" }).send(f.body);
      } catch (err) {
        next(err);
      }
    },
  };
}
