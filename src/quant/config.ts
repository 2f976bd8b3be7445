/**
 * Quantization configurations: which bit-width each quantizer gets. The same file format is
 * what `mpq quantize --config FILE.json` reads and what the search writes:
 *
 * ```json
 * { "default": "W8A8", "weights": { "conv1.weight": 4 }, "activations": { "relu1": 16 } }
 * ```
 * Keys are tensor names (weights: the weight constant; activations: the quantized value).
 * `"float"` instead of a bit-width leaves that quantizer out (the value stays float), for
 * example an attention mask the placement did not recognise: `"activations": { "mask": "float" }`;
 * a list `"float": ["name", ...]` does the same for any quantizer.
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
  /** Quantizers (weight or activation tensor names) left out: those values stay float. */
  float?: string[];
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
  const float = new Set<string>();
  const list = j.float ?? [];
  if (!Array.isArray(list) || list.some((x) => typeof x !== 'string')) throw new MpqError('MPQ_BAD_INPUT', `${spec}: 'float' must be a list of tensor names`);
  for (const name of list as string[]) float.add(name);
  const table = (k: string): Record<string, number> => {
    const v = j[k] ?? {};
    if (typeof v !== 'object' || Array.isArray(v)) throw new MpqError('MPQ_BAD_INPUT', `${spec}: '${k}' must map tensor names to bit-widths or "float"`);
    const out: Record<string, number> = {};
    for (const [name, b] of Object.entries(v as Record<string, unknown>)) {
      if (b === 'float') float.add(name);
      else out[name] = checkBits(b, `${spec}: ${k}.${name}`);
    }
    return out;
  };
  const c: BitConfig = { w: checkBits(def.w, spec), a: checkBits(def.a, spec), weights: table('weights'), activations: table('activations') };
  if (float.size) c.float = [...float];
  return c;
}

export function weightBits(c: BitConfig, tensor: string): number {
  return c.weights[tensor] ?? c.w;
}
export function actBits(c: BitConfig, tensor: string): number {
  return c.activations[tensor] ?? c.a;
}

/** Does `c` leave the quantizer of `tensor` out (the value stays float)? */
export function leftFloat(c: BitConfig, tensor: string): boolean {
  return !!c.float?.includes(tensor);
}
