/**
 * Worker side of {@link loadGraphOffThread}: decodes an ONNX model (file or bytes) into the
 * graph IR and posts it back, its tensor buffers transferred rather than copied.
 */
import { parentPort, workerData } from 'worker_threads';
import { Graph } from '../graph/ir';
import { foldBatchNorm } from '../graph/passes/fold-bn';
import { workerError } from '../worker';
import { loadGraph, loadGraphFromFile } from './load';

function buffersOf(g: Graph): ArrayBuffer[] {
  const seen = new Set<ArrayBuffer>();
  const add = (a: { buffer: ArrayBufferLike }) => a.buffer instanceof ArrayBuffer && seen.add(a.buffer);
  for (const t of g.consts.values()) add(t.data);
  for (const n of g.nodes) for (const v of Object.values(n.attrs)) if (v && typeof v === 'object' && 'data' in v) add(v.data);
  return [...seen];
}

const job = workerData as { file?: string; bytes?: Uint8Array; baseDir?: string };
try {
  // BatchNormalization is folded here too: the graph as written (what Model.run executes) and
  // the folded one (what quantization sees) go back in one message, sharing their tensors
  const g = job.file !== undefined ? loadGraphFromFile(job.file) : loadGraph(job.bytes!, { baseDir: job.baseDir });
  const folded = foldBatchNorm(g);
  parentPort!.postMessage({ result: { graph: g, folded } }, [...new Set([...buffersOf(g), ...buffersOf(folded)])]);
} catch (e) {
  parentPort!.postMessage(workerError(e));
}
