/** Helpers on shapes and constant tensors, used by shape inference and constant folding. */
import { ConstTensor, DType } from './ir';

export const numel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

export function strides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length).fill(1);
  for (let i = shape.length - 2; i >= 0; i--) s[i] = s[i + 1] * shape[i + 1];
  return s;
}

/** numpy broadcast of several shapes, or null when they are incompatible. */
export function broadcastShapes(shapes: readonly (readonly number[])[]): number[] | null {
  const rank = Math.max(0, ...shapes.map((s) => s.length));
  const out = new Array<number>(rank).fill(1);
  for (const s of shapes) {
    for (let i = 0; i < s.length; i++) {
      const o = rank - s.length + i;
      const d = s[i];
      if (out[o] === 1) out[o] = d;
      else if (d !== 1 && d !== out[o]) return null;
    }
  }
  return out;
}

export function makeConst(dtype: DType, shape: number[], values: ArrayLike<number>, onnxType?: number): ConstTensor {
  const data = dtype === 'float' ? Float32Array.from(values) : Float64Array.from(values);
  return { dtype, shape, data, onnxType: onnxType ?? (dtype === 'float' ? 1 : dtype === 'int' ? 7 : 9) };
}

/** Maps each output index of a broadcast to the flat index in an input of shape `inShape`. */
export function broadcastIndexer(inShape: readonly number[], outShape: readonly number[]): (i: number) => number {
  const rank = outShape.length;
  const ins = strides(inShape);
  const outs = strides(outShape);
  const off = rank - inShape.length;
  const eff = outShape.map((_, d) => (d < off || inShape[d - off] === 1 ? 0 : ins[d - off]));
  return (i: number) => {
    let r = 0;
    for (let d = 0; d < rank; d++) {
      const c = Math.floor(i / outs[d]) % outShape[d];
      r += c * eff[d];
    }
    return r;
  };
}

/** Elementwise map with numpy broadcasting over constant inputs. */
export function mapBroadcast(
  inputs: ConstTensor[],
  dtype: DType,
  f: (...v: number[]) => number,
): ConstTensor | null {
  const shape = broadcastShapes(inputs.map((t) => t.shape));
  if (!shape) return null;
  const n = numel(shape);
  const idx = inputs.map((t) => broadcastIndexer(t.shape, shape));
  const out = new Array<number>(n);
  const args = new Array<number>(inputs.length);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < inputs.length; k++) args[k] = inputs[k].data[idx[k](i)];
    out[i] = f(...args);
  }
  return makeConst(dtype, shape, out);
}

/** Normalises a possibly negative axis against a rank, or returns null when out of range. */
export function normAxis(axis: number, rank: number): number | null {
  const a = axis < 0 ? axis + rank : axis;
  return a >= 0 && a < Math.max(rank, 1) ? a : null;
}

export function dtypeOfOnnx(t: number): DType {
  // 1 float, 10 float16, 11 double, 16 bfloat16; 9 bool; everything else is an integer
  if (t === 1 || t === 10 || t === 11 || t === 16) return 'float';
  if (t === 9) return 'bool';
  return 'int';
}
