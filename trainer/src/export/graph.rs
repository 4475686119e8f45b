//! A minimal ONNX graph builder over the protobuf types of `tract_onnx::pb` (prost).
//!
//! Values are named by the caller (`prefix.what`); the builder keeps names unique by refusing
//! duplicates, so a naming bug is an error at build time rather than a silently rewired graph.
//! Initializers are written as little-endian `raw_data`. No `value_info` is written for
//! intermediate values: tract infers every intermediate shape itself, and symbolic dims in
//! `value_info` can break its analysis once concrete input shapes are set.

use std::collections::HashSet;

use tract_onnx::pb::tensor_proto::{DataLocation, DataType};
use tract_onnx::pb::tensor_shape_proto::dimension::Value as DimValue;
use tract_onnx::pb::tensor_shape_proto::Dimension;
use tract_onnx::pb::type_proto::{Tensor as TypeTensor, Value as TypeValue};
use tract_onnx::pb::{
    attribute_proto::AttributeType, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

use super::ExportError;

/// ONNX IR version that goes with opset 17.
pub const IR_VERSION: i64 = 8;
/// Default-domain opset of the exported graphs (LayerNormalization needs >= 17).
pub const OPSET: i64 = 17;

/// One dimension of a graph input or output.
#[derive(Debug, Clone)]
pub enum Dim {
    /// A fixed size.
    Fixed(i64),
    /// A named dynamic size (`dim_param`).
    Param(&'static str),
}

/// Attribute constructors.
pub fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Int as i32, i: v, ..Default::default() }
}

pub fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Float as i32, f: v, ..Default::default() }
}

pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Ints as i32, ints: v.to_vec(), ..Default::default() }
}

/// Graph under construction.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    names: HashSet<String>,
}

fn value_info(name: &str, dt: DataType, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            denotation: String::new(),
            value: Some(match d {
                Dim::Fixed(v) => DimValue::DimValue(*v),
                Dim::Param(p) => DimValue::DimParam((*p).to_string()),
            }),
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            denotation: String::new(),
            value: Some(TypeValue::TensorType(TypeTensor {
                elem_type: dt as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
        }),
        doc_string: String::new(),
    }
}

