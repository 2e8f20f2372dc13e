/**
 * Image intake for face comparison: SSRF-hardened URL download
 * ({@link fetchImage}) and strict inline base64 decoding ({@link decodeImageData}).
 */
export {
  fetchImage,
  DEFAULT_FETCH_TIMEOUT_MS,
  DEFAULT_MAX_REDIRECTS,
  MAX_IMAGE_URL_LENGTH,
  type FetchImageOptions,
  type FetchedImage,
  type ResolveHost,
  type ResolvedAddress,
} from "./fetch-image.js";
export { decodeImageData, checkImagePixels, DEFAULT_MAX_IMAGE_BYTES, type DecodedImage } from "./image-data.js";
export { sniffImageFormat, imageSize, IMAGE_MIME, DEFAULT_MAX_IMAGE_PIXELS, type ImageFormat, type ImageSize } from "./image-format.js";
export { classifyAddress, parseIp, addressKey, type AddressVerdict, type ParsedIp } from "./address-policy.js";
