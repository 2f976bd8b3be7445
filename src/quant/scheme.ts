/**
 * Quantization arithmetic, exactly as ONNX QuantizeLinear/DequantizeLinear compute it in f32:
 * q = clamp(round_half_even(x / s) + z, qmin, qmax), x_hat = (q - z) * s.
 */

export const f32 = Math.fround;

export function roundHalfEven(x: number): number {
  // Math.round sends ties up (towards +inf): a tie is exactly when it moved x up by 0.5
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Integer range of a quantizer. Weights: signed narrow range; activations: unsigned. */
export function qrange(bits: number, signed: boolean, narrow = signed): { qmin: number; qmax: number } {
  if (signed) return { qmin: narrow ? -(2 ** (bits - 1) - 1) : -(2 ** (bits - 1)), qmax: 2 ** (bits - 1) - 1 };
  return { qmin: 0, qmax: 2 ** bits - 1 };
}

export function quantize(x: number, s: number, z: number, qmin: number, qmax: number): number {
  const q = roundHalfEven(f32(x / s)) + z;
  return q < qmin ? qmin : q > qmax ? qmax : q;
}

export function fakeQuant(x: number, s: number, z: number, qmin: number, qmax: number): number {
  return f32((quantize(x, s, z, qmin, qmax) - z) * s);
}

/** Asymmetric unsigned encoding of a range (widened to contain 0, so that 0 is exact). */
export function asymmetric(min: number, max: number, bits: number): { scale: number; zeroPoint: number; min: number; max: number } {
  const { qmax } = qrange(bits, false);
  let lo = Math.min(0, min);
  let hi = Math.max(0, max);
  if (!(hi > lo)) hi = lo + 1e-8;
  let scale = f32((hi - lo) / qmax);
  if (scale === 0 || !Number.isFinite(scale)) scale = f32(1e-8);
  const zeroPoint = Math.min(qmax, Math.max(0, roundHalfEven(-lo / scale)));
  lo = f32(-zeroPoint * scale);
  hi = f32((qmax - zeroPoint) * scale);
  return { scale, zeroPoint, min: lo, max: hi };
}

/** Symmetric signed scale for a max-abs value. */
export function symmetricScale(maxAbs: number, bits: number): number {
  const { qmax } = qrange(bits, true);
  const s = f32(maxAbs / qmax);
  return s > 0 && Number.isFinite(s) ? s : f32(1e-8);
}
