/**
 * One small model per op (and per tricky attribute combination), run by the engine and by
 * ONNX Runtime on the same inputs. Guards the op semantics the real models rely on.
 */
import test from 'ava';
import { Model } from '../index';
import { ortRun, randomData, relMaxDiff, tinyModel, TinyNode, TinyTensor } from './helpers';

interface Case {
  name: string;
  inputs: Record<string, (number | string)[]>;
  nodes: TinyNode[];
  inits?: Record<string, TinyTensor>;
  opset?: number;
  outputs?: string[];
  tol?: number;
}

const rnd = (dims: number[], seed: number): TinyTensor => ({ dims, values: Array.from(randomData(dims.reduce((a, b) => a * b, 1), seed)) });
const ints = (values: number[]): TinyTensor => ({ dims: [values.length], type: 7, values });

const cases: Case[] = [
  { name: 'Conv 3x3 pads strides bias', inputs: { x: [2, 3, 11, 9] }, inits: { w: rnd([4, 3, 3, 3], 2), b: rnd([4], 3) },
    nodes: [{ op: 'Conv', inputs: ['x', 'w', 'b'], outputs: ['y'], attrs: { pads: [1, 0, 2, 1], strides: [2, 1] } }] },
  { name: 'Conv depthwise dilated padded', inputs: { x: [1, 6, 10, 10] }, inits: { w: rnd([6, 1, 3, 3], 4) },
    nodes: [{ op: 'Conv', inputs: ['x', 'w'], outputs: ['y'], attrs: { group: 6, dilations: [2, 2], pads: [2, 1, 2, 0] } }] },
  { name: 'Conv depthwise stride 2 SAME_UPPER', inputs: { x: [2, 6, 9, 10] }, inits: { w: rnd([6, 1, 3, 3], 4) },
    nodes: [{ op: 'Conv', inputs: ['x', 'w'], outputs: ['y'], attrs: { group: 6, strides: [2, 2], auto_pad: 'SAME_UPPER' } }] },
  { name: 'Conv grouped 1x1 + Relu fused', inputs: { x: [3, 8, 5, 5] }, inits: { w: rnd([4, 4, 1, 1], 5), b: rnd([4], 6) },
    nodes: [{ op: 'Conv', inputs: ['x', 'w', 'b'], outputs: ['c'], attrs: { group: 2 } }, { op: 'Relu', inputs: ['c'], outputs: ['y'] }] },
  { name: 'Conv 1-D', inputs: { x: [2, 3, 17] }, inits: { w: rnd([5, 3, 4], 7) },
    nodes: [{ op: 'Conv', inputs: ['x', 'w'], outputs: ['y'], attrs: { strides: [3], pads: [1, 2] } }] },
  { name: 'ConvTranspose stride 2', inputs: { x: [1, 4, 5, 6] }, inits: { w: rnd([4, 3, 2, 2], 8), b: rnd([3], 9) },
    nodes: [{ op: 'ConvTranspose', inputs: ['x', 'w', 'b'], outputs: ['y'], attrs: { strides: [2, 2] } }] },
  { name: 'ConvTranspose pads output_padding', inputs: { x: [2, 2, 4, 4] }, inits: { w: rnd([2, 3, 3, 3], 10) },
    nodes: [{ op: 'ConvTranspose', inputs: ['x', 'w'], outputs: ['y'], attrs: { strides: [2, 2], pads: [1, 1, 1, 1], output_padding: [1, 1] } }] },
  { name: 'Gemm transB + C', inputs: { a: [3, 5] }, inits: { b: rnd([4, 5], 11), c: rnd([4], 12) },
    nodes: [{ op: 'Gemm', inputs: ['a', 'b', 'c'], outputs: ['y'], attrs: { transB: 1, alpha: 0.5, beta: 1.5 } }] },
  { name: 'MatMul batched broadcast', inputs: { a: [2, 3, 4, 5], b: [3, 5, 6] }, nodes: [{ op: 'MatMul', inputs: ['a', 'b'], outputs: ['y'] }] },
  { name: 'MatMul constant right 3-D', inputs: { a: [2, 7, 8] }, inits: { w: rnd([8, 6], 13) }, nodes: [{ op: 'MatMul', inputs: ['a', 'w'], outputs: ['y'] }] },
  { name: 'MaxPool ceil pads', inputs: { x: [1, 2, 9, 9] },
    nodes: [{ op: 'MaxPool', inputs: ['x'], outputs: ['y'], attrs: { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1], ceil_mode: 1 } }] },
  { name: 'AveragePool exclude pad', inputs: { x: [2, 3, 8, 7] },
    nodes: [{ op: 'AveragePool', inputs: ['x'], outputs: ['y'], attrs: { kernel_shape: [3, 2], strides: [2, 2], pads: [1, 0, 1, 1] } }] },
  { name: 'AveragePool include pad', inputs: { x: [1, 2, 6, 6] },
    nodes: [{ op: 'AveragePool', inputs: ['x'], outputs: ['y'], attrs: { kernel_shape: [3, 3], pads: [1, 1, 1, 1], count_include_pad: 1 } }] },
  { name: 'Global pools', inputs: { x: [2, 3, 5, 4] }, outputs: ['y', 'z'],
    nodes: [{ op: 'GlobalAveragePool', inputs: ['x'], outputs: ['y'] }, { op: 'GlobalMaxPool', inputs: ['x'], outputs: ['z'] }] },
  { name: 'BatchNormalization alone', inputs: { x: [2, 3, 4, 4] }, inits: { s: rnd([3], 1), b: rnd([3], 2), m: rnd([3], 3), v: { dims: [3], values: [0.5, 1, 2] } },
    nodes: [{ op: 'BatchNormalization', inputs: ['x', 's', 'b', 'm', 'v'], outputs: ['y'] }] },
  { name: 'Conv + BatchNormalization (folded)', inputs: { x: [1, 3, 6, 6] }, inits: { w: rnd([4, 3, 3, 3], 21), s: rnd([4], 22), b: rnd([4], 23), m: rnd([4], 24), v: { dims: [4], values: [0.5, 1, 2, 3] } },
    nodes: [{ op: 'Conv', inputs: ['x', 'w'], outputs: ['c'] }, { op: 'BatchNormalization', inputs: ['c', 's', 'b', 'm', 'v'], outputs: ['y'] }] },
  { name: 'LayerNormalization', inputs: { x: [2, 5, 8] }, inits: { s: rnd([8], 1), b: rnd([8], 2) }, opset: 17,
    nodes: [{ op: 'LayerNormalization', inputs: ['x', 's', 'b'], outputs: ['y'], attrs: { axis: -1, epsilon: 1e-5 } }] },
  { name: 'Broadcast arithmetic', inputs: { a: [2, 3, 4, 5], b: [3, 1, 1] }, outputs: ['y'],
    nodes: [
      { op: 'Add', inputs: ['a', 'b'], outputs: ['t1'] }, { op: 'Mul', inputs: ['t1', 'a'], outputs: ['t2'] },
      { op: 'Sub', inputs: ['t2', 'b'], outputs: ['t3'] }, { op: 'Div', inputs: ['t3', 'c'], outputs: ['t4'] },
      { op: 'Max', inputs: ['t4', 'a'], outputs: ['t5'] }, { op: 'Min', inputs: ['t5', 'b'], outputs: ['y'] },
    ], inits: { c: { dims: [5], values: [1, 2, -3, 4, 0.5] } } },
  { name: 'Unary maths', inputs: { x: [4, 6] }, outputs: ['y'],
    nodes: [
      { op: 'Abs', inputs: ['x'], outputs: ['a'] }, { op: 'Sqrt', inputs: ['a'], outputs: ['b'] }, { op: 'Exp', inputs: ['b'], outputs: ['c'] },
      { op: 'Log', inputs: ['c'], outputs: ['d'] }, { op: 'Erf', inputs: ['x'], outputs: ['e'] }, { op: 'Neg', inputs: ['e'], outputs: ['f'] },
      { op: 'Add', inputs: ['d', 'f'], outputs: ['g'] }, { op: 'Pow', inputs: ['g', 'two'], outputs: ['y'] },
    ], inits: { two: { dims: [], values: [2] } } },
  { name: 'Activations', inputs: { x: [3, 10] }, outputs: ['y1', 'y2', 'y3', 'y4', 'y5', 'y6', 'y7'], opset: 14,
    nodes: [
      { op: 'Sigmoid', inputs: ['x'], outputs: ['y1'] }, { op: 'HardSigmoid', inputs: ['x'], outputs: ['y2'], attrs: { alpha: 0.3, beta: 0.4 } },
      { op: 'HardSwish', inputs: ['x'], outputs: ['y3'] }, { op: 'Tanh', inputs: ['x'], outputs: ['y4'] },
      { op: 'LeakyRelu', inputs: ['x'], outputs: ['y5'], attrs: { alpha: 0.1 } }, { op: 'PRelu', inputs: ['x', 'slope'], outputs: ['y6'] },
      { op: 'Clip', inputs: ['x', 'lo', 'hi'], outputs: ['y7'] },
    ], inits: { slope: rnd([10], 3), lo: { dims: [], values: [-0.2] }, hi: { dims: [], values: [0.3] } } },
  { name: 'Gelu (opset 20)', inputs: { x: [2, 7] }, opset: 20, nodes: [{ op: 'Gelu', inputs: ['x'], outputs: ['y'] }] },
  { name: 'Softmax axis 1 and legacy', inputs: { x: [2, 3, 4] }, outputs: ['y', 'z'], opset: 11,
    nodes: [{ op: 'Softmax', inputs: ['x'], outputs: ['y'], attrs: { axis: 1 } }, { op: 'LogSoftmax', inputs: ['x'], outputs: ['z'], attrs: { axis: 2 } }] },
  { name: 'Softmax opset 13 default axis', inputs: { x: [2, 3, 4] }, nodes: [{ op: 'Softmax', inputs: ['x'], outputs: ['y'] }] },
  { name: 'Reductions', inputs: { x: [2, 3, 4] }, outputs: ['a', 'b', 'c'],
    nodes: [
      { op: 'ReduceMean', inputs: ['x'], outputs: ['a'], attrs: { axes: [-1], keepdims: 1 } },
      { op: 'ReduceMax', inputs: ['x'], outputs: ['b'], attrs: { axes: [0, 2], keepdims: 0 } },
      { op: 'ReduceSum', inputs: ['x', 'ax'], outputs: ['c'], attrs: { keepdims: 1 } },
    ], inits: { ax: ints([1]) } },
  { name: 'Transpose Reshape Flatten', inputs: { x: [2, 3, 4, 5] }, outputs: ['y'],
    nodes: [
      { op: 'Transpose', inputs: ['x'], outputs: ['t'], attrs: { perm: [0, 2, 3, 1] } },
      { op: 'Reshape', inputs: ['t', 'shp'], outputs: ['r'] }, { op: 'Flatten', inputs: ['r'], outputs: ['y'], attrs: { axis: 2 } },
    ], inits: { shp: ints([2, -1, 0]) } },
  { name: 'Slice negative step, Concat, Split', inputs: { x: [4, 6] }, outputs: ['y1', 'y2'],
    nodes: [
      { op: 'Slice', inputs: ['x', 'st', 'en', 'ax', 'sp'], outputs: ['s'] },
      { op: 'Concat', inputs: ['s', 's'], outputs: ['c'], attrs: { axis: 1 } },
      { op: 'Split', inputs: ['c', 'spl'], outputs: ['y1', 'y2'], attrs: { axis: 1 } },
    ], inits: { st: ints([-1, 1]), en: ints([-100, 5]), ax: ints([1, 0]), sp: ints([-2, 1]), spl: ints([2, 4]) } },
  { name: 'Gather with negative indices', inputs: { x: [5, 4] }, inits: { i: { dims: [2, 2], type: 7, values: [0, -1, 3, 2] } },
    nodes: [{ op: 'Gather', inputs: ['x', 'i'], outputs: ['y'], attrs: { axis: 0 } }] },
  { name: 'Pad reflect and edge', inputs: { x: [1, 2, 4, 5] }, outputs: ['y', 'z'],
    nodes: [
      { op: 'Pad', inputs: ['x', 'p'], outputs: ['y'], attrs: { mode: 'reflect' } },
      { op: 'Pad', inputs: ['x', 'p', 'cv'], outputs: ['z'] },
    ], inits: { p: ints([0, 0, 1, 2, 0, 0, 2, 1]), cv: { dims: [], values: [0.5] } } },
  { name: 'Expand Tile Where Equal', inputs: { x: [3, 1] }, outputs: ['y'],
    nodes: [
      { op: 'Expand', inputs: ['x', 'es'], outputs: ['e'] }, { op: 'Tile', inputs: ['e', 'rep'], outputs: ['t'] },
      { op: 'Greater', inputs: ['t', 'zero'], outputs: ['m'] }, { op: 'Where', inputs: ['m', 't', 'zero'], outputs: ['y'] },
    ], inits: { es: ints([2, 3, 4]), rep: ints([1, 2, 1]), zero: { dims: [], values: [0] } } },
  { name: 'Resize nearest asymmetric floor (det)', inputs: { x: [1, 2, 5, 7] }, opset: 11,
    nodes: [{ op: 'Resize', inputs: ['x', 'roi', 'sc'], outputs: ['y'], attrs: { mode: 'nearest', coordinate_transformation_mode: 'asymmetric', nearest_mode: 'floor' } }],
    inits: { roi: { dims: [0], values: [] }, sc: { dims: [4], values: [1, 1, 2, 2] } } },
  { name: 'Resize linear half_pixel sizes', inputs: { x: [1, 2, 5, 7] }, opset: 13,
    nodes: [{ op: 'Resize', inputs: ['x', '', '', 'sz'], outputs: ['y'], attrs: { mode: 'linear' } }], inits: { sz: ints([1, 2, 9, 4]) } },
  { name: 'Shape arithmetic folding (Shape->Gather->Concat->Reshape)', inputs: { x: ['N', 6, 4] }, outputs: ['y'],
    nodes: [
      { op: 'Shape', inputs: ['x'], outputs: ['s'] }, { op: 'Gather', inputs: ['s', 'i0'], outputs: ['n'], attrs: { axis: 0 } },
      { op: 'Unsqueeze', inputs: ['n', 'ax0'], outputs: ['n1'] }, { op: 'Concat', inputs: ['n1', 'tail'], outputs: ['shp'], attrs: { axis: 0 } },
      { op: 'Cast', inputs: ['shp'], outputs: ['shp2'], attrs: { to: 7 } }, { op: 'Reshape', inputs: ['x', 'shp2'], outputs: ['y'] },
    ], inits: { i0: { dims: [], type: 7, values: [0] }, ax0: ints([0]), tail: ints([-1, 3]) } },
  { name: 'Clip with bounds computed at run time (audio front-end: max(x) - 1), Min/Max of runtime tensors', inputs: { x: [2, 3, 5], z: [2, 1, 5] }, outputs: ['y', 'y2', 'y3'],
    nodes: [
      { op: 'ReduceMax', inputs: ['x'], outputs: ['mx'], attrs: { keepdims: 0 } }, { op: 'Sub', inputs: ['mx', 'one'], outputs: ['lo'] },
      { op: 'Clip', inputs: ['x', 'lo'], outputs: ['y'] },
      { op: 'ReduceMin', inputs: ['z'], outputs: ['mn'], attrs: { keepdims: 0 } },
      { op: 'Clip', inputs: ['x', 'mn', 'mx'], outputs: ['y2'] },
      { op: 'Max', inputs: ['x', 'z', 'mn'], outputs: ['m1'] }, { op: 'Min', inputs: ['m1', 'lo'], outputs: ['y3'] },
    ], inits: { one: { dims: [], values: [1] } } },
  { name: 'float16 weights', inputs: { x: [2, 4] }, inits: { w: { dims: [4, 3], type: 10, values: [0.5, -1, 2, 0.25, 0.125, -0.75, 1.5, 3, -2, 1, 0, 0.0625] } },
    nodes: [{ op: 'Cast', inputs: ['w'], outputs: ['w32'], attrs: { to: 1 } }, { op: 'MatMul', inputs: ['x', 'w32'], outputs: ['y'] }] },
  { name: 'QuantizeLinear -> DequantizeLinear per-axis int8', inputs: { x: [2, 3, 4] }, outputs: ['y'],
    nodes: [{ op: 'QuantizeLinear', inputs: ['x', 's', 'z'], outputs: ['q'], attrs: { axis: 1 } }, { op: 'DequantizeLinear', inputs: ['q', 's', 'z'], outputs: ['y'], attrs: { axis: 1 } }],
    inits: { s: { dims: [3], values: [0.01, 0.02, 0.005] }, z: { dims: [3], type: 3, values: [0, 3, -2] } } },
  { name: 'QuantizeLinear -> DequantizeLinear uint8 per-tensor (ties)', inputs: { x: [3, 8] }, outputs: ['y'],
    nodes: [{ op: 'QuantizeLinear', inputs: ['x', 's', 'z'], outputs: ['q'] }, { op: 'DequantizeLinear', inputs: ['q', 's', 'z'], outputs: ['y'] }],
    inits: { s: { dims: [], values: [0.0078125] }, z: { dims: [], type: 2, values: [128] } } },
];

