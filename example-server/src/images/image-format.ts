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
