/**
 * The one service this example sells, described once. The paywall route
 * table, the MCP tool, the catalog, OpenAPI and llms.txt are all generated
 * from this object, so price and schema cannot drift.
 */

/** Input keys, exactly as Alibaba CompareFace names them. */
export const FACE_INPUT_KEYS = ["ImageURLA", "ImageURLB", "ImageDataA", "ImageDataB", "QualityScoreThreshold"] as const;

/** JSON Schema of the request body. */
export const faceInputSchema = {
  type: "object",
  additionalProperties: false,
  description: "Each side needs its image URL (http/https) or its image data (base64 without a data: prefix). JPEG, PNG, BMP or WEBP, at most 5 MB each.",
  properties: {
    ImageURLA: { type: "string", format: "uri", maxLength: 4096, description: "URL of image A (http or https)." },
    ImageURLB: { type: "string", format: "uri", maxLength: 4096, description: "URL of image B (http or https)." },
    ImageDataA: { type: "string", contentEncoding: "base64", description: "Image A as base64 (no data: prefix)." },
    ImageDataB: { type: "string", contentEncoding: "base64", description: "Image B as base64 (no data: prefix)." },
    QualityScoreThreshold: { type: "number", minimum: 0, maximum: 100, description: "Refuse faces whose quality score is below this (0–100)." },
  },
} as const;

/** JSON Schema of a successful answer. */
export const faceOutputSchema = {
  type: "object",
  required: ["code", "data", "message", "requestId"],
  properties: {
    code: { type: "string", const: "200" },
    content: { type: "string" },
    message: { type: "string" },
    requestId: { type: "string" },
    data: {
      type: "object",
      properties: {
        Action: { type: "string", const: "CompareFace" },
        Result: {
          type: "object",
          properties: {
            Confidence: { type: "number", description: "Similarity 0–100." },
            Thresholds: { type: "array", items: { type: "number" }, description: "Confidence thresholds at false-accept rates 1e-3, 1e-4, 1e-5." },
            RectAList: { type: "array", items: { type: "integer" }, description: "Face in A: left, top, width, height." },
            RectBList: { type: "array", items: { type: "integer" } },
            QualityScoreA: { type: "number" },
            QualityScoreB: { type: "number" },
            IsMaskA: { type: "integer" },
            IsMaskB: { type: "integer" },
            LandmarksAList: { type: "array", items: { type: "number" } },
            LandmarksBList: { type: "array", items: { type: "number" } },
            MessageTips: { type: "string" },
          },
        },
      },
    },
  },
} as const;

/** Everything published about the face-comparison service. */
export const faceService = {
  id: "face-comparison",
  name: "Face comparison",
  description: "Compare the faces in two images and get a similarity score (0–100) with Alibaba Cloud CompareFace thresholds.",
  keywords: ["face", "comparison", "compare", "verification", "similarity", "identity", "biometrics", "alibaba", "compareface", "kyc"],
  method: "POST" as const,
  endpoint: "/api/tools/face-comparison",
  legacyEndpoints: ["/api/tools/aliyun-facebody-compare-face"],
  mcpToolName: "face_comparison",
  price: "$0.20",
  maxCalls: 1,
  tokenTtlSeconds: 86_400,
  inputSchema: faceInputSchema,
  outputSchema: faceOutputSchema,
  exampleRequest: { ImageURLA: "https://example.com/a.jpg", ImageURLB: "https://example.com/b.jpg", QualityScoreThreshold: 20 },
  exampleResponse: {
    code: "200",
    content: "",
    data: { Action: "CompareFace", Result: { Confidence: 88.3, Thresholds: [61, 69, 75], RectAList: [120, 80, 210, 260], RectBList: [98, 71, 230, 281], QualityScoreA: 91.2, QualityScoreB: 88.7, IsMaskA: 0, IsMaskB: 0, MessageTips: "" } },
    message: "success",
    requestId: "0b0c3e5e-2f1d-4a51-9d0c-5a8d6f1e2c3b",
  },
} as const;

export type ServiceDefinition = typeof faceService;

/** All services this server sells (one today). */
export const services: readonly ServiceDefinition[] = [faceService];
