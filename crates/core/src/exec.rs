//! The executor: builds one op per plan node (fusing activations into the ops that can take
//! them) and runs the plan, freeing each intermediate value after its last use.

use crate::attrs::Attrs;
use crate::error::{Error, Result};
use crate::kernels::act::Activation;
use crate::ops::{registry, BuildCtx, Op};
use crate::plan::{NodeDef, PlanDef, ValueDef, WeightStore};
use crate::tensor::Tensor;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// `MPQ_PROFILE=1` prints the time of every executed step to stderr (tab-separated).
fn profiling() -> bool {
    static P: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *P.get_or_init(|| std::env::var("MPQ_PROFILE").map(|v| v == "1").unwrap_or(false))
}

#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// Values the caller wants to read after a run: never fused away.
    pub keep: Vec<usize>,
    /// Disable activation fusion (for debugging and tests).
    pub no_fusion: bool,
    /// Values that must stay values of their own (not fused away into the op that reads
    /// them), but are freed after their last use like any other: the simulation's
    /// quantizer slots, where fake-quant is applied to the producer's output.
    pub no_fuse: Vec<usize>,
}

pub(crate) struct Step {
    pub(crate) name: String,
    pub(crate) op_type: String,
    pub(crate) op: Box<dyn Op>,
    pub(crate) inputs: Vec<Option<usize>>,
    pub(crate) outputs: Vec<usize>,
    /// The plan node the step was built from, and what was fused into it (to rebuild it on
    /// other constants, see [`Executor::build_step_with`]).
    node: usize,
    fused: Option<Activation>,
    post: Option<Arc<(Vec<f32>, Vec<f32>)>>,
    /// A fused elementwise chain (`node` is its first node; it cannot be rebuilt).
    chain: bool,
}

pub struct Executor {
    values: Vec<ValueDef>,
    inputs: Vec<usize>,
    outputs: Vec<usize>,
    pub(crate) consts: Vec<Option<Arc<Tensor>>>,
    /// Constants that are initializers of the model (see [`BuildCtx::initializer`]).
    initializer: Vec<bool>,
    pub(crate) steps: Vec<Step>,
    nodes: Vec<NodeDef>,
    /// For each value, the index of the last step that reads it (`usize::MAX`: never freed).
    pub(crate) last_use: Vec<usize>,
}

/// The activation a node computes, if it is one that an op epilogue can apply.
fn as_activation(node: &NodeDef, consts: &[Option<Arc<Tensor>>]) -> Option<Activation> {
    let a = Attrs { op: &node.op, node: &node.name, map: &node.attrs };
    match node.op.as_str() {
        "Relu" => Some(Activation::Relu),
        "LeakyRelu" => Some(Activation::LeakyRelu(a.float("alpha", 0.01).ok()?)),
        "HardSigmoid" => Some(Activation::HardSigmoid(a.float("alpha", 0.2).ok()?, a.float("beta", 0.5).ok()?)),
        "HardSwish" => Some(Activation::HardSwish),
        "Sigmoid" => Some(Activation::Sigmoid),
        "Tanh" => Some(Activation::Tanh),
        "Clip" => {
            if a.has("min") || a.has("max") {
                return Some(Activation::Clip(a.float("min", f32::NEG_INFINITY).ok()?, a.float("max", f32::INFINITY).ok()?));
            }
            // a bound computed at run time (not a constant of the plan) is not fused
            let bound = |i: usize, d: f32| -> Option<f32> {
                match node.inputs.get(i).copied().flatten() {
                    None => Some(d),
                    Some(v) => consts[v].as_ref().filter(|t| t.len() == 1).map(|t| t.data[0]),
                }
            };
            Some(Activation::Clip(bound(1, f32::NEG_INFINITY)?, bound(2, f32::INFINITY)?))
        }
        _ => None,
    }
}

/// The affine `(a, b)` of a BatchNormalization node over `channels` channels whose four
/// parameters are plan constants (`None` otherwise).
fn bn_affine(node: &NodeDef, consts: &[Option<Arc<Tensor>>], channels: Option<usize>) -> Option<(Vec<f32>, Vec<f32>)> {
    let a = Attrs { op: &node.op, node: &node.name, map: &node.attrs };
    if a.int("training_mode", 0).ok()? != 0 {
        return None;
    }
    let c = channels?;
    let p: Vec<&Arc<Tensor>> = (1..5).map(|i| node.inputs.get(i).copied().flatten().and_then(|v| consts[v].as_ref())).collect::<Option<_>>()?;
    if p.iter().any(|t| t.data.len() != c) {
        return None;
    }
    Some(crate::ops::norm::fold_bn(&p[0].data, &p[1].data, &p[2].data, &p[3].data, a.float("epsilon", 1e-5).ok()?))
}

