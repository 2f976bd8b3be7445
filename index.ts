/**
 * onnx-mpq: mixed-precision post-training quantization of ONNX models.
 *
 * ```ts
 * import { Model } from 'onnx-mpq';
 * const model = Model.fromFile('mobilenet.onnx');
 * const { probs } = await model.run({ input: { shape: [1, 3, 224, 224], data } });
 * ```
 * @packageDocumentation
 */
export { Model } from './src/model';
export type { Tensor, RunOptions, Compiled } from './src/model';
export { MpqError } from './src/errors';
export type { ErrorCode } from './src/errors';
export { inspectModel, formatInspect } from './src/inspect';
export type { InspectReport } from './src/inspect';
export { readNpy, parseNpy, encodeNpy } from './src/npy';
export type { NpyArray } from './src/npy';
export type { Graph, Node, ConstTensor, ValueInfo, DType } from './src/graph/ir';
