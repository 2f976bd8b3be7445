/** Multiply-accumulate counts of compute ops, from the real (specialised) shapes. */
import { SpecializedNode } from './specialize';

const prod = (a: readonly number[]) => a.reduce((x, y) => x * y, 1);

/** MACs of one node, or 0 for ops that are not multiply-accumulate heavy. */
export function nodeMacs(sn: SpecializedNode): number {
  const c = sn.ctx;
  const out = sn.outs[0]?.shape ?? [];
  switch (sn.node.op) {
    case 'Conv': {
      const w = c.shape(1);
      return prod(out) * prod(w.slice(1));
    }
    case 'ConvTranspose': {
      const x = c.shape(0);
      const w = c.shape(1);
      return prod(x) * prod(w.slice(1));
    }
    case 'Gemm': {
      const a = c.shape(0);
      const k = c.ai('transA', 0) ? a[0] : a[1];
      return prod(out) * k;
    }
    case 'MatMul': {
      const a = c.shape(0);
      return prod(out) * a[a.length - 1];
    }
    case 'LSTM':
    case 'GRU': {
      // every step: W x and R h for each gate row
      const x = c.shape(0), w = c.shape(1), r = c.shape(2);
      return x[0] * x[1] * w[0] * w[1] * (w[2] + r[2]);
    }
    default:
      return 0;
  }
}
