/**
 * Intake of inline images (`ImageDataA/B`): strict base64, size-capped
 * before decoding, type-checked by magic bytes.
 */
import { FaceError } from "../engine/types.js";
import { DEFAULT_MAX_IMAGE_PIXELS, IMAGE_MIME, imageSize, sniffImageFormat, type ImageFormat } from "./image-format.js";

/** Default cap on the decoded size of one image: 5 MB (5 × 1024 × 1024 bytes). */
export const DEFAULT_MAX_IMAGE_BYTES = 5 * 1024 * 1024;

/** An image accepted by {@link decodeImageData}. */
export interface DecodedImage {
  /** The decoded image bytes. */
  bytes: Buffer;
  /** MIME type derived from the magic bytes (never from what the client claims). */
  contentType: string;
  /** Format detected from the magic bytes. */
  format: ImageFormat;
}

const BASE64_BODY = /^[A-Za-z0-9+/]*$/;

/**
 * Decodes a client-supplied base64 image.
 *
 * Rules, in order:
 * - a `data:` URL prefix is refused (`invalid_image`, the message says to strip it);
 * - empty input is refused (`invalid_image`);
 * - the decoded size is computed from the string length *before* decoding and
 *   must not exceed `maxBytes` (`image_too_large`);
 * - only the standard alphabet `A–Z a–z 0–9 + /` is accepted, with `=` padding
 *   to a multiple of 4 characters; whitespace, line breaks and base64url
 *   (`-`, `_`) are refused with a message saying so (`invalid_image`);
 * - the decoded bytes must be JPEG, PNG, BMP or WEBP by magic bytes (`invalid_image`);
 * - the pixel count read from the image header must not exceed `maxPixels` (see {@link checkImagePixels}).
 *
 * @throws FaceError with one of the codes above; `invalid_input` if `base64` is not a string.
 */
export function decodeImageData(base64: string, maxBytes: number = DEFAULT_MAX_IMAGE_BYTES, maxPixels: number = DEFAULT_MAX_IMAGE_PIXELS): DecodedImage {
  if (typeof base64 !== "string") throw new FaceError("invalid_input", "image data must be a base64 string");
  if (/^\s*data:/i.test(base64)) {
    throw new FaceError(
      "invalid_image",
      'image data must be bare base64: strip the "data:<type>;base64," prefix and send only the part after the comma',
    );
  }
  const len = base64.length;
  if (len === 0) throw new FaceError("invalid_image", "image data is empty");

  // Upper bound of the decoded size, computed without decoding.
  const padding = base64.endsWith("==") ? 2 : base64.endsWith("=") ? 1 : 0;
  const decodedSize = Math.floor((len * 3) / 4) - padding;
  if (decodedSize > maxBytes) {
    throw new FaceError("image_too_large", `image data decodes to about ${decodedSize} bytes; the limit is ${maxBytes} bytes`);
  }

  const body = base64.slice(0, len - padding);
  if (!BASE64_BODY.test(body)) {
    if (/\s/.test(body)) {
      throw new FaceError(
        "invalid_image",
        "image data contains whitespace or line breaks; send unwrapped base64 (e.g. `base64 -w0`)",
      );
    }
    if (/[-_]/.test(body)) {
      throw new FaceError("invalid_image", "image data is base64url (- and _); send standard base64 (+ and /)");
    }
    throw new FaceError("invalid_image", "image data contains characters outside the base64 alphabet");
  }
  if (len % 4 !== 0) {
    throw new FaceError(
      "invalid_image",
      "image data has an invalid length: base64 must be padded with '=' to a multiple of 4 characters",
    );
  }

  const bytes = Buffer.from(base64, "base64");
  const format = sniffImageFormat(bytes);
  if (!format) throw new FaceError("invalid_image", "image data is not a JPEG, PNG, BMP or WEBP image");
  checkImagePixels(bytes, format, maxPixels, "image data");
  return { bytes, contentType: IMAGE_MIME[format], format };
}

/**
 * Refuses an image whose header declares more than `maxPixels` pixels
 * (`image_too_large`) before any decoder runs: a small file can decode to a
 * huge bitmap. A header this reader cannot parse is left to the engine, which
 * refuses what it cannot decode.
 */
export function checkImagePixels(bytes: Uint8Array, format: ImageFormat, maxPixels: number, what: string): void {
  const size = imageSize(bytes, format);
  if (size && size.width * size.height > maxPixels) {
    throw new FaceError("image_too_large", `${what} is ${size.width}×${size.height} pixels; the limit is ${maxPixels} pixels (e.g. 4096×4096)`);
  }
}