impl Executor {
    pub fn new(plan: PlanDef, store: &WeightStore) -> Result<Self> {
        Self::with_options(plan, store, &BuildOptions::default())
    }

    pub fn with_options(plan: PlanDef, store: &WeightStore, opts: &BuildOptions) -> Result<Self> {
        plan.validate()?;
        let nv = plan.values.len();
        let mut consts: Vec<Option<Arc<Tensor>>> = vec![None; nv];
        let mut initializer = vec![false; nv];
        for c in &plan.constants {
            initializer[c.value] = !c.folded;
            let t = store.get(&c.weight)?;
            let want = &plan.values[c.value].shape;
            if &t.shape != want && t.len() != crate::tensor::numel(want) {
                return Err(Error::BadTensor {
                    name: plan.values[c.value].name.clone(),
                    msg: format!("weight has shape {:?}, plan says {:?}", t.shape, want),
                });
            }
            let t = if &t.shape != want { Arc::new(Tensor::new(want.clone(), t.data.clone())) } else { t };
            consts[c.value] = Some(t);
        }

        // Report every unsupported op before doing any work.
        let reg = registry();
        let unsupported: Vec<String> = plan
            .nodes
            .iter()
            .filter(|n| !reg.contains_key(n.op.as_str()))
            .map(|n| format!("{} (node '{}', opset {})", n.op, n.name, n.opset))
            .collect();
        if !unsupported.is_empty() {
            let first = plan.nodes.iter().find(|n| !reg.contains_key(n.op.as_str())).unwrap();
            if unsupported.len() == 1 {
                return Err(Error::UnsupportedOp { op: first.op.clone(), node: first.name.clone() });
            }
            return Err(Error::Plan(format!("unsupported ops: {}", unsupported.join(", "))));
        }

        // Consumers of each value, to find fusable activations.
        let mut consumers = vec![Vec::new(); nv];
        for (i, n) in plan.nodes.iter().enumerate() {
            for v in n.inputs.iter().flatten() {
                consumers[*v].push(i);
            }
        }
        let protected: HashSet<usize> = plan.outputs.iter().chain(opts.keep.iter()).chain(opts.no_fuse.iter()).copied().collect();

        let mut fused_away = vec![false; plan.nodes.len()];
        let mut steps = Vec::with_capacity(plan.nodes.len());
        for (i, node) in plan.nodes.iter().enumerate() {
            if fused_away[i] {
                continue;
            }
            // a run of elementwise nodes on one activation: one pass over memory (chain.rs)
            if !opts.no_fusion {
                if let Some(ch) = crate::ops::chain::find(&plan, i, &consts, &consumers, &protected, &fused_away) {
                    for &j in &ch.members {
                        fused_away[j] = true;
                    }
                    steps.push(Step { name: ch.name, op_type: "Chain".into(), op: ch.op, inputs: vec![Some(ch.x)], outputs: ch.exits, node: i, fused: None, post: None, chain: true });
                    continue;
                }
            }
            let r = reg[node.op.as_str()];
            let mut fused = None;
            let mut outputs = node.outputs.clone();
            let mut name = node.name.clone();
            // the one node that reads value `o`, as its first input, when `o` may be fused away
            let sole_reader = |o: usize| -> Option<usize> {
                if opts.no_fusion || protected.contains(&o) || consumers[o].len() != 1 {
                    return None;
                }
                let j = consumers[o][0];
                (plan.nodes[j].inputs.first().copied().flatten() == Some(o)).then_some(j)
            };
            let mut post = None;
            if node.op == "Conv" && node.outputs.len() == 1 {
                // Conv + BatchNormalization with constant parameters: the BN's affine in the
                // Conv's epilogue, in the unfused op's arithmetic (onnxruntime with graph
                // optimizations off runs them apart; its optimizer folds them, see CONV.md)
                let o = node.outputs[0];
                if let Some(j) = sole_reader(o) {
                    let next = &plan.nodes[j];
                    if next.op == "BatchNormalization" && next.outputs.len() == 1 {
                        if let Some(ab) = bn_affine(next, &consts, plan.values[o].shape.get(1).copied()) {
                            post = Some(Arc::new(ab));
                            fused_away[j] = true;
                            outputs = next.outputs.clone();
                            name = format!("{}+{}", node.name, next.name);
                        }
                    }
                }
            }
            if r.fuses_activation && outputs.len() == 1 {
                if let Some(j) = sole_reader(outputs[0]) {
                    let next = &plan.nodes[j];
                    if let Some(act) = as_activation(next, &consts) {
                        fused = Some(act);
                        fused_away[j] = true;
                        outputs = next.outputs.clone();
                        name = format!("{}+{}", name, next.name);
                    }
                }
            }
            let shape_of = |v: usize| plan.values[v].shape.as_slice();
            let ctx = BuildCtx {
                node,
                attrs: Attrs { op: &node.op, node: &node.name, map: &node.attrs },
                in_shapes: node.inputs.iter().map(|v| v.map(shape_of)).collect(),
                in_dtypes: node.inputs.iter().map(|v| v.map(|v| plan.values[v].dtype)).collect(),
                out_shapes: outputs.iter().map(|&v| shape_of(v)).collect(),
                out_dtypes: outputs.iter().map(|&v| plan.values[v].dtype).collect(),
                consts: node.inputs.iter().map(|v| v.and_then(|v| consts[v].clone())).collect(),
                initializer: node.inputs.iter().map(|v| v.is_some_and(|v| initializer[v])).collect(),
                fused,
                post,
            };
            let op = (r.build)(&ctx)?;
            let (fused, post) = (ctx.fused, ctx.post.clone());
            steps.push(Step { name, op_type: node.op.clone(), op, inputs: node.inputs.clone(), outputs, node: i, fused, post, chain: false });
        }

        let mut last_use = vec![0usize; nv];
        for (si, s) in steps.iter().enumerate() {
            for v in s.inputs.iter().flatten() {
                last_use[*v] = si;
            }
        }
        for &v in plan.outputs.iter().chain(opts.keep.iter()) {
            last_use[v] = usize::MAX;
        }
        Ok(Executor { values: plan.values, inputs: plan.inputs, outputs: plan.outputs, consts, initializer, steps, nodes: plan.nodes, last_use })
    }

