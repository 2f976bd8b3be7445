import { formatInspect, inspectModel } from '../inspect';
import { Model } from '../model';
import { parseShapes } from './main';

export async function inspectCommand(file: string, opts: { shape: string[]; json?: boolean }): Promise<void> {
  const model = Model.fromFile(file);
  const r = inspectModel(model, parseShapes(opts.shape));
  process.stdout.write(opts.json ? JSON.stringify(r, null, 2) + '\n' : formatInspect(r) + '\n');
}
