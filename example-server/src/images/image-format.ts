/**
 * Image type detection by magic bytes. The declared Content-Type of a
 * download (or anything the client claims) is never trusted.
 */

/** The image formats the face engines accept. */
export type ImageFormat = "jpeg" | "png" | "bmp" | "webp";

/** MIME type for each accepted format. */
export const IMAGE_MIME: Readonly<Record<ImageFormat, string>> = {
  jpeg: "image/jpeg",
  png: "image/png",
  bmp: "image/bmp",
  webp: "image/webp",
};

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
/** BITMAPCOREHEADER, BITMAPINFOHEADER, V2, V3, OS/2 v2, V4, V5 header sizes. */
const BMP_DIB_HEADER_SIZES = new Set([12, 40, 52, 56, 64, 108, 124]);

function startsWith(buf: Uint8Array, sig: readonly number[], offset = 0): boolean {
  if (buf.length < offset + sig.length) return false;
  return sig.every((b, i) => buf[offset + i] === b);
}

function ascii(text: string): number[] {
  return Array.from(text, (c) => c.charCodeAt(0));
}

/**
 * Detects JPEG, PNG, BMP or WEBP from the leading bytes of `buf`.
 * Returns undefined for anything else (GIF, SVG, HTML, truncated data, ...).
 *
 * - JPEG: FF D8 FF (SOI followed by a marker)
 * - PNG: the 8-byte PNG signature
 * - BMP: "BM" plus a known DIB header size at offset 14 (a bare "BM" prefix is
 *   too weak: any text starting with "BM" would pass)
 * - WEBP: "RIFF" <size> "WEBP"
 */
export function sniffImageFormat(buf: Uint8Array): ImageFormat | undefined {
  if (startsWith(buf, [0xff, 0xd8, 0xff])) return "jpeg";
  if (startsWith(buf, PNG_SIGNATURE)) return "png";
  if (startsWith(buf, ascii("RIFF")) && startsWith(buf, ascii("WEBP"), 8)) return "webp";
  if (startsWith(buf, ascii("BM")) && buf.length >= 18) {
    const dibSize = buf[14] | (buf[15] << 8) | (buf[16] << 16) | (buf[17] << 24);
    if (BMP_DIB_HEADER_SIZES.has(dibSize)) return "bmp";
  }
  return undefined;
}

/** Default cap on the pixel count of one image: 4096 × 4096, Alibaba CompareFace's own limit. */
export const DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096;

/** Width and height of an image, in pixels. */
export interface ImageSize {
  width: number;
  height: number;
}

const u16be = (b: Uint8Array, i: number) => (b[i]! << 8) | b[i + 1]!;
const u16le = (b: Uint8Array, i: number) => b[i]! | (b[i + 1]! << 8);
const u24le = (b: Uint8Array, i: number) => b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16);
const u32be = (b: Uint8Array, i: number) => ((b[i]! << 24) >>> 0) + ((b[i + 1]! << 16) | (b[i + 2]! << 8) | b[i + 3]!);
const i32le = (b: Uint8Array, i: number) => b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16) | (b[i + 3]! << 24);

/** JPEG: the first start-of-frame marker (SOF0–SOF15 except DHT, JPG, DAC) before the scan. */
function jpegSize(b: Uint8Array): ImageSize | undefined {
  let i = 2;
  while (i + 9 < b.length) {
    if (b[i] !== 0xff) {
      i += 1; // decoders skip stray bytes between segments, so this reader does too
      continue;
    }
    const marker = b[i + 1]!;
    if (marker === 0xff) {
      i += 1; // fill byte
      continue;
    }
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd8)) {
      i += 2; // markers without a length
      continue;
    }
    if (marker === 0xda || marker === 0xd9) return undefined; // scan or end before any frame header
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
      return { height: u16be(b, i + 5), width: u16be(b, i + 7) };
    }
    i += 2 + u16be(b, i + 2);
  }
  return undefined;
}

function webpSize(b: Uint8Array): ImageSize | undefined {
  if (b.length < 30) return undefined;
  const chunk = String.fromCharCode(b[12]!, b[13]!, b[14]!, b[15]!);
  if (chunk === "VP8X") return { width: u24le(b, 24) + 1, height: u24le(b, 27) + 1 };
  if (chunk === "VP8L") {
    const [b0, b1, b2, b3] = [b[21]!, b[22]!, b[23]!, b[24]!];
    return { width: 1 + (((b1 & 0x3f) << 8) | b0), height: 1 + (((b3 & 0x0f) << 10) | (b2 << 2) | ((b1 & 0xc0) >> 6)) };
  }
  if (chunk === "VP8 ") return { width: u16le(b, 26) & 0x3fff, height: u16le(b, 28) & 0x3fff };
  return undefined;
}

/**
 * Reads an image's dimensions from its header, without decoding it, so a
 * decompression bomb (a few KB that decode to gigabytes) is refused before
 * any decoder sees it. Undefined when the header is truncated or malformed.
 */
export function imageSize(buf: Uint8Array, format: ImageFormat): ImageSize | undefined {
  switch (format) {
    case "png":
      // The IHDR chunk must come first: length, "IHDR", width, height.
      return buf.length >= 24 ? { width: u32be(buf, 16), height: u32be(buf, 20) } : undefined;
    case "jpeg":
      return jpegSize(buf);
    case "bmp":
      if (buf.length < 26) return undefined;
      if (buf[14] === 12) return { width: u16le(buf, 18), height: u16le(buf, 20) };
      return { width: Math.abs(i32le(buf, 18)), height: Math.abs(i32le(buf, 22)) };
    case "webp":
      return webpSize(buf);
  }
}
