//! Fused elementwise chains: a run of elementwise nodes that reads one activation `x` (and
//! constants that are numbers or one value per channel), such as a decomposed HardSwish
//! (`x * Clip(x + 3, 0, 6) / 6`) or a learnable affine (`x * a + b`), runs as one step that
//! passes over memory once, block by block, instead of once per node with a new tensor each.
//!
//! Each node computes exactly what its own op computes (the same scalar arithmetic and
//! kernels, in the same order, no contraction into FMA), so a fused plan's outputs equal the
//! unfused plan's bit for bit; only memory traffic changes. The executor offers every
//! elementwise node that starts such a run to [`find`]; values the caller must read (plan
//! outputs, `keep`, the simulation's quantizer slots) never end up inside a chain.
use super::elementwise::{apply_src, chainable_bin, checked, Bin, Src};
use super::unary::{kind_of, Kind};
use super::Op;
use crate::attrs::Attrs;
use crate::error::Result;
use crate::kernels::act::Activation;
use crate::kernels::bcast::{PAR_CHUNK, PAR_MIN};
use crate::kernels::simd_level;
use crate::plan::{DType, PlanDef};
use crate::tensor::{numel, Tensor};
use rayon::prelude::*;
use std::collections::HashSet;
use std::sync::Arc;

/// Elements per block: a few registers of this size stay in the L1/L2 cache.
const BLOCK: usize = 2048;
/// Nodes per chain at most (registers are one block each).
const MAX_NODES: usize = 24;
/// Values a chain writes out at most.
const MAX_EXITS: usize = 4;

#[derive(Clone)]
enum Operand {
    /// A register: 0 is `x`, `k + 1` the output of the chain's node `k`.
    Reg(usize),
    Num(f32),
    /// One value per channel: element `i` reads `vals[(i / inner) % vals.len()]`.
    Channel(Arc<Vec<f32>>, usize),
}

enum Instr {
    Unary(Kind, usize),
    Binary(Bin, Operand, Operand),
}

/// The fused step.
pub(crate) struct Chain {
    name: String,
    /// Instruction `k` writes register `k + 1`.
    instrs: Vec<Instr>,
    /// The registers the step writes out, one output each.
    outs: Vec<usize>,
    shape: Vec<usize>,
}

/// A chain found at a head node: the step, the nodes it replaces, what it reads and writes.
pub(crate) struct Found {
    pub op: Box<dyn Op>,
    pub name: String,
    pub members: Vec<usize>,
    pub x: usize,
    /// The values read outside the chain (or protected), in plan order: the step's outputs.
    pub exits: Vec<usize>,
}

fn fill_channel(vals: &[f32], inner: usize, start: usize, buf: &mut [f32]) {
    let c = vals.len();
    let mut i = 0;
    while i < buf.len() {
        let g = start + i;
        let run_end = ((g / inner + 1) * inner - start).min(buf.len());
        buf[i..run_end].fill(vals[(g / inner) % c]);
        i = run_end;
    }
}

/// Operand `o` over one block of `len` elements (a channel operand was filled into `t`).
fn view<'a>(o: &Operand, t: &'a [f32], x: &'a [f32], regs: &'a [Vec<f32>], len: usize) -> Src<'a> {
    match o {
        // register 0 is the input itself
        Operand::Reg(0) => Src::Run(&x[..len]),
        Operand::Reg(r) => Src::Run(&regs[*r][..len]),
        Operand::Num(v) => Src::Num(*v),
        Operand::Channel(..) => Src::Run(&t[..len]),
    }
}

impl Chain {
    fn block(&self, x: &[f32], start: usize, len: usize, regs: &mut [Vec<f32>], tmp: &mut [Vec<f32>; 2]) {
        let level = simd_level();
        for (k, ins) in self.instrs.iter().enumerate() {
            let dst = k + 1;
            let (src_regs, rest) = regs.split_at_mut(dst);
            let d = &mut rest[0][..len];
            match ins {
                Instr::Unary(kind, src) => {
                    d.copy_from_slice(if *src == 0 { &x[..len] } else { &src_regs[*src][..len] });
                    kind.apply(level, d);
                }
                Instr::Binary(bin, a, b) => {
                    let [ta, tb] = tmp;
                    // fill both temporaries before borrowing them
                    if let Operand::Channel(vals, inner) = a {
                        fill_channel(vals, *inner, start, &mut ta[..len]);
                    }
                    if let Operand::Channel(vals, inner) = b {
                        fill_channel(vals, *inner, start, &mut tb[..len]);
                    }
                    apply_src(*bin, view(a, ta, x, src_regs, len), view(b, tb, x, src_regs, len), d);
                }
            }
        }
    }

