/**
 * Five-point alignment of the local face engine (issue 18): the similarity
 * fit recovers a known transform, the warp puts landmarks where the template
 * says, and the mirrored crop is the crop mirrored.
 */
import assert from "node:assert/strict";
import { ARCFACE_112, alignFace, applySimilarity, estimateSimilarity, template } from "../example-server/src/engine/local/align.js";
import { sumOfUnitVectors } from "../example-server/src/engine/local/model.js";

describe("engine/local: five-point face alignment", () => {
  it("recovers a rotation + scale + shift from five point pairs", () => {
    const theta = 0.3;
    const s = 1.7;
    const src = ARCFACE_112.map(([x, y]) => [x, y]);
    const dst = src.map(([x, y]) => [s * (Math.cos(theta) * x - Math.sin(theta) * y) + 12, s * (Math.sin(theta) * x + Math.cos(theta) * y) - 5]);
    const m = estimateSimilarity(src, dst);
    assert.ok(Math.abs(Math.hypot(m.ar, m.ai) - s) < 1e-9);
    assert.ok(Math.abs(Math.atan2(m.ai, m.ar) - theta) < 1e-9);
    for (let i = 0; i < 5; i++) {
      const [x, y] = applySimilarity(m, src[i][0], src[i][1]);
      assert.ok(Math.abs(x - dst[i][0]) < 1e-9 && Math.abs(y - dst[i][1]) < 1e-9);
    }
    assert.throws(() => estimateSimilarity([[1, 1], [1, 1]], [[0, 0], [1, 1]]), /coincide/);
  });

  it("warps a tilted, scaled face so its landmarks land on the template, and mirrors on request", () => {
    // A 300×300 grey image with bright 3×3 dots at five "landmarks": the template rotated 20°, ×2, shifted.
    const W = 300;
    const px = new Uint8Array(W * W * 3).fill(40);
    const m = { c: Math.cos(0.35) * 2, s: Math.sin(0.35) * 2 };
    const pts = ARCFACE_112.map(([x, y]) => [m.c * x - m.s * y + 90, m.s * x + m.c * y + 20]);
    for (const [x, y] of pts) {
      for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) {
        const o = ((Math.round(y) + dy) * W + Math.round(x) + dx) * 3;
        px[o] = px[o + 1] = px[o + 2] = 250;
      }
    }
    const image = { width: W, height: W, data: px.buffer };
    const size = 112;
    const crop = alignFace(image, pts.flat(), size);
    const at = (c: Float32Array, x: number, y: number) => c[(Math.round(y) * size + Math.round(x)) * 3];
    for (const [x, y] of template(size)) assert.ok(at(crop, x, y) > 0.6, `dot at (${x}, ${y}): ${at(crop, x, y)}`);
    assert.ok(at(crop, 56, 20) < 0.3, "background stays dark");
    // zoom < 1 pulls the dots towards the centre
    const zoomed = template(size, 0.8);
    assert.ok(zoomed[0][0] > template(size)[0][0] && zoomed[1][0] < template(size)[1][0]);
    const flipped = alignFace(image, pts.flat(), size, 1, true);
    for (let y = 0; y < size; y += 7) for (let x = 0; x < size; x += 5) {
      assert.ok(Math.abs(flipped[(y * size + x) * 3] - crop[(y * size + size - 1 - x) * 3]) < 1e-6);
    }
  });

  it("averages two descriptors as unit vectors", () => {
    const v = sumOfUnitVectors(Float32Array.from([3, 4]), Float32Array.from([0, 10]));
    assert.ok(Math.abs(v[0] - 0.6) < 1e-6 && Math.abs(v[1] - 1.8) < 1e-6);
    assert.deepEqual(Array.from(sumOfUnitVectors(Float32Array.from([0, 0]), Float32Array.from([2, 0]))), [1, 0]);
  });
});
