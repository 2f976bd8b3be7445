//! QuantizeLinear and DequantizeLinear (see CONTRACT.md), per tensor or per axis, on the
//! fake-quant kernels of [`crate::kernels::fq`] (the arithmetic the quantizer simulates with).
use super::elementwise::checked;
use super::{reg, BuildCtx, Op, Registry};
use crate::error::{Error, Result};
use crate::kernels::bcast::{PAR_CHUNK, PAR_MIN};
use crate::kernels::{fq, simd_level};
use crate::tensor::{numel, Tensor};
use rayon::prelude::*;

pub fn register(r: &mut Registry) {
    reg(r, "QuantizeLinear", build);
    reg(r, "DequantizeLinear", build);
}

struct Qdq {
    op: String,
    name: String,
    quantize: bool,
    shape: Vec<usize>,
    /// Number of scales: 1 (per tensor) or the size of the quantization axis.
    channels: usize,
    /// Elements after the axis (per axis only).
    inner: usize,
    has_zp: bool,
    qmin: f32,
    qmax: f32,
}

impl Op for Qdq {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = checked(&self.op, &self.name, inputs, 0, numel(&self.shape))?;
        let scale = checked(&self.op, &self.name, inputs, 1, self.channels)?;
        let zeros;
        let zp: &[f32] = if self.has_zp {
            &checked(&self.op, &self.name, inputs, 2, self.channels)?.data
        } else {
            zeros = vec![0.0; self.channels];
            &zeros
        };
        if let Some(bad) = scale.data.iter().find(|s| !s.is_finite() || **s == 0.0) {
            return Err(Error::node(&self.op, &self.name, format!("scale {bad} is not a finite non-zero number")));
        }
        let level = simd_level();
        let (s, x) = (&scale.data, &x.data);
        let mut y = vec![0.0; x.len()];
        let (lo, hi) = (self.qmin, self.qmax);
        let per_tensor = self.channels == 1;
        let inner = self.inner;
        let kernel = |start: usize, xc: &[f32], yc: &mut [f32]| match (self.quantize, per_tensor) {
            (true, true) => fq::quantize(level, xc, yc, s[0], zp[0], lo, hi),
            (false, true) => fq::dequantize(level, xc, yc, s[0], zp[0]),
            (true, false) => fq::quantize_per_channel(level, xc, yc, s, zp, inner, start, lo, hi),
            (false, false) => fq::dequantize_per_channel(level, xc, yc, s, zp, inner, start),
        };
        if y.len() < PAR_MIN {
            kernel(0, x, &mut y);
        } else {
            // chunks of whole `inner` blocks so each knows its channel
            let per = if per_tensor { PAR_CHUNK } else { PAR_CHUNK.div_ceil(inner.max(1)).max(1) * inner.max(1) };
            y.par_chunks_mut(per).zip(x.par_chunks(per)).enumerate().for_each(|(i, (yc, xc))| kernel(i * per, xc, yc));
        }
        Ok(vec![Tensor::new(self.shape.clone(), y)])
    }
}

fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let quantize = ctx.node.op == "QuantizeLinear";
    let x = ctx.in_shape(0)?;
    let s = ctx.in_shape(1)?;
    let out = ctx.out_shapes.first().copied().ok_or_else(|| ctx.err("expects 1 output"))?;
    if out != x {
        return Err(ctx.err(format!("output shape {out:?} differs from input {x:?}")));
    }
    let channels = numel(s);
    let (channels, inner) = if channels == 1 {
        (1, 1)
    } else {
        let mut axis = ctx.attrs.int("axis", 1)?;
        if axis < 0 {
            axis += x.len() as i64;
        }
        if axis < 0 || axis as usize >= x.len() {
            return Err(ctx.err(format!("axis {axis} out of range for input {x:?}")));
        }
        let a = axis as usize;
        if s.len() != 1 || s[0] != x[a] {
            return Err(ctx.err(format!("per-axis scale of shape {s:?} must be 1-D of size {} (axis {a} of {x:?})", x[a])));
        }
        (x[a], x[a + 1..].iter().product())
    };
    let has_zp = ctx.has_input(2);
    if has_zp && numel(ctx.in_shape(2)?) != channels {
        return Err(ctx.err(format!("zero point of shape {:?} does not match scale of shape {s:?}", ctx.in_shape(2)?)));
    }
    let qmin = ctx.attrs.float("qmin", 0.0)?;
    let qmax = ctx.attrs.float("qmax", 255.0)?;
    if qmin.is_nan() || qmax.is_nan() || qmin > qmax {
        return Err(ctx.err(format!("qmin {qmin} must not exceed qmax {qmax}")));
    }
    Ok(Box::new(Qdq { op: ctx.node.op.clone(), name: ctx.node.name.clone(), quantize, shape: x.to_vec(), channels, inner, has_zp, qmin, qmax }))
}