    /// Elements `start..start + x.len()` into `outs` (one slice per output, as long as `x`).
    fn span(&self, x: &[f32], start: usize, outs: &mut [&mut [f32]]) {
        let n = x.len().min(BLOCK);
        // register 0 is read from `x` itself
        let mut regs: Vec<Vec<f32>> = (0..=self.instrs.len()).map(|k| if k == 0 { Vec::new() } else { vec![0.0f32; n] }).collect();
        let mut tmp = [vec![0.0f32; n], vec![0.0f32; n]];
        for s in (0..x.len()).step_by(BLOCK) {
            let len = BLOCK.min(x.len() - s);
            self.block(&x[s..s + len], start + s, len, &mut regs, &mut tmp);
            for (o, &r) in outs.iter_mut().zip(&self.outs) {
                o[s..s + len].copy_from_slice(&regs[r][..len]);
            }
        }
    }
}

impl Op for Chain {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let n = numel(&self.shape);
        let x = checked("Chain", &self.name, inputs, 0, n)?;
        let mut outs: Vec<Vec<f32>> = vec![vec![0.0f32; n]; self.outs.len()];
        if n < PAR_MIN {
            let mut views: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
            self.span(&x.data, 0, &mut views);
        } else {
            // the same split for every output: chunk i of each
            let mut parts: Vec<Vec<&mut [f32]>> = (0..n.div_ceil(PAR_CHUNK)).map(|_| Vec::with_capacity(outs.len())).collect();
            for o in outs.iter_mut() {
                for (i, c) in o.chunks_mut(PAR_CHUNK).enumerate() {
                    parts[i].push(c);
                }
            }
            parts.into_par_iter().enumerate().for_each(|(i, mut views)| {
                let s = i * PAR_CHUNK;
                let len = PAR_CHUNK.min(n - s);
                self.span(&x.data[s..s + len], s, &mut views)
            });
        }
        Ok(outs.into_iter().map(|o| Tensor::new(self.shape.clone(), o)).collect())
    }
}

/// A constant operand of a node whose output has shape `out`: a number, or one value per
/// channel of one axis (its shape, right-aligned, is 1 everywhere but that axis, where it
/// equals the output's).
fn const_operand(t: &Tensor, out: &[usize]) -> Option<Operand> {
    if t.data.len() == 1 {
        return Some(Operand::Num(t.data[0]));
    }
    if t.shape.len() > out.len() {
        return None;
    }
    let pad = out.len() - t.shape.len();
    let axes: Vec<usize> = (0..t.shape.len()).filter(|&j| t.shape[j] != 1).collect();
    let [j] = axes[..] else { return None };
    let axis = pad + j;
    if t.shape[j] != out[axis] {
        return None;
    }
    Some(Operand::Channel(Arc::new(t.data.clone()), out[axis + 1..].iter().product::<usize>().max(1)))
}

/// The instruction node `j` would be in a chain whose values (`x` and the members' outputs)
/// are `regs` (value -> register), or `None` when it cannot join.
fn instr_of(plan: &PlanDef, j: usize, regs: &[(usize, usize)], consts: &[Option<Arc<Tensor>>], shape: &[usize]) -> Option<Instr> {
    let node = &plan.nodes[j];
    if node.outputs.len() != 1 || plan.values[node.outputs[0]].dtype != DType::Float || plan.values[node.outputs[0]].shape != shape {
        return None;
    }
    let reg_of = |v: usize| regs.iter().find(|r| r.0 == v).map(|r| r.1);
    let operand = |i: usize| -> Option<Operand> {
        let v = node.inputs.get(i).copied().flatten()?;
        if plan.values[v].dtype != DType::Float {
            return None;
        }
        if let Some(r) = reg_of(v) {
            return Some(Operand::Reg(r));
        }
        const_operand(consts[v].as_ref()?, shape)
    };
    let a = Attrs { op: &node.op, node: &node.name, map: &node.attrs };
    if let Some(bin) = chainable_bin(&node.op) {
        if node.inputs.len() != 2 {
            return None;
        }
        let (x, y) = (operand(0)?, operand(1)?);
        if !matches!(x, Operand::Reg(_)) && !matches!(y, Operand::Reg(_)) {
            return None;
        }
        return Some(Instr::Binary(bin, x, y));
    }
    if node.op == "Not" {
        return None;
    }
    let Operand::Reg(src) = operand(0)? else { return None };
    if node.op == "Clip" && node.inputs.len() > 1 {
        // bounds given as inputs: constants of one number each
        let bound = |i: usize, open: f32| -> Option<f32> {
            match node.inputs.get(i).copied().flatten() {
                None => Some(open),
                Some(v) => consts[v].as_ref().filter(|t| t.data.len() == 1 && !t.data[0].is_nan()).map(|t| t.data[0]),
            }
        };
        let (lo, hi) = (bound(1, f32::NEG_INFINITY)?, bound(2, f32::INFINITY)?);
        return Some(Instr::Unary(Kind::Act(Activation::Clip(lo, hi)), src));
    }
    if node.inputs.len() != 1 {
        return None;
    }
    Some(Instr::Unary(kind_of(&node.op, &a).ok()??, src))
}

