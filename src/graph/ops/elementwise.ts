/** Elementwise ops: broadcasting binary/variadic ops, unary maths, activations, Cast, Where. */
import { ConstTensor, DType } from '../ir';
import { Lowered, OpCtx, OpDef, Val } from '../opctx';
import { broadcastShapes, makeConst, mapBroadcast } from '../tensor';

const ONNX_TO: Record<number, DType> = { 1: 'float', 10: 'float', 11: 'float', 16: 'float', 9: 'bool' };

function bcast(c: OpCtx, dtype?: DType): Val[] {
  const ins = c.node.inputs.map((_, i) => c.in(i));
  const shape = broadcastShapes(ins.map((v) => v.shape));
  if (!shape) return c.fail(`input shapes ${ins.map((v) => `[${v.shape}]`).join(', ')} do not broadcast`);
  return [{ dtype: dtype ?? resultType(ins), shape }];
}

function resultType(ins: Val[]): DType {
  return ins.some((v) => v.dtype === 'float') ? 'float' : ins[0].dtype;
}

const truncDiv = (a: number, b: number) => Math.trunc(a / b);
const f32 = Math.fround;

function binary(f: (a: number, b: number, int: boolean) => number, out?: DType): OpDef {
  return {
    infer: (c) => bcast(c, out),
    fold: (c, outs) => {
      const int = outs[0].dtype !== 'float' && c.in(0).dtype !== 'float';
      const r = mapBroadcast([c.constOf(0)!, c.constOf(1)!], outs[0].dtype, (a, b) => f(a, b, int));
      return r && [r];
    },
  };
}

function variadic(f: (...v: number[]) => number): OpDef {
  return {
    infer: (c) => bcast(c),
    fold: (c, outs) => {
      const r = mapBroadcast(c.node.inputs.map((_, i) => c.constOf(i)!), outs[0].dtype, f);
      return r && [r];
    },
  };
}

/** A unary op; `f` (when given) also folds constants. */
function unary(f?: (x: number) => number, out?: DType): OpDef {
  return {
    infer: (c) => [{ dtype: out ?? c.in(0).dtype, shape: c.shape(0) }],
    fold: f
      ? (c, outs) => {
          const x = c.constOf(0)!;
          return [makeConst(outs[0].dtype, x.shape.slice(), Array.from(x.data, f))];
        }
      : undefined,
  };
}

function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x - Math.trunc(x)) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function castTo(c: OpCtx): DType {
  const to = c.ai('to', 1);
  return ONNX_TO[to] ?? 'int';
}