impl GraphBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    fn claim(&mut self, name: &str) -> Result<(), ExportError> {
        if !self.names.insert(name.to_string()) {
            return Err(ExportError::Graph(format!("value `{name}` defined twice")));
        }
        Ok(())
    }

    /// Declares a graph input.
    pub fn input(&mut self, name: &str, dt: DataType, dims: &[Dim]) -> Result<String, ExportError> {
        self.claim(name)?;
        self.inputs.push(value_info(name, dt, dims));
        Ok(name.to_string())
    }

    /// Declares `value` (already produced by a node) as a graph output.
    pub fn output(&mut self, value: &str, dt: DataType, dims: &[Dim]) -> Result<(), ExportError> {
        if !self.names.contains(value) {
            return Err(ExportError::Graph(format!("output `{value}` is not produced by any node")));
        }
        self.outputs.push(value_info(value, dt, dims));
        Ok(())
    }

    /// Adds a node with `outputs.len()` named outputs; returns the output names.
    pub fn node_n(
        &mut self,
        op: &str,
        inputs: &[&str],
        outputs: &[String],
        attrs: Vec<AttributeProto>,
    ) -> Result<Vec<String>, ExportError> {
        for i in inputs {
            // "" is ONNX's "optional input absent".
            if !i.is_empty() && !self.names.contains(*i) {
                return Err(ExportError::Graph(format!("{op} node reads undefined value `{i}`")));
            }
        }
        for o in outputs {
            self.claim(o)?;
        }
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.to_vec(),
            name: outputs.first().cloned().unwrap_or_default(),
            op_type: op.into(),
            domain: String::new(),
            attribute: attrs,
            doc_string: String::new(),
        });
        Ok(outputs.to_vec())
    }

    /// Adds a single-output node whose output is named `out`.
    pub fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        out: impl Into<String>,
        attrs: Vec<AttributeProto>,
    ) -> Result<String, ExportError> {
        let out = out.into();
        self.node_n(op, inputs, std::slice::from_ref(&out), attrs)?;
        Ok(out)
    }

    fn initializer(&mut self, name: &str, dt: DataType, dims: &[usize], raw: Vec<u8>) -> Result<String, ExportError> {
        let n: usize = dims.iter().product();
        if raw.len() != n * dt_size(dt) {
            return Err(ExportError::Graph(format!(
                "initializer `{name}`: {} bytes for dims {dims:?} of {dt:?}",
                raw.len()
            )));
        }
        self.claim(name)?;
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: dt as i32,
            name: name.into(),
            raw_data: raw,
            ..Default::default()
        });
        Ok(name.to_string())
    }

    pub fn const_f32(&mut self, name: &str, dims: &[usize], data: &[f32]) -> Result<String, ExportError> {
        self.initializer(name, DataType::Float, dims, data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    pub fn const_i64(&mut self, name: &str, dims: &[usize], data: &[i64]) -> Result<String, ExportError> {
        self.initializer(name, DataType::Int64, dims, data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    pub fn const_i8(&mut self, name: &str, dims: &[usize], data: &[i8]) -> Result<String, ExportError> {
        self.initializer(name, DataType::Int8, dims, data.iter().map(|&v| v as u8).collect())
    }

    /// Number of nodes so far.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Nodes so far (for reports).
    pub fn nodes(&self) -> &[NodeProto] {
        &self.nodes
    }

    /// The finished model.
    pub fn finish(self, graph_name: &str, metadata: &[(&str, String)]) -> ModelProto {
        ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
            producer_name: "ckd-ehr".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(GraphProto {
                node: self.nodes,
                name: graph_name.into(),
                initializer: self.initializers,
                input: self.inputs,
                output: self.outputs,
                ..Default::default()
            }),
            metadata_props: metadata
                .iter()
                .map(|(k, v)| StringStringEntryProto { key: (*k).into(), value: v.clone() })
                .collect(),
            ..Default::default()
        }
    }
}

/// Moves the data of every initializer of at least `min_bytes` out of `model` into one blob,
/// as ONNX external data (`data_location` EXTERNAL, keys `location` = `location`, `offset`,
/// `length`; offsets aligned to [`EXTERNAL_ALIGN`] bytes, the gaps zero). Returns the blob, to
/// be written as the file `location` beside the model. Readers then load each tensor from the
/// file on its own, without holding the whole model's protobuf in memory (tract and
/// onnxruntime both resolve `location` relative to the model file). Initializers already
/// external, or with no `raw_data`, are left as they are.
pub fn externalize(model: &mut ModelProto, location: &str, min_bytes: usize) -> Vec<u8> {
    let mut blob = Vec::new();
    let Some(graph) = model.graph.as_mut() else { return blob };
    for t in &mut graph.initializer {
        if t.raw_data.len() < min_bytes || t.raw_data.is_empty() {
            continue;
        }
        blob.resize(blob.len().next_multiple_of(EXTERNAL_ALIGN), 0);
        let offset = blob.len();
        let raw = std::mem::take(&mut t.raw_data);
        blob.extend_from_slice(&raw);
        t.data_location = Some(DataLocation::External as i32);
        t.external_data =
            [("location", location.to_string()), ("offset", offset.to_string()), ("length", raw.len().to_string())]
                .into_iter()
                .map(|(key, value)| StringStringEntryProto { key: key.into(), value })
                .collect();
    }
    blob
}

/// Alignment of each tensor in an external data blob ([`externalize`]): a cache line, and a
/// multiple of every element size.
pub const EXTERNAL_ALIGN: usize = 64;

fn dt_size(dt: DataType) -> usize {
    match dt {
        DataType::Float | DataType::Int32 => 4,
        DataType::Int64 | DataType::Double => 8,
        DataType::Int8 | DataType::Uint8 | DataType::Bool => 1,
        DataType::Float16 | DataType::Int16 | DataType::Uint16 | DataType::Bfloat16 => 2,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_duplicates_and_undefined_inputs() {
        let mut g = GraphBuilder::new();
        g.input("x", DataType::Float, &[Dim::Param("batch")]).unwrap();
        assert!(g.node("Relu", &["y"], "z", vec![]).is_err());
        g.node("Relu", &["x"], "z", vec![]).unwrap();
        assert!(g.node("Relu", &["x"], "z", vec![]).is_err());
        assert!(g.const_f32("w", &[2], &[1.0]).is_err());
        assert!(g.output("nope", DataType::Float, &[]).is_err());
        g.output("z", DataType::Float, &[Dim::Param("batch")]).unwrap();
        let m = g.finish("g", &[]);
        assert_eq!(m.opset_import[0].version, OPSET);
        assert_eq!(m.graph.unwrap().node.len(), 1);
    }

    #[test]
    fn externalize_moves_large_initializers_with_aligned_offsets() {
        let mut g = GraphBuilder::new();
        g.const_f32("small", &[2], &[1.0, 2.0]).unwrap();
        g.const_i8("big", &[3000], &[7; 3000]).unwrap();
        g.const_f32("big2", &[1000], &[0.5; 1000]).unwrap();
        let mut m = g.finish("g", &[]);
        let blob = externalize(&mut m, "m.data", 1024);
        let inits = &m.graph.as_ref().unwrap().initializer;
        assert_eq!(inits[0].raw_data.len(), 8, "below the threshold: stays inline");
        assert_eq!(inits[0].data_location, None);
        let entry = |t: &TensorProto, k: &str| t.external_data.iter().find(|e| e.key == k).unwrap().value.clone();
        assert!(inits[1].raw_data.is_empty());
        assert_eq!(inits[1].data_location, Some(DataLocation::External as i32));
        assert_eq!(entry(&inits[1], "location"), "m.data");
        assert_eq!((entry(&inits[1], "offset"), entry(&inits[1], "length")), ("0".into(), "3000".into()));
        // 3000 rounded up to the next multiple of 64.
        assert_eq!((entry(&inits[2], "offset"), entry(&inits[2], "length")), ("3008".into(), "4000".into()));
        assert_eq!(blob.len(), 3008 + 4000);
        assert!(blob[..3000].iter().all(|&b| b == 7) && blob[3000..3008].iter().all(|&b| b == 0));
        assert_eq!(&blob[3008..3012], &0.5f32.to_le_bytes());
    }
}
