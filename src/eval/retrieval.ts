/**
 * Retrieval with sentence embeddings (the sentence-transformers recipe): each text's embedding
 * is the mean of the encoder's last hidden state over its attention mask, L2-normalised; each
 * query's answer is the document of highest cosine similarity; top-1 counts the queries whose
 * answer is their own document (query i belongs with document i).
 *
 * {@link retrievalEvaluate} makes this an `evaluate` callback for `search` (`--max-drop` on
 * retrieval top-1 instead of the label-free SQNR).
 */
import { MpqError } from '../errors';
import { Model, RunOptions, Runnable, Tensor } from '../model';
import type { EvaluateFn } from '../search/metric';

/**
 * Masked mean pooling of `hidden` `[N, L, H]` over `mask` `[N, L]` (1 = token, 0 = padding),
 * then L2 normalisation: `N` unit vectors of `H` values, row after row.
 */
export function embedMean(hidden: Tensor, mask: Tensor): Float32Array {
  const [n, l, h] = hidden.shape;
  if (hidden.shape.length !== 3 || mask.shape.length !== 2 || mask.shape[0] !== n || mask.shape[1] !== l) {
    throw new MpqError('MPQ_BAD_INPUT', `mean pooling needs a hidden state [N, L, H] and a mask [N, L]; got [${hidden.shape}] and [${mask.shape}]`);
  }
  const out = new Float32Array(n * h);
  const acc = new Float64Array(h);
  for (let i = 0; i < n; i++) {
    acc.fill(0);
    let count = 0;
    for (let t = 0; t < l; t++) {
      const m = mask.data[i * l + t];
      if (!m) continue;
      count += m;
      const base = (i * l + t) * h;
      for (let k = 0; k < h; k++) acc[k] += m * hidden.data[base + k];
    }
    // sentence-transformers clamps the token count at 1e-9
    const c = Math.max(count, 1e-9);
    let norm = 0;
    for (let k = 0; k < h; k++) norm += (acc[k] / c) ** 2;
    // torch.nn.functional.normalize: divides by max(norm, 1e-12)
    const inv = 1 / Math.max(Math.sqrt(norm), 1e-12);
    for (let k = 0; k < h; k++) out[i * h + k] = (acc[k] / c) * inv;
  }
  return out;
}

const concat = (parts: Float32Array | Float32Array[]): Float32Array => {
  if (parts instanceof Float32Array) return parts;
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};

/**
 * Top-1 of retrieval: the fraction of queries whose most similar document (dot product of unit
 * vectors = cosine) is their own (same index); ties go to the lower index. Embeddings are rows
 * of `dim` values.
 */
export function retrievalTop1(queries: Float32Array | Float32Array[], docs: Float32Array | Float32Array[], dim: number): number {
  const q = concat(queries), d = concat(docs);
  const nq = q.length / dim, nd = d.length / dim;
  if (!Number.isInteger(nq) || !Number.isInteger(nd) || nq > nd) {
    throw new MpqError('MPQ_BAD_INPUT', `retrieval needs at most as many queries (${nq}) as documents (${nd}), each of ${dim} values`);
  }
  let hits = 0;
  for (let i = 0; i < nq; i++) {
    let best = -1, bestS = -Infinity;
    for (let j = 0; j < nd; j++) {
      let s = 0;
      for (let k = 0; k < dim; k++) s += q[i * dim + k] * d[j * dim + k];
      if (s > bestS) {
        bestS = s;
        best = j;
      }
    }
    if (best === i) hits++;
  }
  return nq ? hits / nq : 0;
}

export interface RetrievalData {
  /** Query batches (model inputs, including the attention mask). */
  queries: Record<string, Tensor>[];
  /** Document batches: document i belongs with query i. */
  docs: Record<string, Tensor>[];
  /** The hidden-state output (default: the first float output of rank 3). */
  output?: string;
  /** The mask input (default `attention_mask`). */
  mask?: string;
}

/** Retrieval top-1 of `model` on `data` (see the module comment). */
export async function retrievalScore(model: Runnable, data: RetrievalData, opts: RunOptions = {}): Promise<number> {
  const maskName = data.mask ?? 'attention_mask';
  const out = data.output ?? hiddenOutput(model);
  const embed = async (batches: Record<string, Tensor>[]) => {
    const parts: Float32Array[] = [];
    for (const b of batches) {
      if (!b[maskName]) throw new MpqError('MPQ_BAD_INPUT', `retrieval batches need the mask input '${maskName}'`);
      parts.push(embedMean((await model.run(b, opts))[out], b[maskName]));
    }
    return parts;
  };
  const q = await embed(data.queries), d = await embed(data.docs);
  const dim = q[0] ? q[0].length / data.queries[0][maskName].shape[0] : 1;
  return retrievalTop1(q, d, dim);
}

/** The first float output of rank 3 (`[N, L, H]`): the last hidden state of an encoder. */
function hiddenOutput(model: Runnable): string {
  const o = model instanceof Model ? model.graph.outputs.find((v) => v.dtype === 'float' && v.dims?.length === 3) : undefined;
  if (!o) throw new MpqError('MPQ_BAD_INPUT', `the model has no float output of rank 3 (a hidden state [N, L, H]) to pool (or it is a simulation, which does not say): name it with 'output'`);
  return o.name;
}

/** An `evaluate` callback for `search`: retrieval top-1 on `data` (higher is better). */
export function retrievalEvaluate(data: RetrievalData): EvaluateFn {
  return (model, opts) => retrievalScore(model, data, opts);
}
