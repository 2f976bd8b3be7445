/**
 * What ONNX Runtime's CPU provider does to QDQ models under its default session options
 * (DESIGN.md section 9), pinned on small models, so that an onnxruntime release that changes
 * it is noticed: the ort-cpu profile and `mpq verify`'s advice are built on these findings.
 *
 * - u8 activations x s8 weights: the optimizer fuses DQ -> Conv -> Q into QLinearConv, whose
 *   x86 kernel without VNNI sums pairs of u8 x s8 products in int16 (vpmaddubsw) and
 *   saturates at full 8-bit weights; with VNNI (vpdpbusd) it does not. Weights in [-64, 64]
 *   cannot saturate (2 x 255 x 64 < 32768): the ort-cpu profile's reduce_range.
 * - int16 weights into Conv: the optimizer quantizes a float Conv bias to int32 at scale
 *   s_x * s_w; with 16-bit activations and weights that scale is so small that an ordinary
 *   bias (|b| > 2^31 * s_x * s_w, about 1.0 here) overflows, becomes INT_MIN, and the output is
 *   wrong (MobileNetV1 W16A16: top-1 0.000). 8-bit weights leave 256 times more room.
 *
 * The expected saturation depends on the CPU the test runs on, read from /proc/cpuinfo.
 */
import test from 'ava';
import { Model } from '../index';
import { cpuHasVnni, verifyExport } from '../src/eval/verify';
import { encodingsToJson } from '../src/quant/encodings';
import { calibrate, exportQdq, quantize } from '../src/quant/quantize';
import { simulate } from '../src/quant/simulate';
import { ortRun, randomData, tinyModel } from './helpers';

const VNNI = cpuHasVnni();

/** x -> Q(u8) -> DQ -> Conv 1x1 (DQ(int8 weights, all `wq`)) -> Q(u8) -> DQ -> y, every x and weight value 1.0. */
function saturatingConv(wq: number, k: number): Uint8Array {
  const m = 2;
  return tinyModel({
    inputs: { x: [1, k, 1, 1] },
    outputs: { y: [1, m, 1, 1] },
    inits: {
      xs: { dims: [], values: [1 / 255] }, xz: { dims: [], type: 2, values: [0] },
      wq: { dims: [m, k, 1, 1], type: 3, values: Array(m * k).fill(wq) },
      ws: { dims: [m], values: Array(m).fill(1 / wq) }, wz: { dims: [m], type: 3, values: Array(m).fill(0) },
      ys: { dims: [], values: [k / 255] }, yz: { dims: [], type: 2, values: [0] },
    },
    nodes: [
      { op: 'QuantizeLinear', inputs: ['x', 'xs', 'xz'], outputs: ['xq'] },
      { op: 'DequantizeLinear', inputs: ['xq', 'xs', 'xz'], outputs: ['xd'] },
      { op: 'DequantizeLinear', inputs: ['wq', 'ws', 'wz'], outputs: ['wd'], attrs: { axis: 0 } },
      { op: 'Conv', inputs: ['xd', 'wd'], outputs: ['c'] },
      { op: 'QuantizeLinear', inputs: ['c', 'ys', 'yz'], outputs: ['cq'] },
      { op: 'DequantizeLinear', inputs: ['cq', 'ys', 'yz'], outputs: ['y'] },
    ],
  });
}

test(`u8 x s8 QLinearConv under default optimizations: ${VNNI ? 'exact (this CPU has VNNI)' : 'saturates at full 8-bit weights, exact at 7-bit (this CPU has no VNNI)'}`, async (t) => {
  const k = 8;
  const x = { shape: [1, k, 1, 1], data: new Float32Array(k).fill(1) };
  for (const wq of [127, 64, 63]) {
    const model = saturatingConv(wq, k);
    const off = await ortRun(model, { x }, { optimize: false });
    const on = await ortRun(model, { x }, { optimize: true });
    // QDQ semantics: sum of k products 1.0 x 1.0, exactly representable on the output grid
    t.deepEqual(Array.from(off.y.data), [k, k], `weights ${wq}, optimizations off`);
    const pairSaturates = 2 * 255 * wq > 32767;
    if (VNNI || !pairSaturates) t.deepEqual(Array.from(on.y.data), [k, k], `weights ${wq}, default optimizations`);
    else {
      // each pair of products clamped to int16: (k/2) * 32767 instead of k * 255 * wq, then requantized
      const ys = k / 255;
      const saturated = Math.fround(Math.round(((k / 2) * 32767) / (255 * wq) / ys) * ys);
      t.true(Math.abs(on.y.data[0] - saturated) < 1e-5 && on.y.data[0] === on.y.data[1], `weights ${wq}: default optimizations gave ${on.y.data[0]}, the saturated value is ${saturated}`);
    }
  }
});

/** A float Conv -> Relu -> Conv model whose first Conv has positive inputs and weights near their channel maximum: u8 x s8 pairs that saturate. */
function positiveConvs(): Model {
  const k = 16, m = 8;
  const w1 = Array.from(randomData(m * k, 5), (v) => 0.75 + 0.25 * Math.abs(v));
  const w2 = Array.from(randomData(4 * m, 6), (v) => 0.5 * v);
  return Model.fromBytes(
    tinyModel({
      inputs: { x: ['N', k, 4, 4] },
      outputs: { y: ['N', 4, 4, 4] },
      inits: { w1: { dims: [m, k, 1, 1], values: w1 }, w2: { dims: [4, m, 1, 1], values: w2 } },
      nodes: [
        { op: 'Conv', inputs: ['x', 'w1'], outputs: ['c1'] },
        { op: 'Relu', inputs: ['c1'], outputs: ['r1'] },
        { op: 'Conv', inputs: ['r1', 'w2'], outputs: ['y'] },
      ],
    }),
  );
}

