/**
 * onnx-mpq: mixed-precision post-training quantization of ONNX models.
 *
 * ```ts
 * import { search } from 'onnx-mpq'; // or: const { search } = require('onnx-mpq');
 * const result = await search({
 *   model: 'mobilenet.onnx',                          // a path, ONNX bytes, or a Model
 *   calibration: 'images/',                           // a path (.npy, folder, NAME=PATH,...) or batches
 *   data: { preset: 'imagenet-tf', limit: 128 },      // how images are read
 *   target: { maxBops: 0.75 },                        // or { maxDrop: 0.01 } or { maxSizeMb: 2 }
 *   out: 'out/',
 *   onProgress: (p) => console.log(p.phase, p.done, p.total, p.etaSeconds),
 *   signal: AbortSignal.timeout(10 * 60_000),
 * });
 * ```
 *
 * The high-level calls ({@link loadModel}, {@link inspect}, {@link run}, {@link quantize},
 * {@link search}, {@link evaluate}, {@link verify}) return promises, keep the JS thread free
 * (models decode in a worker, numeric work runs in the Rust engine's threads) and take an
 * AbortSignal; an abort rejects with an {@link AbortError} (code `MPQ_ABORTED`).
 * The pieces are usable alone: {@link Model} runs ONNX models in the Rust engine,
 * {@link calibrate} / {@link quantizeCalibrated} / {@link exportQdq} quantize at one configuration.
 * @packageDocumentation
 */

// the high-level API
export { loadModel, inspect, run, quantize, evaluate, verify } from './src/api';
export type { QuantizeOptions, QuantizeResult, EvaluateOptions, VerifyOptions, EncodingsInput } from './src/api';
export type { EvalResult } from './src/eval/evaluate';
// the exported model in onnxruntime-node against the simulation
export { verifyExport, FAITHFUL_LIMITS, VERIFY_SAMPLES, cpuHasVnni } from './src/eval/verify';
export type { Verification, RuntimeCheck, VerifyOptions as VerifyExportOptions } from './src/eval/verify';
export { search } from './src/search/search';
export type { SearchOptions, SearchResult, SearchTarget, EvaluatedPoint, Phase, Progress } from './src/search/search';
export type { OnProgress } from './src/search/progress';
export type { CalibrationInput, CalibrationBatches, ModelInput } from './src/search/inputs';
export type { EvaluateFn, EvalData } from './src/search/metric';

export { Model } from './src/model';
export type { Runnable } from './src/model';
export type { Tensor, RunOptions, Compiled } from './src/model';
export { MpqError, AbortError } from './src/errors';
export { engineInfo, setEngineLevel, setOrtThreads } from './src/engine';
export type { EngineInfo, EngineLevel } from './src/engine';
export { setLimits, limits, DEFAULT_LIMITS } from './src/limits';
export type { Limits } from './src/limits';
export type { ErrorCode } from './src/errors';
export { inspectModel, formatInspect } from './src/inspect';
export type { InspectReport } from './src/inspect';
export { readNpy, parseNpy, encodeNpy } from './src/npy';
export type { NpyArray } from './src/npy';
export type { Graph, Node, ConstTensor, ValueInfo, DType } from './src/graph/ir';

// data
export { openDataSource, loadImages, readLabels, PRESETS, PRESET_NAMES } from './src/data';
export type { DataSource, DataSourceOptions, DataSpec, ImagePreprocess, Labels } from './src/data';
export type { BatchInfo, Tensor as DataTensor } from './src/data/source';
export type { PresetName } from './src/data/presets';
export type { ImageBatch, ResizeMode } from './src/data/images';
export type { SampleLabels } from './src/eval/labels';
export type { Batches } from './src/quant/calibrate';
export type { RangeMethod } from './src/quant/ranges';
export type { Rounding, RoundingOptions } from './src/quant/rounding';
export type { FrontOrder } from './src/search/pareto';
export type { MetricName } from './src/search/metric';
export type { AttrValue } from './src/graph/ir';

// quantization at one configuration
export { calibrate, quantize as quantizeCalibrated, quantizeWith, exportQdq, encodingsFor, DEFAULT_RANGES } from './src/quant/quantize';
export type { Calibrated, Quantized, QuantizeOptions as CalibrateOptions } from './src/quant/quantize';
export { loadBitConfig, NAMED_CONFIGS } from './src/quant/config';
export type { BitConfig } from './src/quant/config';
export { encodingsToJson, encodingsFromJson } from './src/quant/encodings';
export type { Encodings, EncodingsJson, TensorEncoding, EncodingEntry } from './src/quant/encodings';
export { simulate, readEncodings } from './src/quant/simulate';

// profiles
export { loadProfile, builtinProfiles } from './src/profiles/profile';
export type { Profile, Candidate } from './src/profiles/profile';

// evaluation helpers
export { ctcGreedyDecode, readCharset } from './src/eval/ctc';
export { argmaxRows, SqnrMeter } from './src/eval/metrics';
