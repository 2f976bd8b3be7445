/** The `mpq` command line. Each command lives in its own module; this file wires them up. */
import { Command, CommanderError } from 'commander';
import { MpqError } from '../errors';
import { addDataFlags } from './data-options';
import { evalCommand } from './eval';
import { inspectCommand } from './inspect';
import { quantizeCommand } from './quantize';
import { runCommand } from './run';
import { searchCommand } from './search';
import { demoCommand } from './demo';
import { builtinProfiles, candKey } from '../profiles/profile';
import { verifyCommand } from './verify';

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
    .option('--encodings <file>', 'run the simulated quantized model (float model + encodings.json)')
    .option('--json', 'print one JSON document (outputs, shapes, files) and nothing else')
    .action(runCommand);

  addDataFlags(
    p.command('quantize')
      .description('calibrate and quantize at one configuration; writes DIR/model.qdq.onnx, encodings.json, config.json, quantize.json')
      .argument('<model>', 'ONNX model file')
      .requiredOption('--calib <data>', 'calibration data: image folder, .npy folder, one .npy with a sample axis, or NAME=PATH,...')
      .requiredOption('--config <W8A8|W4A8|W8A16|W16A16|W4A16|file.json>', 'bit-widths: a named configuration or a config file')
      .requiredOption('--out <dir>', 'output folder')
      .option('--weight-range <minmax|mse>', 'weight range setting')
      .option('--act-range <minmax|mse>', 'activation range setting')
      .option('--rounding <nearest|gptq|auto>', 'weight rounding: nearest, gptq (data-aware, with bias correction), or auto = gptq at 8 bits and below (default)')
      .option('--profile <name|file>', 'hardware profile: its scheme is applied and the configuration must be one it allows (e.g. ort-cpu for ONNX Runtime on CPU)')
      .option('--json', 'print one JSON document and nothing else'),
  ).action(quantizeCommand);

  addDataFlags(
    p.command('eval')
      .description('top-1 against labels; with --encodings, the quantized model against float (agreement, SQNR)')
      .argument('<model>', 'ONNX model file (float)')
      .requiredOption('--data <data>', 'evaluation data')
      .option('--labels <file>', 'labels.tsv (by file name or position), .npy or .txt (one label per sample)')
      .option('--task <task>', 'classification', 'classification')
      .option('--encodings <file>', 'evaluate the float model with these encodings applied')
      .option('--json', 'print one JSON document and nothing else'),
  ).action(evalCommand);

  addDataFlags(
    p.command('verify')
      .description('run DIR/model.qdq.onnx in onnxruntime-node with graph optimizations off and with the default session options, compare each with the simulation, and say whether the default run is faithful')
      .argument('<dir>', 'output folder of mpq quantize or mpq search')
      .option('--data <data>', 'data to compare on (default: the first 128 calibration samples)')
      .option('--json', 'print one JSON document and nothing else'),
  ).action(verifyCommand);
  addDataFlags(
    p.command('search')
      .description('mixed-precision search: the cheapest per-layer bit-widths that meet a target; writes the model, encodings, front and report to --out')
      .argument('<model>', 'ONNX model file')
      .requiredOption('--calib <data>', 'calibration data')
      .option('--profile <name|file>', 'hardware profile (see mpq profiles)', 'default')
      .option('--max-drop <x>', 'largest metric drop from float (top-1 fraction, or dB of SQNR)')
      .option('--max-bops <r>', 'largest BOPs relative to all-W8A8')
      .option('--max-size <mb>', 'largest weight memory in MB')
      .option('--eval <data>', 'evaluation data for phase 3 (default: the calibration data)')
      .option('--labels <file>', 'labels of the evaluation data')
      .option('--task <task>', 'classification')
      .option('--order <sqnr|efficiency|auto>', 'front order', 'auto')
      .option('--weight-range <minmax|mse>', 'weight range setting')
      .option('--act-range <minmax|mse>', 'activation range setting')
      .option('--rounding <nearest|gptq|auto>', 'weight rounding (auto: data-aware at 8 bits and below)')
      .option('--sequential', 'sequential data-aware rounding for evaluated points and the export (better at 4 bits, one calibration pass per evaluated point)')
      .requiredOption('--out <dir>', 'output folder')
      .option('--json', 'print run.json and nothing else'),
  ).action(searchCommand);

  p.command('demo')
    .description('the whole job on a bundled small model (PP-OCR text-direction classifier); writes ./mpq-demo')
    .option('--out <dir>', 'output folder', 'mpq-demo')
    .option('--json', 'print run.json and nothing else')
    .action(demoCommand);

  p.command('profiles')
    .description('list the built-in hardware profiles')
    .option('--json', 'print one JSON document and nothing else')
    .action((o: { json?: boolean }) => {
      const ps = builtinProfiles();
      if (o.json) process.stdout.write(JSON.stringify(ps, null, 2) + '\n');
      else for (const pr of ps) process.stdout.write(`${pr.name.padEnd(14)} ${pr.candidates.map(candKey).join(', ').padEnd(30)} ${pr.description ?? ''}\n`);
    });
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
