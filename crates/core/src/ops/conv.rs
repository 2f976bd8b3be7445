//! Conv and ConvTranspose (1-D and 2-D), see CONTRACT.md.
//!
//! Conv picks one of three paths at build time:
//! - depthwise (one input channel per group): a direct SIMD kernel per (image, channel)
//!   plane, parallel over planes;
//! - pointwise (1x1, stride 1, no padding): a GEMM straight on the NCHW input;
//! - anything else: im2col over blocks of output columns + GEMM.
//!
//! The GEMM is [`crate::kernels::pgemm`] in onnxruntime's (MLAS's) summation order on every
//! CPU (AVX-512, AVX2 + FMA, or plain code), on weights packed at build time when they are
//! constant. Bias and the fused activation are applied while the tile is in registers
//! (ReLU/Clip) or per block right after. Images run in parallel when there are at least as
//! many images as threads, otherwise MLAS's column blocks (and rows of small planes) do.

use super::{input, reg_fusing, BuildCtx, Op, Registry};
use crate::error::{Error, Result};
use crate::kernels::act::Activation;
use crate::kernels::conv::{col2im, depthwise_plane, im2col, DwScratch, Geom2};
use crate::kernels::gemm::{sgemm, MatRef};
use crate::kernels::mlas;
use crate::kernels::pgemm::{self, PackedA};
use crate::kernels::simd_level;
use crate::tensor::Tensor;
use rayon::prelude::*;
use std::sync::Arc;

pub fn register(r: &mut Registry) {
    reg_fusing(r, "Conv", build_conv);
    reg_fusing(r, "ConvTranspose", build_conv_transpose);
}

/// Floats of im2col columns + output kept per block (about 1 MiB, half an L2).
const BLOCK_FLOATS: usize = 256 * 1024;

/// Attributes common to Conv and ConvTranspose, for `nsp` spatial axes.
struct SpatialAttrs {
    pads: Vec<usize>,
    strides: Vec<usize>,
    dilations: Vec<usize>,
    group: usize,
}

fn spatial_attrs(ctx: &BuildCtx, nsp: usize) -> Result<SpatialAttrs> {
    let a = &ctx.attrs;
    let to_usize = |name: &str, v: Vec<i64>, want: usize, min: i64| -> Result<Vec<usize>> {
        if v.len() != want {
            return Err(ctx.err(format!("'{name}' has {} values, expected {want}", v.len())));
        }
        if v.iter().any(|&x| x < min) {
            return Err(ctx.err(format!("'{name}' = {v:?}: values must be >= {min}")));
        }
        Ok(v.into_iter().map(|x| x as usize).collect())
    };
    let pads = to_usize("pads", a.ints("pads", &vec![0; 2 * nsp])?, 2 * nsp, 0)?;
    let strides = to_usize("strides", a.ints("strides", &vec![1; nsp])?, nsp, 1)?;
    let dilations = to_usize("dilations", a.ints("dilations", &vec![1; nsp])?, nsp, 1)?;
    let group = a.int("group", 1)?;
    if group < 1 {
        return Err(ctx.err(format!("group = {group} must be >= 1")));
    }
    Ok(SpatialAttrs { pads, strides, dilations, group: group as usize })
}

/// Maps 1-D (`[L]`) and 2-D (`[H, W]`) spatial data onto a 2-D geometry (`h = 1` for 1-D).
/// `ins`/`outs` are the input/output spatial sizes, `ks` the kernel.
fn geom(ctx: &BuildCtx, ins: &[usize], ks: &[usize], outs: &[usize], a: &SpatialAttrs) -> Result<(Geom2, [usize; 2])> {
    let nsp = ins.len();
    let g = match nsp {
        1 => Geom2 {
            h: 1,
            w: ins[0],
            kh: 1,
            kw: ks[0],
            sh: 1,
            sw: a.strides[0],
            dh: 1,
            dw: a.dilations[0],
            ph: 0,
            pw: a.pads[0],
            oh: 1,
            ow: outs[0],
        },
        2 => Geom2 {
            h: ins[0],
            w: ins[1],
            kh: ks[0],
            kw: ks[1],
            sh: a.strides[0],
            sw: a.strides[1],
            dh: a.dilations[0],
            dw: a.dilations[1],
            ph: a.pads[0],
            pw: a.pads[1],
            oh: outs[0],
            ow: outs[1],
        },
        _ => return Err(ctx.err(format!("{nsp}-D spatial data is not supported (only 1-D and 2-D)"))),
    };
    let end = if nsp == 1 { [0, a.pads[1]] } else { [a.pads[2], a.pads[3]] };
    if g.kh == 0 || g.kw == 0 {
        return Err(ctx.err("kernel has a zero-sized spatial axis"));
    }
    Ok((g, end))
}

/// Adds `bias` and applies the activation in one pass for ReLU/Clip (the common case),
/// otherwise bias then the activation kernel.
fn epilogue(row: &mut [f32], bias: f32, act: Option<&Activation>) {
    let (lo, hi) = match act {
        Some(Activation::Relu) => (0.0, f32::INFINITY),
        Some(Activation::Clip(lo, hi)) => (*lo, *hi),
        Some(a) => {
            if bias != 0.0 {
                row.iter_mut().for_each(|v| *v += bias);
            }
            a.apply(row);
            return;
        }
        None => {
            if bias != 0.0 {
                row.iter_mut().for_each(|v| *v += bias);
            }
            return;
        }
    };
    for v in row.iter_mut() {
        let x = *v + bias;
        let x = if x < lo { lo } else { x };
        *v = if x > hi { hi } else { x };
    }
}

/// Optional per-output-channel bias: constant at build time or read at run time.
fn bias_len_check(ctx: &BuildCtx, m: usize) -> Result<()> {
    if ctx.has_input(2) {
        let b = ctx.in_shape(2)?;
        if b.iter().product::<usize>() != m || b.len() != 1 {
            return Err(ctx.err(format!("bias has shape {b:?}, expected [{m}]")));
        }
    }
    Ok(())
}