    /// Builds step `si` again with some of its inputs replaced by constants (`(input position,
    /// tensor)`; a position past the node's inputs or of an omitted input adds it), with the
    /// same fusion: the simulation's weight variants (quantized weights, corrected biases).
    /// The replacements are not initializers: the QDQ export computes them at run time (a
    /// DequantizeLinear), and so onnxruntime does not pre-pack them.
    pub(crate) fn build_step_with(&self, si: usize, replace: &[(usize, Arc<Tensor>)]) -> Result<Box<dyn Op>> {
        let step = &self.steps[si];
        if step.chain {
            return Err(Error::Plan(format!("step '{}' is a fused elementwise chain and reads no weights to replace", step.name)));
        }
        let node = &self.nodes[step.node];
        let n_in = node.inputs.len().max(replace.iter().map(|r| r.0 + 1).max().unwrap_or(0));
        let find = |p: usize| replace.iter().find(|r| r.0 == p).map(|r| &r.1);
        let shape_of = |v: usize| self.values[v].shape.as_slice();
        let input = |p: usize| node.inputs.get(p).copied().flatten();
        let ctx = BuildCtx {
            node,
            attrs: Attrs { op: &node.op, node: &node.name, map: &node.attrs },
            in_shapes: (0..n_in).map(|p| find(p).map(|t| t.shape.as_slice()).or_else(|| input(p).map(shape_of))).collect(),
            in_dtypes: (0..n_in).map(|p| find(p).map(|_| crate::plan::DType::Float).or_else(|| input(p).map(|v| self.values[v].dtype))).collect(),
            out_shapes: step.outputs.iter().map(|&v| shape_of(v)).collect(),
            out_dtypes: step.outputs.iter().map(|&v| self.values[v].dtype).collect(),
            consts: (0..n_in).map(|p| find(p).cloned().or_else(|| input(p).and_then(|v| self.consts[v].clone()))).collect(),
            initializer: (0..n_in).map(|p| find(p).is_none() && input(p).is_some_and(|v| self.initializer[v])).collect(),
            fused: step.fused,
            post: step.post.clone(),
        };
        (registry()[node.op.as_str()].build)(&ctx)
    }

    /// The plan node step `si` was built from.
    pub(crate) fn node_of(&self, si: usize) -> &NodeDef {
        &self.nodes[self.steps[si].node]
    }

    /// Runs one step's `op` (the step's own or a rebuilt one) on `args` and checks the shapes
    /// of its outputs against the plan.
    pub(crate) fn run_step(&self, si: usize, op: &dyn Op, args: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let step = &self.steps[si];
        let outs = op.run(args)?;
        if outs.len() < step.outputs.len() {
            return Err(Error::node(&step.op_type, &step.name, format!("produced {} outputs, expected {}", outs.len(), step.outputs.len())));
        }
        for (t, &o) in outs.iter().zip(&step.outputs) {
            let want_shape = &self.values[o].shape;
            if &t.shape != want_shape {
                return Err(Error::node(
                    &step.op_type,
                    &step.name,
                    format!("output '{}' has shape {:?}, the plan says {:?}", self.values[o].name, t.shape, want_shape),
                ));
            }
        }
        Ok(outs)
    }

