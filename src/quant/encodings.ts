/**
 * Encodings: the scale/offset of every quantizer. The JSON is close to AIMET's/QNN's
 * encodings format so vendor tools can read it: per tensor a list (one entry per channel for
 * per-channel weights) of {bitwidth, dtype, is_symmetric, scale, offset, min, max}, where
 * x = (q + offset) * scale (offset = -zero_point). Extra fields, under `mpq`: `axis`
 * (per-channel axis), `signed`, `range_bits` (weights whose integers use a narrower signed
 * range than their storage bitwidth: 7 for int8 weights in [-63, 63] under reduce_range),
 * and `rounded`: for each weight whose integers were chosen by data-aware rounding,
 * `{ dtype: 'int8' | 'int16', q, bias_delta }` where `q` is the base64 of
 * the integers (little-endian, in the weight tensor's own layout and element order) and
 * `bias_delta` the float per output channel added to the bias of the node that reads the
 * weight. Without it a weight is rounded to nearest with its scales, so a tool that only
 * reads the AIMET fields gets a consistent (but less accurate) model.
 */
import { MpqError } from '../errors';

export interface EncodingEntry {
  bitwidth: number;
  dtype: 'int';
  is_symmetric: 'True' | 'False';
  scale: number;
  offset: number;
  min: number;
  max: number;
}

export interface TensorEncoding {
  entries: EncodingEntry[];
  /** Per-channel axis; absent for per-tensor. */
  axis?: number;
  signed: boolean;
  /**
   * Weights only: the signed range in bits when narrower than the storage `bitwidth` (7 under
   * a profile's reduce_range: int8 storage, integers in [-63, 63]). Stored under `mpq.range_bits`.
   */
  rangeBits?: number;
  /**
   * Weights only: integers chosen by data-aware rounding, in the weight's layout (absent:
   * round to nearest), and the bias correction that goes with them (per output channel, added
   * to the bias of the node that reads the weight). Stored in the JSON under `mpq.rounded`.
   */
  quantized?: Float32Array;
  biasDelta?: Float32Array;
}

export interface Encodings {
  activations: Map<string, TensorEncoding>;
  weights: Map<string, TensorEncoding>;
}

export interface EncodingsJson {
  version: string;
  activation_encodings: Record<string, EncodingEntry[]>;
  param_encodings: Record<string, EncodingEntry[]>;
  /** Per-channel axes and signedness, by tensor; data-aware integers and bias shifts, by weight. */
  mpq: { axis: Record<string, number>; signed: Record<string, boolean>; range_bits?: Record<string, number>; rounded?: Record<string, RoundedJson> };
}

export interface RoundedJson {
  dtype: 'int8' | 'int16';
  /** Base64 of the little-endian integers, in the weight's layout. */
  q: string;
  /** Per output channel, added to the bias (absent: none). */
  bias_delta?: number[];
}

function packInts(q: Float32Array, bits: number): RoundedJson {
  const wide = bits > 8;
  const arr = wide ? Int16Array.from(q) : Int8Array.from(q);
  return { dtype: wide ? 'int16' : 'int8', q: Buffer.from(arr.buffer, arr.byteOffset, arr.byteLength).toString('base64') };
}

function unpackInts(r: RoundedJson, name: string): Float32Array {
  const b = Buffer.from(r.q, 'base64');
  if (r.dtype === 'int8') return Float32Array.from(new Int8Array(b.buffer, b.byteOffset, b.byteLength));
  if (r.dtype === 'int16' && b.byteLength % 2 === 0) {
    const a = new Int16Array(b.byteLength / 2);
    for (let i = 0; i < a.length; i++) a[i] = b.readInt16LE(2 * i);
    return Float32Array.from(a);
  }
  throw new MpqError('MPQ_BAD_INPUT', `encodings mpq.rounded.${name}: unknown dtype '${r.dtype}' or odd byte length`);
}

export function encodingsToJson(e: Encodings): EncodingsJson {
  const axis: Record<string, number> = {};
  const signed: Record<string, boolean> = {};
  const rounded: Record<string, RoundedJson> = {};
  const rangeBits: Record<string, number> = {};
  for (const [k, v] of e.weights) {
    if (v.rangeBits !== undefined) rangeBits[k] = v.rangeBits;
    if (!v.quantized) continue;
    rounded[k] = packInts(v.quantized, v.entries[0].bitwidth);
    if (v.biasDelta) rounded[k].bias_delta = Array.from(v.biasDelta);
  }
  const conv = (m: Map<string, TensorEncoding>) => {
    const out: Record<string, EncodingEntry[]> = {};
    for (const [k, v] of m) {
      out[k] = v.entries;
      if (v.axis !== undefined) axis[k] = v.axis;
      signed[k] = v.signed;
    }
    return out;
  };
  return {
    version: '1.0.0',
    activation_encodings: conv(e.activations),
    param_encodings: conv(e.weights),
    mpq: { axis, signed, ...(Object.keys(rangeBits).length ? { range_bits: rangeBits } : {}), ...(Object.keys(rounded).length ? { rounded } : {}) },
  };
}

export function encodingsFromJson(j: EncodingsJson): Encodings {
  const conv = (o: Record<string, EncodingEntry[]>) =>
    new Map(Object.entries(o ?? {}).map(([k, entries]) => [k, { entries, axis: j.mpq?.axis?.[k], signed: j.mpq?.signed?.[k] ?? entries[0]?.is_symmetric === 'True' }]));
  const weights: Map<string, TensorEncoding> = conv(j.param_encodings);
  for (const [k, b] of Object.entries(j.mpq?.range_bits ?? {})) {
    const e = weights.get(k);
    if (!e) throw new MpqError('MPQ_BAD_INPUT', `encodings mpq.range_bits names '${k}', which has no param_encodings entry`);
    if (!Number.isInteger(b) || b < 2 || b > e.entries[0].bitwidth) throw new MpqError('MPQ_BAD_INPUT', `encodings mpq.range_bits.${k} = ${b}: must be an integer from 2 to the weight's bitwidth (${e.entries[0].bitwidth})`);
    e.rangeBits = b;
  }
  for (const [k, r] of Object.entries(j.mpq?.rounded ?? {})) {
    const e = weights.get(k);
    if (!e) throw new MpqError('MPQ_BAD_INPUT', `encodings mpq.rounded names '${k}', which has no param_encodings entry`);
    e.quantized = unpackInts(r, k);
    if (r.bias_delta) e.biasDelta = Float32Array.from(r.bias_delta);
  }
  return { activations: conv(j.activation_encodings), weights };
}