test(`verify: a W8A8 export is ${VNNI ? 'faithful' : 'not faithful'} in the default session on this CPU; with reduce_range it is faithful and its weights lie in [-63, 63]`, async (t) => {
  const model = positiveConvs();
  const x = { shape: [16, 16, 4, 4], data: Float32Array.from(randomData(16 * 16 * 16, 9), (v) => 0.5 + 0.5 * Math.abs(v)) };
  const batches = async function* () {
    yield { x };
  };
  for (const reduce of [false, true]) {
    const cal = await calibrate(model, batches, { rounding: 'nearest', weightRange: 'mse', actRange: 'minmax', scheme: { reduce_range: reduce } });
    const q = await quantize(cal, { w: 8, a: 8, weights: {}, activations: {} });
    const w1 = q.graph.consts.get('w1_quantized')!;
    const maxAbs = Math.max(...Array.from(w1.data, Math.abs));
    t.is(maxAbs, reduce ? 63 : 127, `reduce_range ${reduce}: largest weight integer`);
    t.is(q.encodings.weights.get('w1')!.entries[0].bitwidth, 8, 'stored and costed as 8-bit');
    // the range travels in encodings.json: the simulation rebuilt from it (mpq run/verify --encodings) has the same integers
    const json = encodingsToJson(q.encodings);
    t.is(json.mpq.range_bits?.w1, reduce ? 7 : undefined);
    t.deepEqual(Array.from(simulate(model, json).graph.consts.get('w1_quantized')!.data), Array.from(w1.data));
    const v = (await verifyExport(exportQdq(q, cal), Model.fromGraph(q.graph), batches()))!;
    t.log(`reduce_range ${reduce}: off ${v.qdq.sqnr_db} dB / ${v.qdq.agreement}, default ${v.optimized.sqnr_db} dB / ${v.optimized.agreement}`);
    t.true(v.qdq.within_limits, 'optimizations off reproduce the simulation');
    t.is(v.faithful, reduce || VNNI, `reduce_range ${reduce}, VNNI ${VNNI}: faithful ${v.faithful} (${v.optimized.sqnr_db} dB, agreement ${v.optimized.agreement})`);
    t.is(v.advice !== undefined, !v.faithful);
  }
});

/** x -> Q(u16) -> DQ -> Conv 1x1 with float bias `b` (weights DQ(`wType`, all `wq`), scale 1/wq) -> Q(u16) -> DQ -> y. */
function biasedConv(b: number, wType: 3 | 5, wq: number): Uint8Array {
  return tinyModel({
    opset: 21,
    inputs: { x: [1, 2, 1, 1] },
    outputs: { y: [1, 1, 1, 1] },
    inits: {
      xs: { dims: [], values: [1 / 65535] }, xz: { dims: [], type: 4, values: [0] },
      wq: { dims: [1, 2, 1, 1], type: wType, values: [wq, wq] },
      ws: { dims: [1], values: [1 / wq] }, wz: { dims: [1], type: wType, values: [0] },
      b: { dims: [1], values: [b] },
      ys: { dims: [], values: [1 / 16384] }, yz: { dims: [], type: 4, values: [0] },
    },
    nodes: [
      { op: 'QuantizeLinear', inputs: ['x', 'xs', 'xz'], outputs: ['xq'] },
      { op: 'DequantizeLinear', inputs: ['xq', 'xs', 'xz'], outputs: ['xd'] },
      { op: 'DequantizeLinear', inputs: ['wq', 'ws', 'wz'], outputs: ['wd'], attrs: { axis: 0 } },
      { op: 'Conv', inputs: ['xd', 'wd', 'b'], outputs: ['c'] },
      { op: 'QuantizeLinear', inputs: ['c', 'ys', 'yz'], outputs: ['cq'] },
      { op: 'DequantizeLinear', inputs: ['cq', 'ys', 'yz'], outputs: ['y'] },
    ],
  });
}

test('int16 weights into Conv under default optimizations: a bias beyond 2^31 * s_x * s_w overflows int32 (output 0), 8-bit weights do not', async (t) => {
  const x = { shape: [1, 2, 1, 1], data: new Float32Array([0.25, 0]) };
  // s_x * s_w = 1/65535 * 1/32767: the int32 bias covers |b| < 1.00005
  for (const [b, wType, wq, broken] of [[0.9, 5, 32767, false], [1.1, 5, 32767, true], [2, 5, 32767, true], [2, 3, 127, false]] as const) {
    const model = biasedConv(b, wType, wq);
    const off = await ortRun(model, { x }, { optimize: false });
    const on = await ortRun(model, { x }, { optimize: true });
    const want = Math.round((0.25 + b) * 16384) / 16384;
    t.true(Math.abs(off.y.data[0] - want) < 1e-6, `bias ${b}, ${wType === 5 ? 'int16' : 'int8'} weights, optimizations off: ${off.y.data[0]}, want ${want}`);
    // broken: the bias became INT_MIN * s_x * s_w, about -1, and the u16 output clamps to 0
    t.is(on.y.data[0], broken ? 0 : off.y.data[0], `bias ${b}, ${wType === 5 ? 'int16' : 'int8'} weights, default optimizations`);
  }
});
