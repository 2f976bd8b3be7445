/**
 * onnx-mpq: mixed-precision post-training quantization of ONNX models.
 *
 * ```ts
 * import { search, openDataSource } from 'onnx-mpq';
 * const calib = await openDataSource('images/', { preset: 'imagenet-tf', limit: 128 });
 * const result = await search({
 *   model: 'mobilenet.onnx',
 *   calib: { batches: () => calib.batches(), fingerprint: calib.fingerprint(), count: calib.count },
 *   target: { maxBops: 0.75 },
 *   out: 'out/',
 * });
 * ```
 *
 * The pieces are usable alone: {@link Model} runs ONNX models in the Rust engine,
 * {@link calibrate} / {@link quantize} / {@link exportQdq} quantize at one configuration.
 * @packageDocumentation
 */
export { Model } from './src/model';
export type { Tensor, RunOptions, Compiled } from './src/model';
export { MpqError, AbortError } from './src/errors';
export type { ErrorCode } from './src/errors';
export { inspectModel, formatInspect } from './src/inspect';
export type { InspectReport } from './src/inspect';
export { readNpy, parseNpy, encodeNpy } from './src/npy';
export type { NpyArray } from './src/npy';
export type { Graph, Node, ConstTensor, ValueInfo, DType } from './src/graph/ir';

// data
export { openDataSource, loadImages, readLabels, PRESETS, PRESET_NAMES } from './src/data';
export type { DataSource, DataSourceOptions, DataSpec, ImagePreprocess, Labels } from './src/data';

// quantization at one configuration
export { calibrate, quantize, quantizeWith, exportQdq, encodingsFor, DEFAULT_RANGES } from './src/quant/quantize';
export type { Calibrated, Quantized, QuantizeOptions } from './src/quant/quantize';
export { loadBitConfig, NAMED_CONFIGS } from './src/quant/config';
export type { BitConfig } from './src/quant/config';
export { encodingsToJson, encodingsFromJson } from './src/quant/encodings';
export type { Encodings, EncodingsJson, TensorEncoding, EncodingEntry } from './src/quant/encodings';
export { simulate, readEncodings } from './src/quant/simulate';

// the search
export { search } from './src/search/search';
export type { SearchOptions, SearchResult, SearchTarget, EvaluatedPoint, Phase, Progress } from './src/search/search';
export type { CalibrationInput, CalibrationBatches, ModelInput } from './src/search/inputs';
export type { EvaluateFn, EvalData } from './src/search/metric';
export { loadProfile, builtinProfiles } from './src/profiles/profile';
export type { Profile, Candidate } from './src/profiles/profile';

// evaluation helpers
export { ctcGreedyDecode, readCharset } from './src/eval/ctc';
export { argmaxRows, SqnrMeter } from './src/eval/metrics';