/// The chain that starts at node `head`, if one of at least two nodes does: it grows through
/// the readers of its values while they are elementwise nodes of the same shape reading only
/// the chain's values and constants, and writes out every value read after it (or `protected`). `taken`: nodes already fused away.
pub(crate) fn find(
    plan: &PlanDef,
    head: usize,
    consts: &[Option<Arc<Tensor>>],
    consumers: &[Vec<usize>],
    protected: &HashSet<usize>,
    taken: &[bool],
) -> Option<Found> {
    let node = &plan.nodes[head];
    let out0 = *node.outputs.first()?;
    let shape = plan.values[out0].shape.clone();
    // x: the one input that is not a constant, of the output's shape
    let mut acts = node.inputs.iter().flatten().filter(|&&v| consts[v].is_none());
    let x = *acts.next()?;
    if acts.any(|&v| v != x) || plan.values[x].shape != shape || plan.values[x].dtype != DType::Float {
        return None;
    }
    instr_of(plan, head, &[(x, 0)], consts, &shape)?;
    // grow through readers in plan order
    let mut members = vec![head];
    let mut in_chain: HashSet<usize> = HashSet::from([head]);
    loop {
        let produced: Vec<usize> = members.iter().map(|&m| plan.nodes[m].outputs[0]).collect();
        let mut regs: Vec<(usize, usize)> = vec![(x, 0)];
        let mut cands: Vec<usize> = produced.iter().flat_map(|&v| consumers[v].iter().copied()).filter(|j| !in_chain.contains(j) && !taken[*j] && *j > head).collect();
        cands.sort_unstable();
        cands.dedup();
        let mut sorted = members.clone();
        sorted.sort_unstable();
        for (k, &m) in sorted.iter().enumerate() {
            regs.push((plan.nodes[m].outputs[0], k + 1));
        }
        let next = cands.into_iter().find(|&j| instr_of(plan, j, &regs, consts, &shape).is_some());
        match next {
            Some(j) if members.len() < MAX_NODES => {
                members.push(j);
                in_chain.insert(j);
            }
            _ => break,
        }
    }
    members.sort_unstable();
    // the values read after the chain become its outputs (at most MAX_EXITS: drop the last
    // nodes until so)
    while members.len() >= 2 {
        let set: HashSet<usize> = members.iter().copied().collect();
        let exits: Vec<usize> = members
            .iter()
            .map(|&m| plan.nodes[m].outputs[0])
            .filter(|v| protected.contains(v) || consumers[*v].iter().any(|c| !set.contains(c)))
            .collect();
        if !exits.is_empty() && exits.len() <= MAX_EXITS {
            let mut regs: Vec<(usize, usize)> = vec![(x, 0)];
            let mut instrs = Vec::with_capacity(members.len());
            for (k, &m) in members.iter().enumerate() {
                instrs.push(instr_of(plan, m, &regs, consts, &shape)?);
                regs.push((plan.nodes[m].outputs[0], k + 1));
            }
            let outs = exits.iter().map(|e| regs.iter().find(|r| r.0 == *e).map(|r| r.1)).collect::<Option<Vec<_>>>()?;
            let name = members.iter().map(|&m| plan.nodes[m].name.as_str()).collect::<Vec<_>>().join("+");
            let op = Box::new(Chain { name: name.clone(), instrs, outs, shape });
            return Some(Found { op, name, members, x, exits });
        }
        members.pop();
    }
    None
}

#[cfg(test)]
mod tests {
    use crate::exec::BuildOptions;
    use crate::testutil::rnd;
    use crate::{Executor, PlanDef, Tensor, WeightStore};

