/**
 * Quantization configurations: which bit-width each quantizer gets. The same file format is
 * what `mpq quantize --config FILE.json` reads and what the search writes:
 *
 * ```json
 * { "default": "W8A8", "weights": { "conv1.weight": 4 }, "activations": { "relu1": 16 } }
 * ```
 * Keys are tensor names (weights: the weight constant; activations: the quantized value).
 */
import * as fs from 'fs';
import { MpqError } from '../errors';

export interface BitConfig {
  /** Default weight and activation bits. */
  w: number;
  a: number;
  /** Per-tensor overrides. */
  weights: Record<string, number>;
  activations: Record<string, number>;
}

export const NAMED_CONFIGS = ['W8A8', 'W4A8', 'W8A16', 'W16A16', 'W4A16'] as const;

function parseName(name: string): { w: number; a: number } | null {
  const m = /^W(\d+)A(\d+)$/i.exec(name.trim());
  return m ? { w: Number(m[1]), a: Number(m[2]) } : null;
}

function checkBits(bits: unknown, where: string): number {
  if (typeof bits !== 'number' || !Number.isInteger(bits) || bits < 2 || bits > 16) {
    throw new MpqError('MPQ_BAD_INPUT', `${where}: bit-width must be an integer from 2 to 16, got ${JSON.stringify(bits)}`);
  }
  return bits;
}

/** Parses `W8A8`-style names or a config JSON file. */
export function loadBitConfig(spec: string): BitConfig {
  const named = parseName(spec);
  if (named) return { w: checkBits(named.w, spec), a: checkBits(named.a, spec), weights: {}, activations: {} };
  if (!spec.endsWith('.json') && !fs.existsSync(spec)) {
    throw new MpqError('MPQ_BAD_INPUT', `--config '${spec}' is neither a known configuration (${NAMED_CONFIGS.join(', ')}, or any WxAy) nor a JSON file`);
  }
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(fs.readFileSync(spec, 'utf8'));
  } catch (e) {
    throw new MpqError('MPQ_BAD_INPUT', `cannot read config '${spec}': ${(e as Error).message}`);
  }
  const def = parseName(String(j.default ?? 'W8A8'));
  if (!def) throw new MpqError('MPQ_BAD_INPUT', `${spec}: 'default' must look like W8A8`);
  const table = (k: string): Record<string, number> => {
    const v = j[k] ?? {};
    if (typeof v !== 'object' || Array.isArray(v)) throw new MpqError('MPQ_BAD_INPUT', `${spec}: '${k}' must map tensor names to bit-widths`);
    const out: Record<string, number> = {};
    for (const [name, b] of Object.entries(v as Record<string, unknown>)) out[name] = checkBits(b, `${spec}: ${k}.${name}`);
    return out;
  };
  return { w: checkBits(def.w, spec), a: checkBits(def.a, spec), weights: table('weights'), activations: table('activations') };
}

export function weightBits(c: BitConfig, tensor: string): number {
  return c.weights[tensor] ?? c.w;
}
export function actBits(c: BitConfig, tensor: string): number {
  return c.activations[tensor] ?? c.a;
}
