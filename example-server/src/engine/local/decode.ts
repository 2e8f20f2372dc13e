/**
 * Turns untrusted image bytes into RGB pixels for inference, with sharp
 * (libvips runs on the libuv thread pool, not on the event loop).
 */
import sharp, { type Metadata, type Sharp, type SharpOptions } from "sharp";
import { FaceError } from "../types.js";
import { BmpError, decodeBmp, isBmp } from "./bmp.js";
import type { DecodedImage } from "./protocol.js";

/** Formats accepted from callers (sharp detects the format from the bytes; BMP is decoded by `bmp.ts`). */
const ACCEPTED_FORMATS = new Set(["jpeg", "png", "webp", "gif", "bmp"]);

/** Smallest accepted side in pixels: below this no face can be detected reliably. */
export const MIN_SIDE = 48;

/** Limits applied while decoding. */
export interface DecodeLimits {
  /** Images with more pixels than this are refused with `image_too_large` before decoding. */
  maxPixels: number;
  /** Longest side given to the model; larger images are downscaled (rects are mapped back). */
  maxSide: number;
}

/** A decoded image plus what is needed to map model coordinates back to the caller's image. */
export interface PreparedImage {
  /** Pixels given to the model (downscaled to `maxSide`). */
  image: DecodedImage;
  /** Size of the caller's image after EXIF orientation. */
  width: number;
  height: number;
  /** Multiply model x coordinates by this to get original pixels. */
  scaleX: number;
  /** Multiply model y coordinates by this to get original pixels. */
  scaleY: number;
  /** Detected input format. */
  format: string;
}

/**
 * Decodes one image: EXIF rotation applied, alpha flattened onto white,
 * converted to 8-bit sRGB, downscaled to at most `maxSide` on the longest side.
 * Throws FaceError `invalid_image` (not an image, corrupt, unsupported format,
 * too small) or `image_too_large` (more than `maxPixels`). `label` ("A"/"B")
 * names the image in messages.
 */
export async function prepareImage(bytes: Buffer, label: string, limits: DecodeLimits): Promise<PreparedImage> {
  if (!bytes || bytes.length === 0) throw new FaceError("invalid_image", `image ${label} is empty`);
  const tooLarge = (w: number, h: number) =>
    new FaceError("image_too_large", `image ${label} is ${w}×${h} pixels; the limit is ${limits.maxPixels} pixels`);

  let pipeline: Sharp;
  let format: string;
  let width: number;
  let height: number;
  if (isBmp(bytes)) {
    let bmp: ReturnType<typeof decodeBmp>;
    try {
      bmp = decodeBmp(bytes, limits.maxPixels);
    } catch (err) {
      if (err instanceof BmpError && err.tooLarge) {
        throw new FaceError("image_too_large", `image ${label}: ${err.message} of ${limits.maxPixels} pixels`);
      }
      throw new FaceError("invalid_image", `image ${label} is not a valid image: ${(err as Error).message}`, { cause: err });
    }
    format = "bmp";
    width = bmp.width;
    height = bmp.height;
    pipeline = sharp(bmp.data, { raw: { width, height, channels: 3 } });
  } else {
    const opts: SharpOptions = { limitInputPixels: limits.maxPixels, failOn: "warning", pages: 1 };
    let meta: Metadata;
    try {
      meta = await sharp(bytes, opts).metadata();
    } catch (err) {
      throw decodeError(err, label);
    }
    format = meta.format ?? "unknown";
    if (!ACCEPTED_FORMATS.has(format)) {
      throw new FaceError("invalid_image", `image ${label} has unsupported format ${format}; send JPEG, PNG, BMP or WebP`);
    }
    if (!meta.width || !meta.height) throw new FaceError("invalid_image", `image ${label} has no dimensions`);
    if (meta.width * meta.height > limits.maxPixels) throw tooLarge(meta.width, meta.height);
    const oriented = (meta.orientation ?? 1) >= 5;
    width = oriented ? meta.height : meta.width;
    height = oriented ? meta.width : meta.height;
    pipeline = sharp(bytes, opts).rotate();
  }
  if (Math.min(width, height) < MIN_SIDE) {
    throw new FaceError("invalid_image", `image ${label} is ${width}×${height} pixels; each side must be at least ${MIN_SIDE}`);
  }

  try {
    const { data, info } = await pipeline
      .resize({ width: limits.maxSide, height: limits.maxSide, fit: "inside", withoutEnlargement: true })
      .flatten({ background: "#ffffff" })
      .toColourspace("srgb")
      .raw({ depth: "uchar" })
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`unexpected channel count ${info.channels}`);
    // Copy into a plain ArrayBuffer: sharp's output may be native memory that cannot be transferred.
    const buf = new Uint8Array(data).buffer;
    return {
      image: { width: info.width, height: info.height, data: buf },
      width,
      height,
      scaleX: width / info.width,
      scaleY: height / info.height,
      format,
    };
  } catch (err) {
    if (err instanceof FaceError) throw err;
    throw decodeError(err, label);
  }
}

function decodeError(err: unknown, label: string): FaceError {
  const msg = err instanceof Error ? err.message : String(err);
  if (/pixel limit/i.test(msg)) {
    return new FaceError("image_too_large", `image ${label} exceeds the pixel limit`, { cause: err });
  }
  return new FaceError("invalid_image", `image ${label} is not a valid image (${msg})`, { cause: err });
}
