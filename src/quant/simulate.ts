/** The simulated quantized model: the float model with an encodings file applied, run by the engine. */
import * as fs from 'fs';
import { MpqError } from '../errors';
import { definedIn } from '../graph/control';
import { Model } from '../model';
import { encodingsFromJson, EncodingsJson } from './encodings';
import { buildQdqGraph } from './qdq';

export function readEncodings(file: string): EncodingsJson {
  try {
    const j = JSON.parse(fs.readFileSync(file, 'utf8')) as EncodingsJson;
    if (!j || typeof j !== 'object' || !j.activation_encodings || !j.param_encodings) throw new Error('missing activation_encodings or param_encodings');
    return j;
  } catch (e) {
    throw new MpqError('MPQ_BAD_INPUT', `cannot read encodings '${file}': ${(e as Error).message}`);
  }
}

export function simulate(model: Model, enc: EncodingsJson): Model {
  const e = encodingsFromJson(enc);
  // values inside subgraphs too (the If branch the calibration data took is quantized inside)
  const known = definedIn(model.graph);
  const unknown = [...e.weights.keys(), ...e.activations.keys()].filter((k) => !known.has(k));
  if (unknown.length) {
    throw new MpqError('MPQ_BAD_INPUT', `the encodings name tensors that the model does not have: ${unknown.slice(0, 5).join(', ')}${unknown.length > 5 ? ', ...' : ''}; were they made for another model?`);
  }
  return Model.fromGraph(buildQdqGraph(model.graph, e));
}
