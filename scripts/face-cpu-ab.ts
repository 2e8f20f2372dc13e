/**
 * CPU time per image of two recognizer pipelines, interleaved in one thread
 * (robust to other jobs' load, unlike wall time): decodes N MEDS photos once,
 * then detects + describes each with both pipelines in turn.
 *   node --conditions=server402-source --import tsx scripts/face-cpu-ab.ts [N]
 */
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { prepareImage } from "../example-server/src/engine/local/decode.js";
import { loadFaceModel, type RecognizerName } from "../example-server/src/engine/local/model.js";

const dir = fileURLToPath(new URL("../test/fixtures/faces/meds/", import.meta.url));
const n = Number(process.argv[2] ?? 20);
const files = readdirSync(dir).filter((f) => f.endsWith(".jpg")).slice(0, n);
const images = await Promise.all(files.map(async (f) => (await prepareImage(readFileSync(path.join(dir, f)), "A", { maxPixels: 50_000_000, maxSide: 1280 })).image));
const names: RecognizerName[] = ["faceres", "faceres-aligned"];
const models = [];
for (const r of names) {
  const m = await loadFaceModel(r);
  await m.warmup();
  await m.detect(images[0]);
  models.push(m);
}
const cpu: number[][] = names.map(() => []);
for (let round = 0; round < 2; round++) {
  for (const img of images) {
    for (let k = 0; k < models.length; k++) {
      const c0 = process.cpuUsage();
      await models[k].detect(img);
      const c = process.cpuUsage(c0);
      cpu[k].push((c.user + c.system) / 1000);
    }
  }
}
const med = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
names.forEach((r, k) => console.log(`${r}: median CPU ${med(cpu[k]).toFixed(1)} ms per image (${cpu[k].length} runs)`));
