/** The `mpq` command line. Each command lives in its own module; this file wires them up. */
import { Command, CommanderError } from 'commander';
import { MpqError } from '../errors';
import { runCommand } from './run';
import { inspectCommand } from './inspect';

const collect = (v: string, prev: string[]) => [...prev, v];

function program(): Command {
  const p = new Command('mpq')
    .description('mixed-precision post-training quantization of ONNX models')
    .version(require('../../../package.json').version)
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });

  p.command('inspect')
    .description('inputs, outputs, op counts, parameters and MACs per op')
    .argument('<model>', 'ONNX model file')
    .option('--shape <name=d,d,...>', 'input shape for dynamic dimensions (repeatable)', collect, [])
    .option('--json', 'print one JSON document and nothing else')
    .action(inspectCommand);

  p.command('run')
    .description('run a model on .npy inputs, writing each output to DIR/<output>.npy')
    .argument('<model>', 'ONNX model file')
    .requiredOption('--input <name=file.npy>', 'an input (repeatable); a single-input model also takes just FILE.npy', collect, [])
    .requiredOption('--out <dir>', 'output folder')
    .option('--json', 'print one JSON document (outputs, shapes, files) and nothing else')
    .action(runCommand);
  return p;
}

/** Runs the CLI; resolves to the process exit code. */
export async function main(argv: string[]): Promise<number> {
  try {
    await program().parseAsync(argv, { from: 'user' });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    if (e instanceof MpqError) {
      process.stderr.write(`mpq: error [${e.code}]: ${e.message}\n`);
      return 1;
    }
    process.stderr.write(`mpq: internal error: ${e instanceof Error ? e.stack : String(e)}\n`);
    return 1;
  }
}

export function parseShapes(list: string[]): Record<string, number[]> {
  const out: Record<string, number[]> = {};
  for (const s of list) {
    const m = /^([^=]+)=([0-9,x ]+)$/.exec(s);
    if (!m) throw new MpqError('MPQ_BAD_INPUT', `--shape '${s}' must look like NAME=1,3,224,224`);
    out[m[1]] = m[2].split(/[,x]/).map((d) => Number(d.trim()));
  }
  return out;
}
