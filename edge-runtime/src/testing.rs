//! Test data and ONNX graph building blocks shared by the unit tests (test builds only):
//! deterministic values without an RNG dependency, nodes, attributes, initializers, value infos
//! and a model around a graph.

pub(crate) use tract_onnx::pb::tensor_shape_proto::dimension::Value as Dim;
use tract_onnx::pb::tensor_shape_proto::Dimension;
use tract_onnx::pb::type_proto::{Tensor as TypeTensor, Value as TypeValue};
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

/// Deterministic values in [-2, 2) (an LCG: no RNG dependency in this crate).
pub(crate) fn values(n: usize, seed: u64) -> Vec<f32> {
    lcg(n, seed).map(|s| ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0).collect()
}

/// Deterministic bytes (the same LCG, its top byte).
pub(crate) fn bytes(n: usize, seed: u64) -> Vec<u8> {
    lcg(n, seed).map(|s| (s >> 56) as u8).collect()
}

/// `n` states of Knuth's MMIX LCG after `seed` (the seed itself stirred once first).
fn lcg(n: usize, seed: u64) -> impl Iterator<Item = u64> {
    const A: u64 = 6364136223846793005;
    const C: u64 = 1442695040888963407;
    let mut s = seed.wrapping_mul(A).wrapping_add(C);
    (0..n).map(move |_| {
        s = s.wrapping_mul(A).wrapping_add(C);
        s
    })
}

pub(crate) fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: output.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute,
        ..Default::default()
    }
}

pub(crate) fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Ints as i32, ints: v.to_vec(), ..Default::default() }
}

pub(crate) fn int(name: &str, i: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Int as i32, i, ..Default::default() }
}

pub(crate) fn i64s(name: &str, v: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        data_type: DataType::Int64 as i32,
        dims: vec![v.len() as i64],
        raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

pub(crate) fn f32s(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        data_type: DataType::Float as i32,
        dims: dims.to_vec(),
        raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

pub(crate) fn i8s(name: &str, dims: &[i64], v: &[i8]) -> TensorProto {
    TensorProto {
        name: name.into(),
        data_type: DataType::Int8 as i32,
        dims: dims.to_vec(),
        raw_data: v.iter().map(|&x| x as u8).collect(),
        ..Default::default()
    }
}

/// A graph input or output of `elem_type` with `dims` (a name is a symbolic dimension).
pub(crate) fn value_info(name: &str, elem_type: DataType, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims.iter().map(|d| Dimension { value: Some(d.clone()), ..Default::default() }).collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(TypeValue::TensorType(TypeTensor {
                elem_type: elem_type as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An opset-17 model of `graph`.
pub(crate) fn model(graph: GraphProto) -> ModelProto {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
        graph: Some(graph),
        ..Default::default()
    }
}
