/** Greedy CTC decoding (argmax per time step, repeats collapsed, blanks dropped), for text recognisers. */
import * as fs from 'fs';
import { MpqError } from '../errors';
import { Tensor } from '../model';

/**
 * Reads a PaddleOCR-style character list (one character per line). The decoder's alphabet is
 * blank (index 0), then these characters, then a space, as PP-OCR's recogniser emits them.
 */
export function readCharset(file: string, opts: { blankFirst?: boolean; spaceLast?: boolean } = {}): string[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new MpqError('MPQ_BAD_INPUT', `cannot read the character list '${file}': ${(e as Error).message}`);
  }
  const chars = text.split('\n').map((l) => l.replace(/\r$/, ''));
  if (chars.length && chars[chars.length - 1] === '') chars.pop();
  return [...(opts.blankFirst === false ? [] : ['']), ...chars, ...(opts.spaceLast === false ? [] : [' '])];
}

/** Decodes a [N, T, C] (or [T, C]) tensor of per-step class scores into N strings. */
export function ctcGreedyDecode(t: Tensor, charset: string[], blank = 0): string[] {
  const shape = t.shape.length === 2 ? [1, ...t.shape] : t.shape;
  if (shape.length !== 3) throw new MpqError('MPQ_BAD_INPUT', `CTC decoding needs [N, T, C] scores, got [${t.shape}]`);
  const [n, steps, classes] = shape;
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    let s = '';
    let prev = -1;
    for (let k = 0; k < steps; k++) {
      const base = (i * steps + k) * classes;
      let best = 0;
      for (let c = 1; c < classes; c++) if (t.data[base + c] > t.data[base + best]) best = c;
      if (best !== prev && best !== blank) s += charset[best] ?? '';
      prev = best;
    }
    out.push(s);
  }
  return out;
}