#[cfg(test)]
mod tests {
    use super::super::elementwise::testutil::*;
    use crate::kernels::fq::{dequantize_one, quantize_one};
    use crate::tensor::numel;

    const I8: &str = r#"{"qmin": -128, "qmax": 127}"#;

    #[test]
    fn quantize_ties_to_even_and_clamps() {
        let x = vec![2.5, 3.5, -2.5, -3.5, 0.5, 1.5, 200.0, -200.0];
        let r = run("QuantizeLinear", I8, vec![inp(&[8], x.clone()), const_inp(&[], vec![1.0])], &[&[8]]).unwrap();
        assert_eq!(r[0].data, vec![2., 4., -2., -4., 0., 2., 127., -128.]);
        // uint8 with a zero point: the tie is rounded before the zero point is added
        let r = run(
            "QuantizeLinear",
            r#"{"qmin": 0, "qmax": 255}"#,
            vec![inp(&[8], x), const_inp(&[], vec![0.5]), const_inp(&[], vec![128.0])],
            &[&[8]],
        )
        .unwrap();
        assert_eq!(r[0].data, vec![133., 135., 123., 121., 129., 131., 255., 0.]);
        let r = run("DequantizeLinear", "{}", vec![inp(&[3], vec![0., 128., 255.]), inp(&[1], vec![0.5]), inp(&[1], vec![128.])], &[&[3]]).unwrap();
        assert_eq!(r[0].data, vec![-64., 0., 63.5]);
        // zero point omitted
        let r = run("DequantizeLinear", "{}", vec![inp(&[2], vec![-3., 4.]), inp(&[], vec![0.25])], &[&[2]]).unwrap();
        assert_eq!(r[0].data, vec![-0.75, 1.0]);
    }

    #[test]
    fn per_axis_matches_reference() {
        for (shape, axis) in [(vec![4usize, 3, 5, 5], 0usize), (vec![2, 8, 3, 3], 1), (vec![300, 256], 1), (vec![64, 40, 30], 1)] {
            let c = shape[axis];
            let inner: usize = shape[axis + 1..].iter().product();
            let n = numel(&shape);
            let x = rand(n, c as u64, 4.0);
            let s: Vec<f32> = (0..c).map(|i| 0.01 + 0.002 * i as f32).collect();
            let z: Vec<f32> = (0..c).map(|i| (i % 5) as f32 - 2.0).collect();
            let attrs = format!(r#"{{"axis": {axis}, "qmin": -128, "qmax": 127}}"#);
            let r = run("QuantizeLinear", &attrs, vec![inp(&shape, x.clone()), const_inp(&[c], s.clone()), const_inp(&[c], z.clone())], &[&shape]).unwrap();
            let want: Vec<f32> = (0..n).map(|i| {
                let ch = (i / inner) % c;
                quantize_one(x[i], s[ch], z[ch], -128.0, 127.0)
            }).collect();
            assert_eq!(r[0].data, want, "{shape:?} axis {axis}");
            let q = r[0].data.clone();
            let r = run("DequantizeLinear", &format!(r#"{{"axis": {axis}}}"#), vec![inp(&shape, q.clone()), const_inp(&[c], s.clone()), const_inp(&[c], z.clone())], &[&shape]).unwrap();
            let want: Vec<f32> = (0..n).map(|i| {
                let ch = (i / inner) % c;
                dequantize_one(q[i], s[ch], z[ch])
            }).collect();
            assert_eq!(r[0].data, want);
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        // scale size does not match the axis
        assert!(run("QuantizeLinear", r#"{"axis": 1}"#, vec![inp(&[2, 3], vec![0.; 6]), const_inp(&[2], vec![1., 1.])], &[&[2, 3]]).is_err());
        // zero point does not match the scale
        assert!(run("QuantizeLinear", "{}", vec![inp(&[2], vec![0.; 2]), const_inp(&[], vec![1.]), const_inp(&[2], vec![0., 0.])], &[&[2]]).is_err());
        assert!(run("QuantizeLinear", r#"{"qmin": 5, "qmax": 1}"#, vec![inp(&[2], vec![0.; 2]), const_inp(&[], vec![1.])], &[&[2]]).is_err());
        // a zero scale computed at run time
        assert!(run("QuantizeLinear", "{}", vec![inp(&[2], vec![0.; 2]), inp(&[], vec![0.])], &[&[2]]).is_err());
    }
}