for (const c of cases) {
  test(`op vs onnxruntime: ${c.name}`, async (t) => {
    const outs = c.outputs ?? ['y'];
    const bytes = tinyModel({
      inputs: c.inputs,
      outputs: Object.fromEntries(outs.map((o) => [o, null])),
      nodes: c.nodes,
      inits: c.inits,
      opset: c.opset,
    });
    const feeds: Record<string, { shape: number[]; data: Float32Array }> = {};
    let seed = 100;
    for (const [k, dims] of Object.entries(c.inputs)) {
      const shape = dims.map((d) => (typeof d === 'number' ? d : 2));
      const data = randomData(shape.reduce((a, b) => a * b, 1), seed++);
      // exact ties for rounding tests
      if (c.name.includes('ties')) data.forEach((_, i) => (data[i] = (i - 12) * 0.0078125 * 0.5));
      feeds[k] = { shape, data };
    }
    const ref = await ortRun(bytes, feeds);
    const ours = await Model.fromBytes(bytes).run(feeds);
    for (const o of outs) {
      t.deepEqual(ours[o].shape, ref[o].shape, `${o} shape`);
      const d = relMaxDiff(ours[o].data, ref[o].data);
      t.true(d <= (c.tol ?? 1e-5), `${o}: relative max diff ${d}`);
    }
  });
}
