//! Test data and ONNX graph building blocks shared by the unit tests (test builds only):
//! deterministic values without an RNG dependency, nodes, attributes, initializers, value infos
//! and a model around a graph.

use std::sync::Arc;
pub(crate) use tract_onnx::pb::tensor_shape_proto::dimension::Value as Dim;

use tract_onnx::pb::tensor_shape_proto::Dimension;
use tract_onnx::pb::type_proto::{Tensor as TypeTensor, Value as TypeValue};
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use tract_onnx::prelude::{InferenceModelExt, IntoRunnable, TypedRunnableModel};

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
    tensor(name, DataType::Int64, &[v.len() as i64], v.iter().flat_map(|x| x.to_le_bytes()).collect())
}

pub(crate) fn f32s(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    tensor(name, DataType::Float, dims, v.iter().flat_map(|x| x.to_le_bytes()).collect())
}

pub(crate) fn i8s(name: &str, dims: &[i64], v: &[i8]) -> TensorProto {
    tensor(name, DataType::Int8, dims, v.iter().map(|&x| x as u8).collect())
}

/// An initializer of `data_type` and `dims` holding `raw_data` (little-endian values).
fn tensor(name: &str, data_type: DataType, dims: &[i64], raw_data: Vec<u8>) -> TensorProto {
    TensorProto { name: name.into(), data_type: data_type as i32, dims: dims.to_vec(), raw_data, ..Default::default() }
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

/// The optimized plan of `graph` (as an opset-17 [`model`]) with the ops `register` adds to
/// tract's ONNX parser.
pub(crate) fn plan(graph: GraphProto, register: impl Fn(&mut tract_onnx::Onnx)) -> Arc<TypedRunnableModel> {
    let mut fw = tract_onnx::onnx();
    register(&mut fw);
    fw.parse(&model(graph), None).unwrap().model.into_optimized().unwrap().into_runnable().unwrap()
}

/// An edit of a test graph, named by what it changes.
pub(crate) type Edit = Box<dyn Fn(&mut GraphProto)>;

/// For every `(what, edit)`: `pass` on the edited `graph()` fuses nothing and leaves it as it was.
#[track_caller]
pub(crate) fn assert_each_left_alone(
    graph: impl Fn() -> GraphProto,
    pass: impl Fn(&mut GraphProto) -> usize,
    cases: Vec<(&str, Edit)>,
) {
    for (what, edit) in cases {
        let mut g = graph();
        edit(&mut g);
        let before = g.clone();
        assert_eq!(pass(&mut g), 0, "{what}");
        assert_eq!(g, before, "{what}: graph changed");
    }
}