    /// Checks graph inputs against the plan and returns the value slots with the constants
    /// and inputs in place.
    pub(crate) fn initial_slots(&self, inputs: Vec<Tensor>) -> Result<Vec<Option<Arc<Tensor>>>> {
        if inputs.len() != self.inputs.len() {
            return Err(Error::Plan(format!("expected {} inputs, got {}", self.inputs.len(), inputs.len())));
        }
        let mut slots: Vec<Option<Arc<Tensor>>> = self.consts.clone();
        for (t, &id) in inputs.into_iter().zip(&self.inputs) {
            let v = &self.values[id];
            if t.shape != v.shape || t.data.len() != crate::tensor::numel(&t.shape) {
                return Err(Error::InputShape { name: v.name.clone(), expected: v.shape.clone(), got: t.shape });
            }
            slots[id] = Some(Arc::new(t));
        }
        Ok(slots)
    }

    pub fn values(&self) -> &[ValueDef] {
        &self.values
    }
    pub fn input_ids(&self) -> &[usize] {
        &self.inputs
    }
    pub fn output_ids(&self) -> &[usize] {
        &self.outputs
    }
    /// Number of executed steps (after fusion).
    pub fn num_steps(&self) -> usize {
        self.steps.len()
    }

    /// Runs the plan on the graph inputs and returns the graph outputs.
    pub fn run(&self, inputs: Vec<Tensor>, cancel: Option<&AtomicBool>) -> Result<Vec<Tensor>> {
        let ids = self.outputs.clone();
        self.run_values(inputs, &ids, cancel)
    }

    /// Runs the plan and returns the values `want` (graph outputs or values kept at build time).
    pub fn run_values(&self, inputs: Vec<Tensor>, want: &[usize], cancel: Option<&AtomicBool>) -> Result<Vec<Tensor>> {
        self.run_observe(inputs, want, &[], &mut |_, _| {}, cancel)
    }

    /// Runs the plan, calling `observer(value, tensor)` as soon as each value in `observe`
    /// (graph inputs or values kept at build time) is available, and returns `want`.
    pub fn run_observe(
        &self,
        inputs: Vec<Tensor>,
        want: &[usize],
        observe: &[usize],
        observer: &mut dyn FnMut(usize, &Tensor),
        cancel: Option<&AtomicBool>,
    ) -> Result<Vec<Tensor>> {
        let mut watched = vec![false; self.values.len()];
        for &o in observe {
            if o >= self.values.len() || (self.last_use[o] != usize::MAX && !self.inputs.contains(&o)) {
                return Err(Error::Plan(format!("value {o} is not kept by this executor and cannot be observed")));
            }
            watched[o] = true;
        }
        let mut slots = self.initial_slots(inputs)?;
        for &id in &self.inputs {
            if watched[id] {
                observer(id, slots[id].as_deref().unwrap());
            }
        }
        for &w in want {
            if w >= self.values.len() || (self.last_use[w] != usize::MAX && self.consts[w].is_none() && !self.inputs.contains(&w)) {
                return Err(Error::Plan(format!("value {w} is not kept by this executor")));
            }
        }
        let profile = profiling();
        for (si, step) in self.steps.iter().enumerate() {
            let t0 = profile.then(std::time::Instant::now);
            if let Some(c) = cancel {
                if c.load(Ordering::Relaxed) {
                    return Err(Error::Cancelled);
                }
            }
            let args: Vec<Option<&Tensor>> = step
                .inputs
                .iter()
                .map(|v| v.and_then(|v| slots[v].as_deref()))
                .collect();
            let outs = self.run_step(si, step.op.as_ref(), &args)?;
            for (t, &o) in outs.into_iter().zip(&step.outputs) {
                if watched[o] {
                    observer(o, &t);
                }
                slots[o] = Some(Arc::new(t));
            }
            for v in step.inputs.iter().flatten() {
                if self.last_use[*v] == si && self.consts[*v].is_none() {
                    slots[*v] = None;
                }
            }
            if let Some(t0) = t0 {
                eprintln!("mpq-profile\t{}\t{}\t{:.3}", step.op_type, step.name, t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        want.iter()
            .map(|&w| {
                let t = slots[w].take().ok_or_else(|| Error::Plan(format!("value '{}' was not computed", self.values[w].name)))?;
                Ok(Arc::try_unwrap(t).unwrap_or_else(|a| (*a).clone()))
            })
            .collect()
    }
}
