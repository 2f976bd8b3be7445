/**
 * Encodings: the scale/offset of every quantizer. The JSON is close to AIMET's/QNN's
 * encodings format so vendor tools can read it: per tensor a list (one entry per channel for
 * per-channel weights) of {bitwidth, dtype, is_symmetric, scale, offset, min, max}, where
 * x = (q + offset) * scale (offset = -zero_point). Extra fields: `axis` (per-channel axis),
 * `signed`.
 */

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
   * Weights only: integers chosen by data-aware rounding, in the weight's layout (absent:
   * round to nearest), and the bias correction that goes with them (per output channel, added
   * to the bias of the node that reads the weight). Not part of the encodings JSON.
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
  /** Per-channel axes and signedness, by tensor. */
  mpq: { axis: Record<string, number>; signed: Record<string, boolean> };
}

export function encodingsToJson(e: Encodings): EncodingsJson {
  const axis: Record<string, number> = {};
  const signed: Record<string, boolean> = {};
  const conv = (m: Map<string, TensorEncoding>) => {
    const out: Record<string, EncodingEntry[]> = {};
    for (const [k, v] of m) {
      out[k] = v.entries;
      if (v.axis !== undefined) axis[k] = v.axis;
      signed[k] = v.signed;
    }
    return out;
  };
  return { version: '1.0.0', activation_encodings: conv(e.activations), param_encodings: conv(e.weights), mpq: { axis, signed } };
}

export function encodingsFromJson(j: EncodingsJson): Encodings {
  const conv = (o: Record<string, EncodingEntry[]>) =>
    new Map(Object.entries(o ?? {}).map(([k, entries]) => [k, { entries, axis: j.mpq?.axis?.[k], signed: j.mpq?.signed?.[k] ?? entries[0]?.is_symmetric === 'True' }]));
  return { activations: conv(j.activation_encodings), weights: conv(j.param_encodings) };
}