    /// Conv -> affine (scalar Mul first, per-channel Add) -> decomposed HardSwish
    /// (Add 3, Clip with bound inputs, Mul, Div 6) -> Sigmoid, and a side branch that reads
    /// the HardSwish's Clip output (so that value leaves the chain) -> Sub -> output 2.
    /// Shape 1x3x40x40 (4800 elements: blocks of 2048 straddle channels).
    fn plan() -> (PlanDef, WeightStore) {
        let s = |n: &str, sh: &str| format!(r#"{{"name": "{n}", "shape": {sh}}}"#);
        let big = "[1, 3, 40, 40]";
        let values = [
            s("x", "[1, 2, 40, 40]"), s("w", "[3, 2, 1, 1]"), s("c", big), s("k", "[1]"), s("m", big), s("bias", "[3, 1, 1]"), s("a", big),
            s("three", "[]"), s("a3", big), s("zero", "[]"), s("six", "[]"), s("cl", big), s("mu", big), s("hs", big), s("y", big),
            s("z", big),
        ];
        let json = format!(
            r#"{{"values": [{}], "inputs": [0], "outputs": [14, 15],
              "constants": [{{"value": 1, "weight": "w"}}, {{"value": 3, "weight": "k"}}, {{"value": 5, "weight": "bias"}},
                            {{"value": 7, "weight": "three"}}, {{"value": 9, "weight": "zero"}}, {{"value": 10, "weight": "six"}}],
              "nodes": [
                {{"op": "Conv", "name": "conv", "inputs": [0, 1, null], "outputs": [2], "attrs": {{}}, "opset": 13}},
                {{"op": "Mul", "name": "scale", "inputs": [3, 2], "outputs": [4], "attrs": {{}}, "opset": 13}},
                {{"op": "Add", "name": "shift", "inputs": [4, 5], "outputs": [6], "attrs": {{}}, "opset": 13}},
                {{"op": "Add", "name": "plus3", "inputs": [6, 7], "outputs": [8], "attrs": {{}}, "opset": 13}},
                {{"op": "Clip", "name": "clip", "inputs": [8, 9, 10], "outputs": [11], "attrs": {{}}, "opset": 13}},
                {{"op": "Mul", "name": "mul", "inputs": [6, 11], "outputs": [12], "attrs": {{}}, "opset": 13}},
                {{"op": "Div", "name": "div6", "inputs": [12, 10], "outputs": [13], "attrs": {{}}, "opset": 13}},
                {{"op": "Sigmoid", "name": "sig", "inputs": [13], "outputs": [14], "attrs": {{}}, "opset": 13}},
                {{"op": "Sub", "name": "side", "inputs": [11, 6], "outputs": [15], "attrs": {{}}, "opset": 13}}
              ]}}"#,
            values.join(", ")
        );
        let store = WeightStore::new();
        store.insert("w".into(), Tensor::new(vec![3, 2, 1, 1], rnd(6, 3).iter().map(|v| v * 8.0).collect()));
        store.insert("k".into(), Tensor::new(vec![1], vec![1.37]));
        store.insert("bias".into(), Tensor::new(vec![3, 1, 1], vec![0.5, -1.25, 2.0]));
        store.insert("three".into(), Tensor::new(vec![], vec![3.0]));
        store.insert("zero".into(), Tensor::new(vec![], vec![0.0]));
        store.insert("six".into(), Tensor::new(vec![], vec![6.0]));
        (PlanDef::from_json(&json).unwrap(), store)
    }

    fn input() -> Tensor {
        Tensor::new(vec![1, 2, 40, 40], rnd(3200, 11).iter().map(|v| v * 6.0).collect())
    }

    fn outputs(opts: &BuildOptions) -> (usize, Vec<Tensor>) {
        let (p, store) = plan();
        let e = Executor::with_options(p, &store, opts).unwrap();
        (e.num_steps(), e.run(vec![input()], None).unwrap())
    }

    #[test]
    fn fused_chains_equal_the_unfused_nodes_bit_for_bit() {
        let (n_plain, plain) = outputs(&BuildOptions { no_fusion: true, ..Default::default() });
        let (n_fused, fused) = outputs(&BuildOptions::default());
        assert_eq!(n_plain, 9);
        // conv, then everything else as one chain with two outputs
        assert_eq!(n_fused, 2, "steps after fusion");
        for (a, b) in plain.iter().zip(&fused) {
            assert_eq!(a.shape, b.shape);
            let differ = a.data.iter().zip(&b.data).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
            assert_eq!(differ, 0, "values that differ from the unfused plan");
        }
        // the chain did something: outputs vary and are not all clipped
        assert!(plain[0].data.iter().any(|&v| v > 0.9) && plain[0].data.iter().any(|&v| v < 0.6));
    }

    #[test]
    fn a_value_the_caller_keeps_is_never_inside_a_chain() {
        let (p, store) = plan();
        // keep "a" (value 6, the affine's output) and "hs" (13)
        let e = Executor::with_options(p, &store, &BuildOptions { keep: vec![6, 13], ..Default::default() }).unwrap();
        let got = e.run_values(vec![input()], &[6, 13], None).unwrap();
        let (p2, store2) = plan();
        let plain = Executor::with_options(p2, &store2, &BuildOptions { no_fusion: true, keep: vec![6, 13], ..Default::default() }).unwrap();
        let want = plain.run_values(vec![input()], &[6, 13], None).unwrap();
        for (a, b) in got.iter().zip(&want) {
            assert!(a.data.iter().zip(&b.data).all(|(x, y)| x.to_bits() == y.to_bits()));
        }
        assert!(e.num_steps() == 2, "kept values are outputs of the chain");
    }
}
