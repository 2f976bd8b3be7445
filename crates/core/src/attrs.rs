use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::HashMap;

/// ONNX node attributes as lowered from TypeScript (tensor attributes are turned into weights).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum AttrValue {
    Int(i64),
    Float(f64),
    Str(String),
    Ints(Vec<i64>),
    Floats(Vec<f64>),
}

/// Typed access to a node's attributes, with errors that name op, node and attribute.
pub struct Attrs<'a> {
    pub op: &'a str,
    pub node: &'a str,
    pub map: &'a HashMap<String, AttrValue>,
}

impl<'a> Attrs<'a> {
    fn bad(&self, attr: &str, msg: &str) -> Error {
        Error::BadAttr { op: self.op.into(), node: self.node.into(), attr: attr.into(), msg: msg.into() }
    }
    pub fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }
    pub fn int_opt(&self, name: &str) -> Result<Option<i64>> {
        match self.map.get(name) {
            None => Ok(None),
            Some(AttrValue::Int(v)) => Ok(Some(*v)),
            Some(AttrValue::Float(v)) if v.fract() == 0.0 => Ok(Some(*v as i64)),
            Some(_) => Err(self.bad(name, "expected an integer")),
        }
    }
    pub fn int(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self.int_opt(name)?.unwrap_or(default))
    }
    pub fn float(&self, name: &str, default: f32) -> Result<f32> {
        match self.map.get(name) {
            None => Ok(default),
            Some(AttrValue::Float(v)) => Ok(*v as f32),
            Some(AttrValue::Int(v)) => Ok(*v as f32),
            Some(_) => Err(self.bad(name, "expected a float")),
        }
    }
    pub fn str(&self, name: &str, default: &str) -> Result<String> {
        match self.map.get(name) {
            None => Ok(default.to_string()),
            Some(AttrValue::Str(s)) => Ok(s.clone()),
            Some(_) => Err(self.bad(name, "expected a string")),
        }
    }
    pub fn ints_opt(&self, name: &str) -> Result<Option<Vec<i64>>> {
        match self.map.get(name) {
            None => Ok(None),
            Some(AttrValue::Ints(v)) => Ok(Some(v.clone())),
            Some(AttrValue::Int(v)) => Ok(Some(vec![*v])),
            Some(AttrValue::Floats(v)) if v.is_empty() => Ok(Some(vec![])),
            Some(_) => Err(self.bad(name, "expected a list of integers")),
        }
    }
    pub fn ints(&self, name: &str, default: &[i64]) -> Result<Vec<i64>> {
        Ok(self.ints_opt(name)?.unwrap_or_else(|| default.to_vec()))
    }
    pub fn floats_opt(&self, name: &str) -> Result<Option<Vec<f32>>> {
        match self.map.get(name) {
            None => Ok(None),
            Some(AttrValue::Floats(v)) => Ok(Some(v.iter().map(|x| *x as f32).collect())),
            Some(AttrValue::Ints(v)) => Ok(Some(v.iter().map(|x| *x as f32).collect())),
            Some(AttrValue::Float(v)) => Ok(Some(vec![*v as f32])),
            Some(_) => Err(self.bad(name, "expected a list of floats")),
        }
    }
}
