//! Recurrent cells: LSTM and GRU (ONNX semantics, forward / reverse / bidirectional, layout
//! 0 or 1, peepholes, clip, input_forget, linear_before_reset). Weights, biases and initial
//! states are read at run time, so they may be constants of the plan or values computed by
//! the graph (a DequantizeLinear of quantized weights in the simulation). `sequence_lens`
//! is resolved in TypeScript: it reaches Rust only when every sequence is full length, and
//! then as absent.
use super::{reg, BuildCtx, Op, Registry};
use crate::error::{Error, Result};
use crate::tensor::{numel, Tensor};

pub fn register(r: &mut Registry) {
    reg(r, "LSTM", build);
    reg(r, "GRU", build);
}

#[derive(Clone, Copy, Debug)]
enum Act {
    Sigmoid,
    Tanh,
    Relu,
    HardSigmoid(f32, f32),
    LeakyRelu(f32),
    Affine(f32, f32),
}

impl Act {
    #[inline]
    fn f(self, x: f32) -> f32 {
        match self {
            Act::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Act::Tanh => x.tanh(),
            Act::Relu => x.max(0.0),
            Act::HardSigmoid(a, b) => (a * x + b).clamp(0.0, 1.0),
            Act::LeakyRelu(a) => {
                if x >= 0.0 {
                    x
                } else {
                    a * x
                }
            }
            Act::Affine(a, b) => a * x + b,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Cell {
    Lstm,
    Gru,
}

struct Rnn {
    cell: Cell,
    op: String,
    name: String,
    hidden: usize,
    input: usize,
    seq: usize,
    batch: usize,
    /// Per direction: reversed in time?
    reverse: Vec<bool>,
    layout: usize,
    clip: Option<f32>,
    /// Per direction: f, g, h (LSTM) or f, g (GRU).
    acts: Vec<[Act; 3]>,
    input_forget: bool,
    linear_before_reset: bool,
    out_shapes: Vec<Vec<usize>>,
    /// Which of Y, Y_h, Y_c each plan output is.
    present: Vec<usize>,
}

fn parse_acts(ctx: &BuildCtx, cell: Cell, dirs: usize) -> Result<Vec<[Act; 3]>> {
    let list = ctx.attrs.str("activations", "")?;
    let names: Vec<String> = if list.is_empty() {
        let d: &[&str] = if cell == Cell::Lstm { &["Sigmoid", "Tanh", "Tanh"] } else { &["Sigmoid", "Tanh"] };
        (0..dirs).flat_map(|_| d.iter().map(|s| s.to_string())).collect()
    } else {
        list.split(',').map(|s| s.trim().to_string()).collect()
    };
    let per = if cell == Cell::Lstm { 3 } else { 2 };
    if names.len() != per * dirs {
        return Err(ctx.err(format!("activations must list {} functions ({per} per direction), got {}", per * dirs, names.len())));
    }
    let alphas = ctx.attrs.floats_opt("activation_alpha")?.unwrap_or_default();
    let betas = ctx.attrs.floats_opt("activation_beta")?.unwrap_or_default();
    let mut out = Vec::new();
    for d in 0..dirs {
        let mut a = [Act::Sigmoid; 3];
        for k in 0..per {
            let i = d * per + k;
            let (al, be) = (alphas.get(i).copied(), betas.get(i).copied());
            a[k] = match names[i].to_ascii_lowercase().as_str() {
                "sigmoid" => Act::Sigmoid,
                "tanh" => Act::Tanh,
                "relu" => Act::Relu,
                "hardsigmoid" => Act::HardSigmoid(al.unwrap_or(0.2), be.unwrap_or(0.5)),
                "leakyrelu" => Act::LeakyRelu(al.unwrap_or(0.01)),
                "affine" => Act::Affine(al.unwrap_or(1.0), be.unwrap_or(0.0)),
                other => return Err(ctx.err(format!("activation '{other}' is not supported (Sigmoid, Tanh, Relu, HardSigmoid, LeakyRelu, Affine)"))),
            };
        }
        if per == 2 {
            a[2] = a[1];
        }
        out.push(a);
    }
    Ok(out)
}

fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let cell = if ctx.node.op == "LSTM" { Cell::Lstm } else { Cell::Gru };
    let a = &ctx.attrs;
    let layout = a.int("layout", 0)? as usize;
    if layout > 1 {
        return Err(ctx.err("layout must be 0 or 1"));
    }
    let x = ctx.in_shape(0)?;
    if x.len() != 3 {
        return Err(ctx.err(format!("X must have rank 3, has shape {x:?}")));
    }
    let (seq, batch, input) = if layout == 0 { (x[0], x[1], x[2]) } else { (x[1], x[0], x[2]) };
    let direction = a.str("direction", "forward")?;
    let reverse = match direction.as_str() {
        "forward" => vec![false],
        "reverse" => vec![true],
        "bidirectional" => vec![false, true],
        other => return Err(ctx.err(format!("direction must be forward, reverse or bidirectional, got '{other}'"))),
    };
    let dirs = reverse.len();
    let gates = if cell == Cell::Lstm { 4 } else { 3 };
    let w = ctx.in_shape(1)?;
    let hidden = a.int("hidden_size", (w.get(1).copied().unwrap_or(0) / gates) as i64)? as usize;
    if hidden == 0 || w != [dirs, gates * hidden, input] {
        return Err(ctx.err(format!("W has shape {w:?}, expected [{dirs}, {}, {input}]", gates * hidden)));
    }
    let r = ctx.in_shape(2)?;
    if r != [dirs, gates * hidden, hidden] {
        return Err(ctx.err(format!("R has shape {r:?}, expected [{dirs}, {}, {hidden}]", gates * hidden)));
    }
    let check = |i: usize, want: Vec<usize>, what: &str| -> Result<()> {
        match ctx.in_shapes.get(i).copied().flatten() {
            Some(s) if numel(s) != numel(&want) => Err(ctx.err(format!("{what} has shape {s:?}, expected {want:?}"))),
            _ => Ok(()),
        }
    };
    check(3, vec![dirs, 2 * gates * hidden], "B")?;
    if ctx.has_input(4) {
        return Err(ctx.err("sequence_lens must be resolved before the engine (all sequences full length)"));
    }
    let hshape = if layout == 0 { vec![dirs, batch, hidden] } else { vec![batch, dirs, hidden] };
    check(5, hshape.clone(), "initial_h")?;
    if cell == Cell::Lstm {
        check(6, hshape.clone(), "initial_c")?;
        check(7, vec![dirs, 3 * hidden], "P")?;
    }
    let clip = if a.has("clip") { Some(a.float("clip", 0.0)?) } else { None };
    let y = if layout == 0 { vec![seq, dirs, batch, hidden] } else { vec![batch, seq, dirs, hidden] };
    let want = [y, hshape.clone(), hshape];
    // which of Y, Y_h (, Y_c) the node computes (omitted outputs do not reach the plan)
    let n_all = if cell == Cell::Lstm { 3 } else { 2 };
    let present: Vec<usize> = match a.ints_opt("present")? {
        Some(v) => v.iter().enumerate().filter(|(_, &p)| p != 0).map(|(i, _)| i).collect(),
        None => (0..ctx.out_shapes.len()).collect(),
    };
    if present.len() != ctx.out_shapes.len() || present.iter().any(|&i| i >= n_all) {
        return Err(ctx.err(format!("{} outputs in the plan do not match the outputs present {present:?}", ctx.out_shapes.len())));
    }
    for (k, s) in ctx.out_shapes.iter().enumerate() {
        if numel(s) != numel(&want[present[k]]) {
            return Err(ctx.err(format!("output {} has shape {s:?}, expected {:?}", present[k], want[present[k]])));
        }
    }
    Ok(Box::new(Rnn {
        cell,
        op: ctx.node.op.clone(),
        name: ctx.node.name.clone(),
        hidden,
        input,
        seq,
        batch,
        acts: parse_acts(ctx, cell, dirs)?,
        reverse,
        layout,
        clip,
        input_forget: a.int("input_forget", 0)? != 0,
        linear_before_reset: a.int("linear_before_reset", 0)? != 0,
        out_shapes: ctx.out_shapes.iter().map(|s| s.to_vec()).collect(),
        present,
    }))
}

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut s = [0f32; 8];
    let n = a.len() / 8 * 8;
    for i in (0..n).step_by(8) {
        for k in 0..8 {
            s[k] += a[i + k] * b[i + k];
        }
    }
    let mut t = (s[0] + s[4]) + (s[1] + s[5]) + ((s[2] + s[6]) + (s[3] + s[7]));
    for i in n..a.len() {
        t += a[i] * b[i];
    }
    t
}

impl Rnn {
    fn err(&self, msg: impl Into<String>) -> Error {
        Error::node(&self.op, &self.name, msg)
    }
    /// Index of x[t, b, :] in X.
    fn x_at(&self, t: usize, b: usize) -> usize {
        (if self.layout == 0 { t * self.batch + b } else { b * self.seq + t }) * self.input
    }
    /// Index of state [d, b, :] in a [dirs, batch, hidden] (layout 0) or [batch, dirs, hidden] tensor.
    fn h_at(&self, d: usize, b: usize) -> usize {
        let dirs = self.reverse.len();
        (if self.layout == 0 { d * self.batch + b } else { b * dirs + d }) * self.hidden
    }
    fn y_at(&self, t: usize, d: usize, b: usize) -> usize {
        let dirs = self.reverse.len();
        (if self.layout == 0 { (t * dirs + d) * self.batch + b } else { (b * self.seq + t) * dirs + d }) * self.hidden
    }
}

impl Op for Rnn {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let get = |i: usize| inputs.get(i).copied().flatten();
        let x = get(0).ok_or_else(|| self.err("X is missing"))?;
        let w = get(1).ok_or_else(|| self.err("W is missing"))?;
        let r = get(2).ok_or_else(|| self.err("R is missing"))?;
        let (h, dirs) = (self.hidden, self.reverse.len());
        let g = if self.cell == Cell::Lstm { 4 } else { 3 };
        if x.data.len() != self.seq * self.batch * self.input || w.data.len() != dirs * g * h * self.input || r.data.len() != dirs * g * h * h {
            return Err(self.err("input sizes do not match the plan"));
        }
        let bias = get(3);
        let h0 = get(5);
        let c0 = if self.cell == Cell::Lstm { get(6) } else { None };
        let p = if self.cell == Cell::Lstm { get(7) } else { None };
        let state_len = dirs * self.batch * h;
        for (t, n) in [(bias, dirs * 2 * g * h), (h0, state_len), (c0, state_len), (p, dirs * 3 * h)] {
            if let Some(t) = t {
                if t.data.len() != n {
                    return Err(self.err(format!("an optional input has {} values, expected {n}", t.data.len())));
                }
            }
        }
        let mut y = vec![0f32; self.seq * dirs * self.batch * h];
        let mut yh = vec![0f32; state_len];
        let mut yc = vec![0f32; state_len];
        let clip = |v: f32| match self.clip {
            Some(c) => v.clamp(-c, c),
            None => v,
        };
        let mut pre = vec![0f32; g * h];
        let mut hr = vec![0f32; h];
        for d in 0..dirs {
            let wd = &w.data[d * g * h * self.input..(d + 1) * g * h * self.input];
            let rd = &r.data[d * g * h * h..(d + 1) * g * h * h];
            let zeros = vec![0f32; 2 * g * h];
            let bd = bias.map(|b| &b.data[d * 2 * g * h..(d + 1) * 2 * g * h]).unwrap_or(&zeros);
            let (wb, rb) = bd.split_at(g * h);
            let [f, gg, hh] = self.acts[d];
            for b in 0..self.batch {
                let at = self.h_at(d, b);
                let mut hs: Vec<f32> = h0.map(|t| t.data[at..at + h].to_vec()).unwrap_or_else(|| vec![0.0; h]);
                let mut cs: Vec<f32> = c0.map(|t| t.data[at..at + h].to_vec()).unwrap_or_else(|| vec![0.0; h]);
                for step in 0..self.seq {
                    let t = if self.reverse[d] { self.seq - 1 - step } else { step };
                    let xt = &x.data[self.x_at(t, b)..self.x_at(t, b) + self.input];
                    for k in 0..g * h {
                        pre[k] = dot(&wd[k * self.input..(k + 1) * self.input], xt) + wb[k];
                    }
                    match self.cell {
                        Cell::Lstm => {
                            // gate order i, o, f, c; peepholes i, o, f
                            for k in 0..g * h {
                                pre[k] += dot(&rd[k * h..(k + 1) * h], &hs) + rb[k];
                            }
                            let pp = p.map(|t| &t.data[d * 3 * h..(d + 1) * 3 * h]);
                            for j in 0..h {
                                let (pi, po, pf) = pp.map(|q| (q[j], q[h + j], q[2 * h + j])).unwrap_or((0.0, 0.0, 0.0));
                                let i = f.f(clip(pre[j] + pi * cs[j]));
                                let fg = if self.input_forget { 1.0 - i } else { f.f(clip(pre[2 * h + j] + pf * cs[j])) };
                                let c = gg.f(clip(pre[3 * h + j]));
                                let cn = fg * cs[j] + i * c;
                                let o = f.f(clip(pre[h + j] + po * cn));
                                cs[j] = cn;
                                hr[j] = o * hh.f(cn);
                            }
                            hs.copy_from_slice(&hr);
                        }
                        Cell::Gru => {
                            // gate order z, r, h
                            for k in 0..2 * h {
                                pre[k] += dot(&rd[k * h..(k + 1) * h], &hs) + rb[k];
                            }
                            let mut z = vec![0f32; h];
                            for j in 0..h {
                                z[j] = f.f(clip(pre[j]));
                                hr[j] = f.f(clip(pre[h + j])); // r
                            }
                            let rh = &rd[2 * h * h..3 * h * h];
                            let mut cand = vec![0f32; h];
                            if self.linear_before_reset {
                                for j in 0..h {
                                    cand[j] = pre[2 * h + j] + hr[j] * (dot(&rh[j * h..(j + 1) * h], &hs) + rb[2 * h + j]);
                                }
                            } else {
                                let rs: Vec<f32> = (0..h).map(|j| hr[j] * hs[j]).collect();
                                for j in 0..h {
                                    cand[j] = pre[2 * h + j] + dot(&rh[j * h..(j + 1) * h], &rs) + rb[2 * h + j];
                                }
                            }
                            for j in 0..h {
                                let ht = gg.f(clip(cand[j]));
                                hs[j] = (1.0 - z[j]) * ht + z[j] * hs[j];
                            }
                        }
                    }
                    let yo = self.y_at(t, d, b);
                    y[yo..yo + h].copy_from_slice(&hs);
                }
                yh[at..at + h].copy_from_slice(&hs);
                yc[at..at + h].copy_from_slice(&cs);
            }
        }
        let mut all = [Some(y), Some(yh), Some(yc)];
        Ok(self.present.iter().zip(&self.out_shapes).map(|(&i, s)| Tensor::new(s.clone(), all[i].take().unwrap_or_default())).collect())
    }
}
