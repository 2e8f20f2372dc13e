/**
 * Minimal BMP reader (libvips as shipped with sharp has no BMP loader).
 * Supports the variants cameras and Windows tools write: uncompressed 8-bit
 * paletted, 24-bit and 32-bit (BI_RGB, or BI_BITFIELDS with 8-bit masks),
 * bottom-up or top-down. Output is packed RGB for sharp's `raw` input.
 */

/** Thrown for malformed or unsupported BMP data. */
export class BmpError extends Error {
  /** True when the header is fine but the image is larger than allowed. */
  readonly tooLarge: boolean;
  constructor(message: string, tooLarge = false) {
    super(message);
    this.name = "BmpError";
    this.tooLarge = tooLarge;
  }
}

/** True when the buffer starts with a BMP file header ("BM"). */
export function isBmp(buf: Buffer): boolean {
  return buf.length >= 26 && buf[0] === 0x42 && buf[1] === 0x4d;
}

/** Decodes a BMP to packed 8-bit RGB; refuses images over `maxPixels` before allocating. */
export function decodeBmp(buf: Buffer, maxPixels: number): { data: Buffer; width: number; height: number } {
  if (buf.length < 54) throw new BmpError("truncated BMP header");
  const pixelOffset = buf.readUInt32LE(10);
  const headerSize = buf.readUInt32LE(14);
  if (headerSize < 40) throw new BmpError(`unsupported BMP header size ${headerSize}`);
  const width = buf.readInt32LE(18);
  const rawHeight = buf.readInt32LE(22);
  const bpp = buf.readUInt16LE(28);
  const compression = buf.readUInt32LE(30);
  const height = Math.abs(rawHeight);
  const topDown = rawHeight < 0;
  if (width <= 0 || height <= 0) throw new BmpError(`invalid BMP dimensions ${width}×${height}`);
  if (width * height > maxPixels) throw new BmpError(`BMP of ${width}×${height} exceeds the pixel limit`, true);

  let masks: [number, number, number] | undefined;
  if (compression === 3 || compression === 6) {
    if (bpp !== 32) throw new BmpError(`unsupported BMP: BI_BITFIELDS with ${bpp} bits`);
    masks = [buf.readUInt32LE(54), buf.readUInt32LE(58), buf.readUInt32LE(62)];
  } else if (compression !== 0) {
    throw new BmpError(`unsupported BMP compression ${compression}`);
  }
  if (bpp !== 8 && bpp !== 24 && bpp !== 32) throw new BmpError(`unsupported BMP bit depth ${bpp}`);

  let palette: Buffer | undefined;
  if (bpp === 8) {
    const colours = buf.readUInt32LE(46) || 256;
    const start = 14 + headerSize;
    if (colours > 256 || start + colours * 4 > buf.length) throw new BmpError("truncated BMP palette");
    palette = buf.subarray(start, start + colours * 4);
  }

  const stride = Math.ceil((width * bpp) / 32) * 4;
  if (pixelOffset + stride * height > buf.length) throw new BmpError("truncated BMP pixel data");

  const shifts = masks?.map((m) => {
    if (m === 0) throw new BmpError("unsupported BMP: empty channel mask");
    let s = 0;
    while (((m >>> s) & 1) === 0) s++;
    if ((m >>> s) !== 0xff) throw new BmpError("unsupported BMP: channel masks must be 8 bits wide");
    return s;
  });

  const out = Buffer.allocUnsafe(width * height * 3);
  for (let y = 0; y < height; y++) {
    const row = pixelOffset + stride * (topDown ? y : height - 1 - y);
    let o = y * width * 3;
    for (let x = 0; x < width; x++, o += 3) {
      if (bpp === 24) {
        const p = row + x * 3;
        out[o] = buf[p + 2];
        out[o + 1] = buf[p + 1];
        out[o + 2] = buf[p];
      } else if (bpp === 32) {
        const p = row + x * 4;
        if (shifts) {
          const v = buf.readUInt32LE(p);
          out[o] = (v >>> shifts[0]) & 0xff;
          out[o + 1] = (v >>> shifts[1]) & 0xff;
          out[o + 2] = (v >>> shifts[2]) & 0xff;
        } else {
          out[o] = buf[p + 2];
          out[o + 1] = buf[p + 1];
          out[o + 2] = buf[p];
        }
      } else {
        const idx = buf[row + x] * 4;
        if (!palette || idx + 2 >= palette.length) throw new BmpError("BMP palette index out of range");
        out[o] = palette[idx + 2];
        out[o + 1] = palette[idx + 1];
        out[o + 2] = palette[idx];
      }
    }
  }
  return { data: out, width, height };
}