export const ELEMENTWISE: Record<string, OpDef> = {
  Add: binary((a, b) => a + b),
  Sub: binary((a, b) => a - b),
  Mul: binary((a, b) => a * b),
  Div: binary((a, b, int) => (int ? truncDiv(a, b) : a / b)),
  Pow: binary((a, b) => Math.pow(a, b)),
  Mod: {
    ...binary((a, b) => a - b * Math.floor(a / b)),
    fold: (c, outs) => {
      const fmod = c.ai('fmod', 0) === 1;
      const r = mapBroadcast([c.constOf(0)!, c.constOf(1)!], outs[0].dtype, (a, b) => (fmod ? a % b : a - b * Math.floor(a / b)));
      return r && [r];
    },
  },
  Equal: binary((a, b) => +(a === b), 'bool'),
  Less: binary((a, b) => +(a < b), 'bool'),
  Greater: binary((a, b) => +(a > b), 'bool'),
  LessOrEqual: binary((a, b) => +(a <= b), 'bool'),
  GreaterOrEqual: binary((a, b) => +(a >= b), 'bool'),
  And: binary((a, b) => +(!!a && !!b), 'bool'),
  Or: binary((a, b) => +(!!a || !!b), 'bool'),
  Xor: binary((a, b) => +(!!a !== !!b), 'bool'),
  Min: variadic((...v) => Math.min(...v)),
  Max: variadic((...v) => Math.max(...v)),
  Sum: variadic((...v) => v.reduce((a, b) => a + b, 0)),
  Mean: variadic((...v) => v.reduce((a, b) => a + b, 0) / v.length),
  Where: {
    infer: (c) => {
      const shape = broadcastShapes([c.shape(0), c.shape(1), c.shape(2)]);
      if (!shape) return c.fail('input shapes do not broadcast');
      return [{ dtype: c.in(1).dtype, shape }];
    },
    fold: (c, outs) => {
      const r = mapBroadcast([c.constOf(0)!, c.constOf(1)!, c.constOf(2)!], outs[0].dtype, (k, a, b) => (k ? a : b));
      return r && [r];
    },
  },
  PRelu: {
    infer: (c) => {
      if (!broadcastShapes([c.shape(0), c.shape(1)])) c.fail(`slope [${c.shape(1)}] does not broadcast to [${c.shape(0)}]`);
      return [{ dtype: 'float', shape: c.shape(0) }];
    },
  },
  Neg: unary((x) => -x),
  Abs: unary(Math.abs),
  Sqrt: unary((x) => f32(Math.sqrt(x))),
  Exp: unary(Math.exp),
  Log: unary(Math.log),
  Reciprocal: unary((x) => 1 / x),
  Floor: unary(Math.floor),
  Ceil: unary(Math.ceil),
  Round: unary(roundHalfEven),
  Sign: unary(Math.sign),
  Sin: unary(Math.sin),
  Cos: unary(Math.cos),
  Not: unary((x) => +!x, 'bool'),
  Erf: unary(),
  Relu: unary((x) => Math.max(0, x)),
  Sigmoid: unary((x) => 1 / (1 + Math.exp(-x))),
  Tanh: unary(Math.tanh),
  Softplus: unary(),
  HardSwish: unary(),
  HardSigmoid: unary(),
  LeakyRelu: unary(),
  Elu: unary(),
  Gelu: unary(),
  Clip: {
    infer: (c) => [{ dtype: c.in(0).dtype, shape: c.shape(0) }],
    fold: (c) => {
      const { min, max } = clipBounds(c);
      const x = c.constOf(0)!;
      return [makeConst(x.dtype, x.shape.slice(), Array.from(x.data, (v) => Math.min(Math.max(v, min), max)))];
    },
    lower: (c): Lowered => {
      // bounds computed at run time (an audio front-end's `max(x) - 80 dB`) reach Rust as inputs
      if (c.opset >= 11 && ((c.has(1) && !c.constOf(1)) || (c.has(2) && !c.constOf(2)))) {
        for (const i of [1, 2]) if (c.has(i) && c.in(i).shape.reduce((a, b) => a * b, 1) !== 1) c.fail(`${i === 1 ? 'min' : 'max'} (input ${i}) must hold one number, has shape [${c.shape(i)}]`);
        return { inputs: [0, 1, 2], attrs: {} };
      }
      const { min, max } = clipBounds(c);
      return { inputs: [0], attrs: { min: encodeInf(min), max: encodeInf(max) } };
    },
  },
  Cast: {
    infer: (c) => [{ dtype: castTo(c), shape: c.shape(0) }],
    fold: (c, outs) => {
      const x = c.constOf(0)!;
      const t = outs[0].dtype;
      const f = t === 'float' ? (v: number) => v : t === 'bool' ? (v: number) => +(v !== 0) : Math.trunc;
      return [makeConst(t, x.shape.slice(), Array.from(x.data, f), c.ai('to', 1))];
    },
    lower: (c, outs) => ({ inputs: [0], attrs: { to: outs[0].dtype } }),
  },
};

/** JSON cannot carry infinities: Rust reads +-3.4e38 as the open bound. */
export function encodeInf(v: number): number {
  return v === Infinity ? 3.4028234663852886e38 : v === -Infinity ? -3.4028234663852886e38 : v;
}

export function clipBounds(c: OpCtx): { min: number; max: number } {
  if (c.opset < 11) return { min: c.af('min', -Infinity), max: c.af('max', Infinity) };
  const min = c.has(1) ? c.floats(1, 'min') : [-Infinity];
  const max = c.has(2) ? c.floats(2, 'max') : [Infinity];
  return { min: min[0], max: max[0] };
}

export type { ConstTensor };
