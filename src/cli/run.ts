import { MpqError } from '../errors';
import { OutputDir, safeFileName } from '../fsutil';
import { Model, Tensor } from '../model';
import { encodeNpy, readNpy } from '../npy';
import { readEncodings, simulate } from '../quant/simulate';

export async function runCommand(file: string, opts: { input: string[]; out: string; encodings?: string; json?: boolean }): Promise<void> {
  const float = Model.fromFile(file);
  const model = opts.encodings ? simulate(float, readEncodings(opts.encodings)) : float;
  const feeds: Record<string, Tensor> = {};
  for (const spec of opts.input) {
    const eq = spec.indexOf('=');
    let name: string, npy: string;
    if (eq > 0) {
      name = spec.slice(0, eq);
      npy = spec.slice(eq + 1);
    } else if (model.inputNames.length === 1) {
      name = model.inputNames[0];
      npy = spec;
    } else {
      throw new MpqError('MPQ_BAD_INPUT', `--input '${spec}': the model has several inputs (${model.inputNames.join(', ')}); write NAME=FILE.npy`);
    }
    feeds[name] = readNpy(npy);
  }
  const out = OutputDir.open(opts.out);
  const written: { name: string; shape: number[]; file: string }[] = [];
  try {
    const outputs = await model.run(feeds);
    for (const [name, t] of Object.entries(outputs)) {
      const f = out.write(`${safeFileName(name)}.npy`, encodeNpy(t.shape, t.data));
      written.push({ name, shape: t.shape, file: f });
    }
    out.commit();
  } finally {
    out.abort();
  }
  if (opts.json) process.stdout.write(JSON.stringify({ outputs: written }, null, 2) + '\n');
  else for (const w of written) process.stdout.write(`${w.name} [${w.shape.join(', ')}] -> ${w.file}\n`);
}