fn operand<'t>(c: &'t Option<Arc<Tensor>>, inputs: &[Option<&'t Tensor>], i: usize, len: usize) -> Result<&'t [f32]> {
    let t = match c {
        Some(t) => t.as_ref(),
        None => input(inputs, i)?,
    };
    if t.data.len() != len {
        return Err(Error::Plan(format!("input {i} has {} elements, expected {len}", t.data.len())));
    }
    Ok(&t.data)
}

fn bias_operand<'t>(c: &'t Option<Arc<Tensor>>, inputs: &[Option<&'t Tensor>], has: bool, m: usize) -> Result<Option<&'t [f32]>> {
    if !has {
        return Ok(None);
    }
    operand(c, inputs, 2, m).map(Some)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum ConvKind {
    Depthwise,
    Pointwise,
    Im2col,
}

struct Conv {
    n: usize,
    c: usize,
    m: usize,
    group: usize,
    g: Geom2,
    kind: ConvKind,
    /// Output columns per GEMM block.
    nb: usize,
    w: Option<Arc<Tensor>>,
    /// Constant weights packed per group for the packed GEMM.
    packed: Option<Vec<PackedA>>,
    b: Option<Arc<Tensor>>,
    has_bias: bool,
    act: Option<Activation>,
    /// A fused BatchNormalization `(a, b)` per output channel, applied after the bias and
    /// before `act` (see [`BuildCtx::post`]).
    post: Option<Arc<(Vec<f32>, Vec<f32>)>>,
    out_shape: Vec<usize>,
}

fn build_conv(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let xs = ctx.in_shape(0)?;
    let ws = ctx.in_shape(1)?;
    if xs.len() < 3 || ws.len() != xs.len() {
        return Err(ctx.err(format!("input {xs:?} and weight {ws:?} must have the same rank >= 3")));
    }
    let nsp = xs.len() - 2;
    let a = spatial_attrs(ctx, nsp)?;
    let (n, c, m) = (xs[0], xs[1], ws[0]);
    if c % a.group != 0 || m % a.group != 0 || ws[1] * a.group != c {
        return Err(ctx.err(format!("group {} does not fit input {xs:?} and weight {ws:?}", a.group)));
    }
    bias_len_check(ctx, m)?;
    let os = ctx.out_shapes.first().copied().ok_or_else(|| ctx.err("no output"))?;
    if os.len() != xs.len() || os[0] != n || os[1] != m {
        return Err(ctx.err(format!("output shape {os:?} does not match input {xs:?} and weight {ws:?}")));
    }
    let (g, end) = geom(ctx, &xs[2..], &ws[2..], &os[2..], &a)?;
    let want_h = Geom2::out_len(g.h, g.kh, g.sh, g.dh, g.ph, end[0]);
    let want_w = Geom2::out_len(g.w, g.kw, g.sw, g.dw, g.pw, end[1]);
    if want_h != Some(g.oh) || want_w != Some(g.ow) {
        return Err(ctx.err(format!(
            "output spatial size {:?} does not follow from input {xs:?}, kernel {:?}, pads {:?}, strides {:?}, dilations {:?}",
            &os[2..],
            &ws[2..],
            a.pads,
            a.strides,
            a.dilations
        )));
    }
    let cg = c / a.group;
    let kind = if cg == 1 && a.group > 1 {
        ConvKind::Depthwise
    } else if g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0 && g.oh == g.h && g.ow == g.w {
        ConvKind::Pointwise
    } else {
        ConvKind::Im2col
    };
    let kg = cg * g.kk();
    let mg = m / a.group;
    let ohw = g.ohw();
    let nb = (BLOCK_FLOATS / (kg + mg).max(1)).max(64).next_multiple_of(16).min(ohw.max(1));
    Ok(Box::new(Conv {
        n,
        c,
        m,
        group: a.group,
        g,
        kind,
        nb,
        packed: match ctx.const_opt(1) {
            Some(w) if kind != ConvKind::Depthwise && w.data.len() == m * kg => {
                Some((0..a.group).map(|gi| PackedA::new(&w.data[gi * mg * kg..(gi + 1) * mg * kg], mg, kg)).collect())
            }
            _ => None,
        },
        w: ctx.const_opt(1),
        b: if ctx.has_input(2) { ctx.const_opt(2) } else { None },
        has_bias: ctx.has_input(2),
        act: ctx.fused,
        post: match &ctx.post {
            Some(p) if p.0.len() == m && p.1.len() == m => Some(p.clone()),
            Some(_) => return Err(ctx.err("fused BatchNormalization does not match the output channels")),
            None => None,
        },
        out_shape: os.to_vec(),
    }))
}

impl Conv {
    /// The activation a kernel may apply itself: none when a fused BatchNormalization has to
    /// come between the sum and the activation.
    fn kernel_act(&self) -> Option<Activation> {
        if self.post.is_some() {
            None
        } else {
            self.act
        }
    }

    /// Output row of channel `ch` whose sum and bias are done: the fused BatchNormalization
    /// (two roundings, as the unfused op) and then the activation, when a BatchNormalization
    /// is fused; otherwise `rest` (an activation the kernel did not apply).
    fn after_bias(&self, row: &mut [f32], ch: usize, rest: Option<&Activation>) {
        match &self.post {
            Some(p) => {
                let (a, b) = (p.0[ch], p.1[ch]);
                row.iter_mut().for_each(|v| *v = *v * a + b);
                if let Some(act) = &self.act {
                    act.apply(row);
                }
            }
            None => {
                if let Some(act) = rest {
                    act.apply(row);
                }
            }
        }
    }

    /// Bias, fused BatchNormalization and activation on one output row of channel `ch`.
    fn finish(&self, row: &mut [f32], ch: usize, bias: f32) {
        if self.post.is_some() {
            epilogue(row, bias, None);
            self.after_bias(row, ch, None);
        } else {
            epilogue(row, bias, self.act.as_ref());
        }
    }

}

/// One column block of the exact (MLAS-order) GEMM path.
#[derive(Clone, Copy)]
struct Block {
    img: usize,
    gi: usize,
    j0: usize,
    j1: usize,
    kc: usize,
}

impl Conv {
    /// Column segments `(start, count, K block)` of one image-group GEMM, as onnxruntime's
    /// `MlasConv` cuts it (see kernels/mlas.rs): the K blocking depends on how many columns
    /// each MLAS GEMM call covers.
    fn mlas_segments(&self, mg: usize, ohw: usize, kg: usize) -> Vec<(usize, usize, usize)> {
        let single = self.n * self.group > 1;
        let seg = |v: Vec<(usize, usize)>| v.into_iter().map(|(s, c)| (s, c, mlas::stride_k(c, kg))).collect();
        let parts = || seg(mlas::gemm_parts(mg, ohw, kg).into_iter().filter(|p| p.m0 == 0).map(|p| (p.n0, p.nc)).collect());
        match self.kind {
            // GemmDirect: per image-group MlasSgemmOperation, or the threaded MlasGemm
            ConvKind::Pointwise if single => seg(vec![(0, ohw)]),
            ConvKind::Pointwise => parts(),
            // ExpandThenGemm (more filters than output pixels): threaded MlasGemm per image
            _ if mg > ohw => parts(),
            // ExpandThenGemmSegmented
            _ if single => seg(vec![(0, ohw)]),
            _ => seg(mlas::conv_segments(mg, ohw, kg)),
        }
    }

    /// Rows of the MLAS `N == 1` kernel calls (a 1x1 output plane): `(start, count)`.
    fn n1_row_parts(&self, mg: usize, kg: usize) -> Vec<(usize, usize)> {
        if self.kind == ConvKind::Pointwise && self.n * self.group > 1 {
            return vec![(0, mg)];
        }
        mlas::gemm_parts(mg, 1, kg).into_iter().map(|p| (p.m0, p.mc)).collect()
    }

    /// Output rows of group `gi` for columns `b.j0..b.j1` of image `xi` into `dst` (row
    /// stride `ldo`, column `b.j0` at `dst[0]`), in MLAS's order; bias and the activation
    /// after.
    #[allow(clippy::too_many_arguments)]
    fn exact_block(&self, xi: &[f32], w: &[f32], packed: &[PackedA], bias: Option<&[f32]>, b: &Block, cols: &mut Vec<f32>, dst: &mut [f32], ldo: usize) {
        self.exact_block_rows(xi, w, packed, bias, b, 0, self.m / self.group, cols, dst, ldo)
    }

    /// [`Self::exact_block`] for output rows `r0..r1` of the group only (`dst` starts at row
    /// `r0`); `r0` a multiple of [`pgemm::ROW_BLOCK`]. A strict row range needs the GEMM path
    /// (more than one filter and output pixel); the summation order is the full block's.
    #[allow(clippy::too_many_arguments)]
    fn exact_block_rows(&self, xi: &[f32], w: &[f32], packed: &[PackedA], bias: Option<&[f32]>, b: &Block, r0: usize, r1: usize, cols: &mut Vec<f32>, dst: &mut [f32], ldo: usize) {
        let g = &self.g;
        let (cg, mg) = (self.c / self.group, self.m / self.group);
        let kg = cg * g.kk();
        let (hw, ohw) = (g.h * g.w, g.ohw());
        let nbk = b.j1 - b.j0;
        let xg = &xi[b.gi * cg * hw..(b.gi + 1) * cg * hw];
        let (src, ldx): (&[f32], usize) = if self.kind == ConvKind::Pointwise {
            (&xg[b.j0..], hw)
        } else {
            if cols.len() < kg * nbk {
                cols.resize(kg * nbk, 0.0);
            }
            im2col(xg, cg, g, b.j0, b.j1, &mut cols[..kg * nbk]);
            (&cols[..kg * nbk], nbk)
        };
        let bg = bias.map(|bs| &bs[b.gi * mg..(b.gi + 1) * mg]);
        let wg = &w[b.gi * mg * kg..(b.gi + 1) * mg * kg];
        debug_assert!((r0, r1) == (0, mg) || (mg > 1 && ohw > 1));
        if mg == 1 {
            mlas::m1_row(wg, src, ldx, nbk, &mut dst[..nbk]);
        } else if ohw == 1 {
            let xv: Vec<f32> = (0..kg).map(|p| src[p * ldx]).collect();
            let mut o = vec![0f32; mg];
            for (r0, rc) in self.n1_row_parts(mg, kg) {
                mlas::n1_rows(&xv, &wg[r0 * kg..], kg, &mut o[r0..r0 + rc]);
            }
            for (co, v) in o.iter().enumerate() {
                dst[co * ldo] = *v;
            }
        } else {
            let (lo, hi, rest) = match self.kernel_act() {
                Some(Activation::Relu) => (0.0, f32::INFINITY, None),
                Some(Activation::Clip(lo, hi)) => (lo, hi, None),
                other => (f32::NEG_INFINITY, f32::INFINITY, other),
            };
            pgemm::gemm_packed_rows(&packed[b.gi], r0, r1, src, ldx, nbk, dst, ldo, bg, lo, hi, b.kc);
            if rest.is_some() || self.post.is_some() {
                for co in 0..r1 - r0 {
                    self.after_bias(&mut dst[co * ldo..co * ldo + nbk], b.gi * mg + r0 + co, rest.as_ref());
                }
            }
            return;
        }
        for co in 0..mg {
            self.finish(&mut dst[co * ldo..co * ldo + nbk], b.gi * mg + co, bg.map_or(0.0, |b| b[co]));
        }
    }

    /// A 1x1 output plane with several filters per group (a classifier conv): MLAS's
    /// `N == 1` kernel per image and group, the same rows and order as [`Self::exact_block`].
    /// Rows are cut into chunks of 64 inside each MLAS row part (a multiple of 4, so every
    /// row keeps its place in the 4/2/1 grouping of [`mlas::n1_rows`]), the chunks run in
    /// parallel, and each chunk goes over all images while its weights stay in cache
    /// (per image, the 3 MB of a 768x1000 classifier came from L3 every time).
    fn run_n1(&self, x: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
        const CHUNK: usize = 64;
        let g = &self.g;
        let (cg, mg) = (self.c / self.group, self.m / self.group);
        let kg = cg * g.kk();
        let hw = g.h * g.w;
        let (n, groups) = (self.n, self.group);
        // the single im2col column of every (image, group)
        let mut xs = vec![0f32; n * groups * kg];
        for (t, dst) in xs.chunks_mut(kg.max(1)).enumerate() {
            let (img, gi) = (t / groups, t % groups);
            im2col(&x[(img * self.c + gi * cg) * hw..(img * self.c + (gi + 1) * cg) * hw], cg, g, 0, 1, dst);
        }
        let mut tasks = Vec::new();
        for gi in 0..groups {
            for (r0, rc) in self.n1_row_parts(mg, kg) {
                let mut s = r0;
                while s < r0 + rc {
                    let c = CHUNK.min(r0 + rc - s);
                    tasks.push((gi, s, c));
                    s += c;
                }
            }
        }
        let done: Vec<Vec<f32>> = tasks
            .par_iter()
            .map(|&(gi, s, c)| {
                let mut o = vec![0f32; n * c];
                let wc = &w[(gi * mg + s) * kg..];
                for (img, oi) in o.chunks_mut(c).enumerate() {
                    let t = img * groups + gi;
                    mlas::n1_rows(&xs[t * kg..(t + 1) * kg], wc, kg, oi);
                    for (co, v) in oi.iter_mut().enumerate() {
                        let ch = gi * mg + s + co;
                        self.finish(std::slice::from_mut(v), ch, bias.map_or(0.0, |b| b[ch]));
                    }
                }
                o
            })
            .collect();
        for (&(gi, s, c), o) in tasks.iter().zip(&done) {
            for (img, oi) in o.chunks(c).enumerate() {
                let at = img * self.m + gi * mg + s;
                out[at..at + c].copy_from_slice(oi);
            }
        }
    }

    /// The GEMM paths in onnxruntime's summation order (every CPU with FMA; the same order
    /// in plain code elsewhere).
    fn run_exact(&self, x: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
        let g = &self.g;
        let (cg, mg) = (self.c / self.group, self.m / self.group);
        let kg = cg * g.kk();
        let (hw, ohw) = (g.h * g.w, g.ohw());
        if ohw == 1 && mg > 1 && kg > 0 {
            return self.run_n1(x, w, bias, out);
        }
        let owned;
        let packed: &[PackedA] = match &self.packed {
            Some(p) => p,
            None => {
                owned = (0..self.group).map(|gi| PackedA::new(&w[gi * mg * kg..(gi + 1) * mg * kg], mg, kg)).collect::<Vec<_>>();
                &owned
            }
        };
        // column blocks of at most nb inside MLAS's segments
        let mut blocks = Vec::new();
        let segs = if mg == 1 || ohw == 1 { vec![(0, ohw, kg.max(1))] } else { self.mlas_segments(mg, ohw, kg) };
        let nb = if ohw == 1 { 1 } else { self.nb };
        for img in 0..self.n {
            for gi in 0..self.group {
                for &(s, c, kc) in &segs {
                    let mut j0 = s;
                    while j0 < s + c {
                        let j1 = (j0 + nb).min(s + c);
                        blocks.push(Block { img, gi, j0, j1, kc });
                        j0 = j1;
                    }
                }
            }
        }
        let threads = rayon::current_num_threads();
        let img_len = self.m * ohw;
        if self.n >= threads || threads == 1 {
            let per_img = blocks.len() / self.n.max(1);
            out.par_chunks_mut(img_len).zip(x.par_chunks(self.c * hw)).enumerate().for_each_init(Vec::new, |cols, (img, (o, xi))| {
                for b in &blocks[img * per_img..(img + 1) * per_img] {
                    let at = b.gi * mg * ohw + b.j0;
                    self.exact_block(xi, w, packed, bias, b, cols, &mut o[at..], ohw);
                }
            });
        } else {
            // Few images: blocks in parallel, each into a private buffer, then copied out.
            // MLAS's column segments of a small plane can be a single block (a 14x14 1x1
            // conv at batch 1 is one MLAS call): the GEMM's rows are then split as well, in
            // whole packed row blocks, so that every thread has work. Splitting rows changes
            // no element's order.
            let rb = mg.div_ceil(pgemm::ROW_BLOCK);
            let split = if mg > 1 && ohw > 1 { (2 * threads).div_ceil(blocks.len()).clamp(1, rb) } else { 1 };
            let step = rb.div_ceil(split) * pgemm::ROW_BLOCK;
            let tasks: Vec<(usize, usize, usize)> =
                (0..blocks.len()).flat_map(|bi| (0..mg).step_by(step.max(1)).map(move |r0| (bi, r0, (r0 + step).min(mg)))).collect();
            let done: Vec<Vec<f32>> = tasks
                .par_iter()
                .map_init(Vec::new, |cols, &(bi, r0, r1)| {
                    let b = &blocks[bi];
                    let nbk = b.j1 - b.j0;
                    let mut buf = crate::kernels::alloc::for_overwrite((r1 - r0) * nbk);
                    let xi = &x[b.img * self.c * hw..(b.img + 1) * self.c * hw];
                    self.exact_block_rows(xi, w, packed, bias, b, r0, r1, cols, &mut buf, nbk);
                    buf
                })
                .collect();
            for (&(bi, r0, r1), buf) in tasks.iter().zip(done) {
                let b = &blocks[bi];
                let nbk = b.j1 - b.j0;
                for co in r0..r1 {
                    let at = b.img * img_len + (b.gi * mg + co) * ohw + b.j0;
                    out[at..at + nbk].copy_from_slice(&buf[(co - r0) * nbk..(co - r0 + 1) * nbk]);
                }
            }
        }
    }
}

impl Op for Conv {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let g = &self.g;
        let (hw, ohw, kk) = (g.h * g.w, g.ohw(), g.kk());
        let x = operand(&None, inputs, 0, self.n * self.c * hw)?;
        let w = operand(&self.w, inputs, 1, self.m * (self.c / self.group) * kk)?;
        let bias = bias_operand(&self.b, inputs, self.has_bias, self.m)?;
        let threads = rayon::current_num_threads();
        // The depthwise and exact GEMM paths write every output element (see their loops),
        // so the buffer is not zero-filled first.
        let len = self.n * self.m * ohw;
        let mut out = crate::kernels::alloc::for_overwrite(len);
        if out.is_empty() {
            return Ok(vec![Tensor::new(self.out_shape.clone(), out)]);
        }
        match self.kind {
            ConvKind::Depthwise => {
                let level = simd_level();
                let mg = self.m / self.group;
                // Several small planes per task, so that a 7x7 plane does not pay a task each.
                let per = (4096 / ohw).clamp(1, (self.n * self.m).div_ceil(4 * threads).max(1));
                out.par_chunks_mut(ohw * per).enumerate().for_each_init(DwScratch::default, |scratch, (t, chunk)| {
                    for (j, o) in chunk.chunks_mut(ohw).enumerate() {
                        let p = t * per + j;
                        let (img, co) = (p / self.m, p % self.m);
                        let ci = img * self.c + co / mg;
                        let b = bias.map_or(0.0, |b| b[co]);
                        depthwise_plane(level, &x[ci * hw..(ci + 1) * hw], &w[co * kk..(co + 1) * kk], b, g, self.kernel_act(), scratch, o);
                        if self.post.is_some() {
                            self.after_bias(o, co, None);
                        }
                    }
                });
            }
            _ => self.run_exact(x, w, bias, &mut out),
        }
        Ok(vec![Tensor::new(self.out_shape.clone(), out)])
    }
}

struct ConvTranspose {
    n: usize,
    c: usize,
    m: usize,
    group: usize,
    /// `h/w`: output plane, `oh/ow`: input grid (the roles of [`col2im`]).
    g: Geom2,
    w: Option<Arc<Tensor>>,
    b: Option<Arc<Tensor>>,
    has_bias: bool,
    act: Option<Activation>,
    out_shape: Vec<usize>,
}

fn build_conv_transpose(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let xs = ctx.in_shape(0)?;
    let ws = ctx.in_shape(1)?;
    if xs.len() < 3 || ws.len() != xs.len() {
        return Err(ctx.err(format!("input {xs:?} and weight {ws:?} must have the same rank >= 3")));
    }
    let nsp = xs.len() - 2;
    let a = spatial_attrs(ctx, nsp)?;
    let (n, c) = (xs[0], xs[1]);
    if ws[0] != c || c % a.group != 0 {
        return Err(ctx.err(format!("weight {ws:?} does not fit input {xs:?} with group {}", a.group)));
    }
    let m = ws[1] * a.group;
    bias_len_check(ctx, m)?;
    let os = ctx.out_shapes.first().copied().ok_or_else(|| ctx.err("no output"))?;
    if os.len() != xs.len() || os[0] != n || os[1] != m {
        return Err(ctx.err(format!("output shape {os:?} does not match input {xs:?} and weight {ws:?}")));
    }
    let op = a.ints_output_padding(ctx, nsp)?;
    // Geometry with the conv roles swapped: the ConvTranspose output is the "input" plane.
    let (g, end) = geom(ctx, &os[2..], &ws[2..], &xs[2..], &a)?;
    let (oph, opw) = if nsp == 1 { (0, op[0]) } else { (op[0], op[1]) };
    let expect = |i: usize, k: usize, s: usize, d: usize, p0: usize, p1: usize, opad: usize| -> Option<usize> {
        (s * (i.checked_sub(1)?) + opad + (k - 1) * d + 1).checked_sub(p0 + p1)
    };
    if expect(g.oh, g.kh, g.sh, g.dh, g.ph, end[0], oph) != Some(g.h) || expect(g.ow, g.kw, g.sw, g.dw, g.pw, end[1], opw) != Some(g.w) {
        return Err(ctx.err(format!(
            "output spatial size {:?} does not follow from input {xs:?}, kernel {:?}, pads {:?}, strides {:?}, dilations {:?}, output_padding {op:?}",
            &os[2..],
            &ws[2..],
            a.pads,
            a.strides,
            a.dilations
        )));
    }
    Ok(Box::new(ConvTranspose {
        n,
        c,
        m,
        group: a.group,
        g,
        w: ctx.const_opt(1),
        b: if ctx.has_input(2) { ctx.const_opt(2) } else { None },
        has_bias: ctx.has_input(2),
        act: ctx.fused,
        out_shape: os.to_vec(),
    }))
}

impl SpatialAttrs {
    fn ints_output_padding(&self, ctx: &BuildCtx, nsp: usize) -> Result<Vec<usize>> {
        let v = ctx.attrs.ints("output_padding", &vec![0; nsp])?;
        if v.len() != nsp || v.iter().any(|&x| x < 0) {
            return Err(ctx.err(format!("output_padding {v:?} must have {nsp} non-negative values")));
        }
        Ok(v.into_iter().map(|x| x as usize).collect())
    }
}

impl ConvTranspose {
    fn image(&self, x: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [f32], cols: &mut Vec<f32>, threads: usize) {
        let g = &self.g;
        let (cg, mg) = (self.c / self.group, self.m / self.group);
        let (in_hw, out_hw) = (g.oh * g.ow, g.h * g.w);
        let rows = mg * g.kk();
        if cols.len() < rows * in_hw {
            cols.resize(rows * in_hw, 0.0);
        }
        for gi in 0..self.group {
            let xg = &x[gi * cg * in_hw..(gi + 1) * cg * in_hw];
            let wg = &w[gi * cg * rows..(gi + 1) * cg * rows];
            let og = &mut out[gi * mg * out_hw..(gi + 1) * mg * out_hw];
            let cols = &mut cols[..rows * in_hw];
            sgemm(rows, in_hw, cg, MatRef::transposed(wg, rows), MatRef::row_major(xg, in_hw), cols, in_hw, false, threads);
            og.fill(0.0);
            col2im(cols, mg, g, og);
            for co in 0..mg {
                let plane = &mut og[co * out_hw..(co + 1) * out_hw];
                if let Some(b) = bias {
                    let b = b[gi * mg + co];
                    plane.iter_mut().for_each(|v| *v += b);
                }
                if let Some(a) = &self.act {
                    a.apply(plane);
                }
            }
        }
    }
}

impl Op for ConvTranspose {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let g = &self.g;
        let (in_hw, out_hw) = (g.oh * g.ow, g.h * g.w);
        let x = operand(&None, inputs, 0, self.n * self.c * in_hw)?;
        let w = operand(&self.w, inputs, 1, self.c * (self.m / self.group) * g.kk())?;
        let bias = bias_operand(&self.b, inputs, self.has_bias, self.m)?;
        let mut out = crate::kernels::alloc::zeroed(self.n * self.m * out_hw);
        if out.is_empty() || x.is_empty() {
            // an empty input still yields bias (+ activation) everywhere
            if let Some(b) = bias {
                for (i, v) in out.iter_mut().enumerate() {
                    *v = b[(i / out_hw.max(1)) % self.m];
                }
            }
            if let Some(a) = &self.act {
                a.apply(&mut out);
            }
            return Ok(vec![Tensor::new(self.out_shape.clone(), out)]);
        }
        let threads = rayon::current_num_threads();
        if self.n >= threads || threads == 1 {
            out.par_chunks_mut(self.m * out_hw)
                .zip(x.par_chunks(self.c * in_hw))
                .for_each_init(Vec::new, |cols, (o, xi)| self.image(xi, w, bias, o, cols, 1));
        } else {
            let mut cols = Vec::new();
            for (o, xi) in out.chunks_mut(self.m * out_hw).zip(x.chunks(self.c * in_hw)) {
                self.image(xi, w, bias, o, &mut cols, threads);
            }
        }
        Ok(vec![Tensor::new(self.out_shape.clone(), out)])
    }
}

/// Helpers shared by the op test modules of this crate.
#[cfg(test)]
pub(crate) mod testutil {
    use crate::attrs::{AttrValue, Attrs};
    use crate::error::Result;
    use crate::kernels::act::Activation;
    use crate::ops::{registry, BuildCtx};
    use crate::plan::{DType, NodeDef};
    use crate::tensor::Tensor;
    use std::sync::Arc;

    /// Deterministic values in [-1, 1).
    pub fn rnd(n: usize, seed: u64) -> Vec<f32> {
        let mut r = Rng(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1);
        (0..n).map(|_| r.f32()).collect()
    }

    pub struct Rng(pub u64);
    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        /// Uniform in `lo..=hi`.
        pub fn range(&mut self, lo: usize, hi: usize) -> usize {
            lo + (self.next() % (hi - lo + 1) as u64) as usize
        }
        pub fn f32(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
        pub fn bool(&mut self) -> bool {
            self.next() & 1 == 1
        }
    }

    pub fn ints(v: &[usize]) -> AttrValue {
        AttrValue::Ints(v.iter().map(|&x| x as i64).collect())
    }

    /// Builds op `op` through the registry and runs it once. `consts[i]` marks input `i` as
    /// a plan constant.
    pub fn run_op(
        op: &str,
        attrs: &[(&str, AttrValue)],
        inputs: &[Option<&Tensor>],
        consts: &[bool],
        out_shapes: &[Vec<usize>],
        fused: Option<Activation>,
    ) -> Result<Vec<Tensor>> {
        let node = NodeDef {
            op: op.to_string(),
            name: "test".to_string(),
            inputs: inputs.iter().enumerate().map(|(i, t)| t.map(|_| i)).collect(),
            outputs: (0..out_shapes.len()).map(|i| 100 + i).collect(),
            attrs: attrs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            opset: 17,
        };
        let ctx = BuildCtx {
            node: &node,
            attrs: Attrs { op: &node.op, node: &node.name, map: &node.attrs },
            in_shapes: inputs.iter().map(|t| t.map(|t| t.shape.as_slice())).collect(),
            in_dtypes: inputs.iter().map(|t| t.map(|_| DType::Float)).collect(),
            out_shapes: out_shapes.iter().map(|s| s.as_slice()).collect(),
            out_dtypes: vec![DType::Float; out_shapes.len()],
            consts: inputs
                .iter()
                .enumerate()
                .map(|(i, t)| if consts.get(i).copied().unwrap_or(false) { t.map(|t| Arc::new(t.clone())) } else { None })
                .collect(),
            initializer: (0..inputs.len()).map(|i| consts.get(i).copied().unwrap_or(false)).collect(),
            fused,
            post: None,
        };
        let reg = registry().get(op).expect("op registered");
        let built = (reg.build)(&ctx)?;
        built.run(inputs)
    }

    /// Relative 1e-4 of the largest reference magnitude.
    pub fn assert_close(got: &Tensor, want_shape: &[usize], want: &[f32], what: &str) {
        assert_eq!(got.shape, want_shape, "{what}: shape");
        assert_eq!(got.data.len(), want.len(), "{what}: length");
        let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        for (i, (a, b)) in got.data.iter().zip(want).enumerate() {
            let ok = (a - b).abs() <= 1e-4 * scale || (a.is_infinite() && a == b);
            assert!(ok, "{what}: element {i}: got {a}, want {b} (scale {scale})");
        }
    }

    pub fn apply_ref(act: Option<Activation>, v: &mut [f32]) {
        if let Some(a) = act {
            a.apply_at(crate::kernels::SimdLevel::Scalar, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use crate::attrs::AttrValue;
    use crate::kernels::act::Activation;
    use crate::tensor::Tensor;

    struct P {
        n: usize,
        c: usize,
        m: usize,
        group: usize,
        ins: Vec<usize>,
        ks: Vec<usize>,
        strides: Vec<usize>,
        dil: Vec<usize>,
        pads: Vec<usize>,
    }

    /// Direct N-d (1-D/2-D) grouped convolution in f64.
    fn conv_ref(p: &P, x: &[f32], w: &[f32], b: Option<&[f32]>, outs: &[usize]) -> Vec<f32> {
        let nsp = p.ins.len();
        let (ih, iw, kh, kw, oh, ow) = if nsp == 1 {
            (1, p.ins[0], 1, p.ks[0], 1, outs[0])
        } else {
            (p.ins[0], p.ins[1], p.ks[0], p.ks[1], outs[0], outs[1])
        };
        let (sh, sw, dh, dw, ph, pw) = if nsp == 1 {
            (1, p.strides[0], 1, p.dil[0], 0, p.pads[0])
        } else {
            (p.strides[0], p.strides[1], p.dil[0], p.dil[1], p.pads[0], p.pads[1])
        };
        let (cg, mg) = (p.c / p.group, p.m / p.group);
        let mut out = vec![0f32; p.n * p.m * oh * ow];
        for n in 0..p.n {
            for co in 0..p.m {
                let gi = co / mg;
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut s = b.map_or(0.0, |b| b[co] as f64);
                        for ci in 0..cg {
                            let cin = gi * cg + ci;
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy = (oy * sh + ky * dh) as isize - ph as isize;
                                    let ix = (ox * sw + kx * dw) as isize - pw as isize;
                                    if iy >= 0 && iy < ih as isize && ix >= 0 && ix < iw as isize {
                                        s += x[((n * p.c + cin) * ih + iy as usize) * iw + ix as usize] as f64
                                            * w[((co * cg + ci) * kh + ky) * kw + kx] as f64;
                                    }
                                }
                            }
                        }
                        out[((n * p.m + co) * oh + oy) * ow + ox] = s as f32;
                    }
                }
            }
        }
        out
    }

    fn out_len(i: usize, k: usize, s: usize, d: usize, p0: usize, p1: usize) -> Option<usize> {
        crate::kernels::conv::Geom2::out_len(i, k, s, d, p0, p1)
    }

    #[test]
    fn conv_random_shapes_match_direct_reference() {
        let mut r = Rng(7);
        let mut done = [0usize; 3]; // depthwise, pointwise, general
        let mut trial = 0;
        while trial < 400 {
            trial += 1;
            let nsp = r.range(1, 2);
            let kind = r.range(0, 2);
            let group = match kind {
                0 => r.range(2, 5),
                _ => *[1, 1, 2, 3].get(r.range(0, 3)).unwrap(),
            };
            let cg = if kind == 0 { 1 } else { r.range(1, 4) };
            let mg = if kind == 0 { r.range(1, 2) } else { r.range(1, 5) };
            let pointwise = kind == 1;
            let ins: Vec<usize> = (0..nsp).map(|_| r.range(1, 13)).collect();
            let ks: Vec<usize> = (0..nsp).map(|_| if pointwise { 1 } else { r.range(1, 4) }).collect();
            let strides: Vec<usize> = (0..nsp).map(|_| if pointwise { 1 } else { r.range(1, 3) }).collect();
            let dil: Vec<usize> = (0..nsp).map(|_| if pointwise { 1 } else { r.range(1, 2) }).collect();
            let pads: Vec<usize> = (0..2 * nsp).map(|_| if pointwise { 0 } else { r.range(0, 2) }).collect();
            let p = P { n: *[1, 2, 3, 5].get(r.range(0, 3)).unwrap(), c: cg * group, m: mg * group, group, ins, ks, strides, dil, pads };
            let outs: Option<Vec<usize>> =
                (0..nsp).map(|i| out_len(p.ins[i], p.ks[i], p.strides[i], p.dil[i], p.pads[i], p.pads[i + nsp])).collect();
            let Some(outs) = outs else { continue };
            let xshape: Vec<usize> = [p.n, p.c].iter().chain(&p.ins).copied().collect();
            let wshape: Vec<usize> = [p.m, cg].iter().chain(&p.ks).copied().collect();
            let oshape: Vec<usize> = [p.n, p.m].iter().chain(&outs).copied().collect();
            let x = Tensor::new(xshape.clone(), rnd(xshape.iter().product(), trial));
            let w = Tensor::new(wshape.clone(), rnd(wshape.iter().product(), trial + 1000));
            let bias = r.bool().then(|| Tensor::new(vec![p.m], rnd(p.m, trial + 2000)));
            let act = [None, Some(Activation::Relu), Some(Activation::Clip(0.0, 0.5)), Some(Activation::HardSigmoid(0.3, 0.4))][r.range(0, 3)];
            let mut want = conv_ref(&p, &x.data, &w.data, bias.as_ref().map(|b| b.data.as_slice()), &outs);
            apply_ref(act, &mut want);
            let attrs = [
                ("pads", ints(&p.pads)),
                ("strides", ints(&p.strides)),
                ("dilations", ints(&p.dil)),
                ("group", AttrValue::Int(group as i64)),
            ];
            let wconst = r.bool();
            let got = run_op("Conv", &attrs, &[Some(&x), Some(&w), bias.as_ref()], &[false, wconst, true], &[oshape.clone()], act)
                .expect("conv runs");
            assert_close(&got[0], &oshape, &want, &format!("conv trial {trial}"));
            done[kind] += 1;
        }
        assert!(done.iter().all(|&d| d > 50), "{done:?}");
    }

    #[test]
    fn conv_large_blocks_batch_below_and_above_threads() {
        // Large enough that im2col and pointwise split into several column blocks.
        for &(n, c, m, hw, k, s, pad) in &[(1, 3, 8, 80, 3, 1, 1), (3, 16, 20, 40, 1, 1, 0), (1, 40, 24, 70, 1, 1, 0), (4, 5, 7, 45, 3, 2, 1)] {
            let p = P { n, c, m, group: 1, ins: vec![hw, hw + 3], ks: vec![k, k], strides: vec![s, s], dil: vec![1, 1], pads: vec![pad; 4] };
            let outs: Vec<usize> = (0..2).map(|i| out_len(p.ins[i], k, s, 1, pad, pad).unwrap()).collect();
            let x = Tensor::new(vec![n, c, hw, hw + 3], rnd(n * c * hw * (hw + 3), 3));
            let w = Tensor::new(vec![m, c, k, k], rnd(m * c * k * k, 4));
            let b = Tensor::new(vec![m], rnd(m, 5));
            let mut want = conv_ref(&p, &x.data, &w.data, Some(&b.data), &outs);
            apply_ref(Some(Activation::Relu), &mut want);
            let attrs = [("pads", ints(&[pad; 4])), ("strides", ints(&[s, s])), ("dilations", ints(&[1, 1])), ("group", AttrValue::Int(1))];
            let oshape = vec![n, m, outs[0], outs[1]];
            let got = run_op("Conv", &attrs, &[Some(&x), Some(&w), Some(&b)], &[false, true, true], &[oshape.clone()], Some(Activation::Relu)).unwrap();
            assert_close(&got[0], &oshape, &want, "large conv");
        }
    }

    #[test]
    fn conv_rejects_bad_shapes_without_panicking() {
        let x = Tensor::zeros(&[1, 4, 5, 5]);
        let w = Tensor::zeros(&[6, 3, 3, 3]);
        let attrs = [("group", AttrValue::Int(1))];
        assert!(run_op("Conv", &attrs, &[Some(&x), Some(&w)], &[false, true], &[vec![1, 6, 3, 3]], None).is_err());
        let w = Tensor::zeros(&[6, 4, 3, 3]);
        assert!(run_op("Conv", &attrs, &[Some(&x), Some(&w)], &[false, true], &[vec![1, 6, 4, 3]], None).is_err());
        assert!(run_op("Conv", &[("group", AttrValue::Int(0))], &[Some(&x), Some(&w)], &[false, true], &[vec![1, 6, 3, 3]], None).is_err());
        let b = Tensor::zeros(&[5]);
        assert!(run_op("Conv", &attrs, &[Some(&x), Some(&w), Some(&b)], &[false, true, true], &[vec![1, 6, 3, 3]], None).is_err());
        let w7 = Tensor::zeros(&[6, 4, 7, 7]);
        assert!(run_op("Conv", &attrs, &[Some(&x), Some(&w7)], &[false, true], &[vec![1, 6, 1, 1]], None).is_err());
        assert!(run_op("Conv", &[("strides", ints(&[0, 1]))], &[Some(&x), Some(&w)], &[false, true], &[vec![1, 6, 3, 3]], None).is_err());
        // good one works
        assert!(run_op("Conv", &attrs, &[Some(&x), Some(&w)], &[false, true], &[vec![1, 6, 3, 3]], None).is_ok());
    }

    /// Scatter definition of ConvTranspose in f64.
    #[allow(clippy::too_many_arguments)]
    fn conv_t_ref(p: &P, x: &[f32], w: &[f32], b: Option<&[f32]>, outs: &[usize]) -> Vec<f32> {
        let nsp = p.ins.len();
        let ext = |v: &[usize], d: usize| if nsp == 1 { (d, v[0]) } else { (v[0], v[1]) };
        let (ih, iw) = ext(&p.ins, 1);
        let (kh, kw) = ext(&p.ks, 1);
        let (oh, ow) = ext(outs, 1);
        let (sh, sw) = ext(&p.strides, 1);
        let (dh, dw) = ext(&p.dil, 1);
        let (ph, pw) = ext(&p.pads, 0);
        let (cg, mg) = (p.c / p.group, p.m / p.group);
        let mut out = vec![0f64; p.n * p.m * oh * ow];
        for n in 0..p.n {
            for ci in 0..p.c {
                let gi = ci / cg;
                for iy in 0..ih {
                    for ix in 0..iw {
                        let xv = x[((n * p.c + ci) * ih + iy) * iw + ix] as f64;
                        for mo in 0..mg {
                            let co = gi * mg + mo;
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let y = (iy * sh + ky * dh) as isize - ph as isize;
                                    let xx = (ix * sw + kx * dw) as isize - pw as isize;
                                    if y >= 0 && y < oh as isize && xx >= 0 && xx < ow as isize {
                                        out[((n * p.m + co) * oh + y as usize) * ow + xx as usize] +=
                                            xv * w[((ci * mg + mo) * kh + ky) * kw + kx] as f64;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        out.iter()
            .enumerate()
            .map(|(i, v)| (v + b.map_or(0.0, |b| b[(i / (oh * ow)) % p.m] as f64)) as f32)
            .collect()
    }

    #[test]
    fn conv_transpose_random_shapes_match_scatter_reference() {
        let mut r = Rng(11);
        let mut done = 0;
        for trial in 0..200u64 {
            let nsp = r.range(1, 2);
            let group = r.range(1, 3);
            let (cg, mg) = (r.range(1, 3), r.range(1, 3));
            let ins: Vec<usize> = (0..nsp).map(|_| r.range(1, 7)).collect();
            let ks: Vec<usize> = (0..nsp).map(|_| r.range(1, 4)).collect();
            let strides: Vec<usize> = (0..nsp).map(|_| r.range(1, 3)).collect();
            let dil: Vec<usize> = (0..nsp).map(|_| r.range(1, 2)).collect();
            let pads: Vec<usize> = (0..2 * nsp).map(|_| r.range(0, 1)).collect();
            let opad: Vec<usize> = (0..nsp).map(|i| r.range(0, strides[i].max(dil[i]) - 1)).collect();
            let p = P { n: r.range(1, 3), c: cg * group, m: mg * group, group, ins, ks, strides, dil, pads };
            let outs: Option<Vec<usize>> = (0..nsp)
                .map(|i| (p.strides[i] * (p.ins[i] - 1) + opad[i] + (p.ks[i] - 1) * p.dil[i] + 1).checked_sub(p.pads[i] + p.pads[i + nsp]).filter(|&v| v > 0))
                .collect();
            let Some(outs) = outs else { continue };
            let xshape: Vec<usize> = [p.n, p.c].iter().chain(&p.ins).copied().collect();
            let wshape: Vec<usize> = [p.c, mg].iter().chain(&p.ks).copied().collect();
            let oshape: Vec<usize> = [p.n, p.m].iter().chain(&outs).copied().collect();
            let x = Tensor::new(xshape.clone(), rnd(xshape.iter().product(), trial));
            let w = Tensor::new(wshape.clone(), rnd(wshape.iter().product(), trial + 500));
            let bias = r.bool().then(|| Tensor::new(vec![p.m], rnd(p.m, trial + 900)));
            let act = [None, Some(Activation::Relu)][r.range(0, 1)];
            let mut want = conv_t_ref(&p, &x.data, &w.data, bias.as_ref().map(|b| b.data.as_slice()), &outs);
            apply_ref(act, &mut want);
            let attrs = [
                ("pads", ints(&p.pads)),
                ("strides", ints(&p.strides)),
                ("dilations", ints(&p.dil)),
                ("group", AttrValue::Int(group as i64)),
                ("output_padding", ints(&opad)),
            ];
            let got = run_op("ConvTranspose", &attrs, &[Some(&x), Some(&w), bias.as_ref()], &[false, r.bool(), true], &[oshape.clone()], act)
                .expect("conv transpose runs");
            assert_close(&got[0], &oshape, &want, &format!("convT trial {trial}"));
            done += 1;
        }
        assert!(done > 100, "{done}");
        // a wrong output size is an error
        let x = Tensor::zeros(&[1, 2, 3, 3]);
        let w = Tensor::zeros(&[2, 1, 3, 3]);
        assert!(run_op("ConvTranspose", &[], &[Some(&x), Some(&w)], &[false, true], &[vec![1, 1, 6, 5]], None).is_err());
        assert!(run_op("ConvTranspose", &[], &[Some(&x), Some(&w)], &[false, true], &[vec![1, 1, 5, 5]], None).is_ok());
    }
}

/// `cargo test --release -p mpq-core bench_mobilenet -- --ignored --nocapture`: times the
/// conv layers of MobileNetV1-0.75 (batch 32, 224x224, BN folded, fused ReLU), per layer and
/// in total, best of a few runs.
#[cfg(test)]
mod bench {
    use super::testutil::*;
    use crate::attrs::AttrValue;
    use crate::kernels::act::Activation;
    use crate::tensor::Tensor;
    use std::time::Instant;

    #[test]
    #[ignore]
    fn bench_mobilenet_v1_075_batch32() {
        let n: usize = std::env::var("MPQ_BENCH_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(32);
        let ch = |c: usize| c * 3 / 4;
        // (cin, cout, kernel, stride, depthwise, input size)
        let mut layers = vec![(3, ch(32), 3, 2, false, 224)];
        let cfg = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)];
        let (mut c, mut hw) = (ch(32), 112);
        for (out, s) in cfg {
            layers.push((c, c, 3, s, true, hw));
            hw /= s;
            layers.push((c, ch(out), 1, 1, false, hw));
            c = ch(out);
        }
        let mut total = 0.0;
        let (mut dw_t, mut pw_t) = (0.0, 0.0);
        for (i, &(cin, cout, k, s, dw, hw)) in layers.iter().enumerate() {
            let pad = k / 2;
            let ohw = (hw + 2 * pad - k) / s + 1;
            let x = Tensor::new(vec![n, cin, hw, hw], rnd(n * cin * hw * hw, i as u64));
            let wshape = vec![cout, if dw { 1 } else { cin }, k, k];
            let w = Tensor::new(wshape.clone(), rnd(wshape.iter().product(), 99));
            let b = Tensor::new(vec![cout], rnd(cout, 7));
            let attrs = [
                ("pads", ints(&[pad; 4])),
                ("strides", ints(&[s, s])),
                ("dilations", ints(&[1, 1])),
                ("group", AttrValue::Int(if dw { cin as i64 } else { 1 })),
            ];
            let oshape = vec![n, cout, ohw, ohw];
            let mut best = f64::INFINITY;
            for _ in 0..3 {
                let t = Instant::now();
                let out = run_op("Conv", &attrs, &[Some(&x), Some(&w), Some(&b)], &[false, true, true], &[oshape.clone()], Some(Activation::Relu)).unwrap();
                best = best.min(t.elapsed().as_secs_f64());
                std::hint::black_box(out);
            }
            total += best;
            if dw {
                dw_t += best;
            } else if k == 1 {
                pw_t += best;
            }
            let gflop = 2.0 * (n * cout * ohw * ohw * k * k * if dw { 1 } else { cin }) as f64 / 1e9;
            println!("layer {i:2} {} {cin:4}->{cout:4} k{k} s{s} {hw:3}x{hw:<3}: {:8.2} ms  {:6.1} GFLOP/s", if dw { "dw" } else { "  " }, best * 1e3, gflop / best);
        }
        // The whole chain, each layer reading the previous layer's output (as a model runs).
        let mut best_chain = f64::INFINITY;
        for rep in 0..3 {
            let (cin0, hw0) = (layers[0].0, layers[0].5);
            let mut x = Tensor::new(vec![n, cin0, hw0, hw0], rnd(n * cin0 * hw0 * hw0, 1));
            let ws: Vec<(Tensor, Tensor)> = layers
                .iter()
                .map(|&(cin, cout, k, _, dw, _)| {
                    // scaled so that activations stay O(1) through the chain (no denormals, no inf)
                    let fan_in = if dw { 1 } else { cin } * k * k;
                    let sc = (6.0 / fan_in as f32).sqrt();
                    let w = rnd(cout * fan_in, 5).iter().map(|v| v * sc).collect();
                    (Tensor::new(vec![cout, if dw { 1 } else { cin }, k, k], w), Tensor::new(vec![cout], rnd(cout, 6).iter().map(|v| v * 0.1).collect()))
                })
                .collect();
            let t = Instant::now();
            for (&(cin, cout, k, s, dw, hw), (w, b)) in layers.iter().zip(&ws) {
                let pad = k / 2;
                let ohw = (hw + 2 * pad - k) / s + 1;
                let attrs = [("pads", ints(&[pad; 4])), ("strides", ints(&[s, s])), ("group", AttrValue::Int(if dw { cin as i64 } else { 1 }))];
                x = run_op("Conv", &attrs, &[Some(&x), Some(w), Some(b)], &[false, true, true], &[vec![n, cout, ohw, ohw]], Some(Activation::Relu)).unwrap().remove(0);
            }
            let e = t.elapsed().as_secs_f64();
            best_chain = best_chain.min(e);
            let mx = x.data.iter().fold(0f32, |m, v| m.max(v.abs()));
            println!("chain run {rep}: {:.1} ms (max |output| {mx:.3e})", e * 1e3);
        }
        println!("batch {n}: whole conv chain best {:.1} ms", best_chain * 1e3);
        println!("batch {n}: total conv {:.1} ms (depthwise {:.1} ms, pointwise {:.1} ms), threads {}", total * 1e3, dw_t * 1e3, pw_t * 1e3, rayon::current_num_threads());
    }
}
