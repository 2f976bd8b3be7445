/**
 * Worker side of {@link exportQdqOffThread}: builds the QDQ graph of a model and its
 * encodings, converts the opset as needed and encodes the ONNX bytes, which go back
 * transferred rather than copied.
 */
import { parentPort, workerData } from 'worker_threads';
import { Graph } from '../graph/ir';
import { workerError } from '../worker';
import { Encodings } from './encodings';
import { exportBytes } from './quantize';

const job = workerData as { graph: Graph; encodings: Encodings; ranks: Map<string, number> };
try {
  const bytes = exportBytes(job.graph, job.encodings, (v) => job.ranks.get(v));
  parentPort!.postMessage({ result: bytes }, [bytes.buffer as ArrayBuffer]);
} catch (e) {
  parentPort!.postMessage(workerError(e));
}
