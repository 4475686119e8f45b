//! An exact rewrite of the ONNX graph for unpadded inputs: drops the additive attention mask.
//!
//! BERT-style graphs turn the `attention_mask` input [batch, seq] into an additive term
//! (ours: `mask * -MASK_NEG + MASK_NEG`, unsqueezed to [batch, 1, 1, seq]) added to every
//! layer's attention scores [batch, heads, seq, seq]. When a sequence runs alone, without
//! padding, its mask is all ones and that term is exactly 0.0, so `scores + term` equals
//! `scores` (up to the sign of a zero score, which softmax does not see). tract runs that
//! broadcasting `Add` as a separate element-wise pass when the plan is built for symbolic shapes
//! (about 4 ns per element on x86_64: 12 ms per layer at 512 tokens for MiniLM-L6, a quarter of
//! the run), so [`crate::Engine`] removes it and runs the rows of a batch one at a time.
//!
//! Conservative: a node counts as part of the mask branch when its inputs are the mask (or
//! branch values) and initializers only. The branch's value at mask = 1 is evaluated in f32
//! through `Cast`, `Mul`, `Add`, `Sub`, `Div`, `Neg` (scalar constants) and the shape ops
//! `Unsqueeze`, `Reshape`, `Identity`. An `Add` of a branch value and a non-branch value is
//! removed only when the branch value is exactly 0.0 at mask = 1. Anything else the branch
//! feeds (say, a mean pooling over the mask) is left as it is: the engine still feeds the
//! all-ones mask. A branch op outside that list makes the pass give up and leave the graph
//! untouched (then the engine pads batches as it does without the pass).

use std::collections::HashMap;

use tract_onnx::pb::{tensor_proto::DataType, GraphProto, TensorProto};

/// The graph input holding the attention mask (the exporter's name).
pub const ATTENTION_MASK: &str = "attention_mask";

/// The f32 value of a scalar (one-element) float initializer stored as `raw_data` or
/// `float_data`; `None` for anything else.
fn scalar_f32(t: &TensorProto) -> Option<f32> {
    if t.data_type != DataType::Float as i32 || t.dims.iter().product::<i64>() != 1 {
        return None;
    }
    if t.raw_data.len() == 4 {
        return Some(f32::from_le_bytes(t.raw_data[..4].try_into().ok()?));
    }
    match t.float_data.as_slice() {
        [v] => Some(*v),
        _ => None,
    }
}

/// Whether a `Cast` node converts to f32 (its `to` attribute is FLOAT).
fn casts_to_float(node: &tract_onnx::pb::NodeProto) -> bool {
    node.attribute.iter().any(|a| a.name == "to" && a.i == DataType::Float as i64)
}

/// Removes every `Add` of an exactly-zero-at-mask-1 attention-mask term. Returns how many
/// were removed (0: graph unchanged). The `attention_mask` input stays declared (still fed).
pub fn drop_zero_mask_adds(graph: &mut GraphProto) -> usize {
    if !graph.input.iter().any(|i| i.name == ATTENTION_MASK) {
        return 0;
    }
    let inits: HashMap<&str, &TensorProto> = graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    // Value of each branch tensor at mask = 1 (graph order is topological in a valid ONNX file).
    let mut branch: HashMap<String, f32> = HashMap::new();
    branch.insert(ATTENTION_MASK.to_string(), 1.0);
    // (node index, index of its non-branch input) of the adds to remove.
    let mut removable: Vec<(usize, usize)> = Vec::new();
    for (ni, node) in graph.node.iter().enumerate() {
        let in_branch: Vec<bool> = node.input.iter().map(|i| branch.contains_key(i)).collect();
        if !in_branch.iter().any(|&b| b) {
            continue;
        }
        let others_are_inits =
            node.input.iter().zip(&in_branch).all(|(i, &b)| b || i.is_empty() || inits.contains_key(i.as_str()));
        if !others_are_inits {
            // A consumer of the branch: removable when it adds an exact zero.
            if node.op_type == "Add" && node.input.len() == 2 && node.output.len() == 1 {
                // Exactly one operand is in the branch (both would make this a branch node).
                let bi = usize::from(!in_branch[0]);
                if branch.get(&node.input[bi]).is_some_and(|v| *v == 0.0) {
                    removable.push((ni, 1 - bi));
                }
            }
            continue;
        }
        // A branch node: evaluate it at mask = 1, or give up on the whole pass.
        let arg = |k: usize| -> Option<f32> {
            let name = node.input.get(k)?;
            branch.get(name).copied().or_else(|| inits.get(name.as_str()).and_then(|t| scalar_f32(t)))
        };
        let value = match node.op_type.as_str() {
            // Exact for a cast to float, and for 0 and 1 whatever the target type; a cast of
            // another value to an integer or bool type would change it: give up.
            "Cast" => arg(0).filter(|&v| casts_to_float(node) || v == 0.0 || v == 1.0),
            "Unsqueeze" | "Reshape" | "Identity" | "Squeeze" => node.input.first().and_then(|i| branch.get(i).copied()),
            "Neg" => arg(0).map(|a| -a),
            "Mul" => arg(0).zip(arg(1)).map(|(a, b)| a * b),
            "Add" => arg(0).zip(arg(1)).map(|(a, b)| a + b),
            "Sub" => arg(0).zip(arg(1)).map(|(a, b)| a - b),
            "Div" => arg(0).zip(arg(1)).map(|(a, b)| a / b),
            _ => None,
        };
        let Some(value) = value else { return 0 };
        if node.output.len() != 1 {
            return 0;
        }
        branch.insert(node.output[0].clone(), value);
    }
    // Rewire the users of each removed add's output to its non-branch operand, following
    // chains (an add of a removed add's output is removed too: `scores + m + m`).
    let mut rename: HashMap<String, String> = HashMap::new();
    for &(ni, keep) in &removable {
        let n = &graph.node[ni];
        let mut to = n.input[keep].clone();
        while let Some(next) = rename.get(&to) {
            to = next.clone();
        }
        rename.insert(n.output[0].clone(), to);
    }
    // A graph output computed by a removed add (or in the branch) would lose its name: not
    // expected in a classifier, so not handled.
    if removable.is_empty() || graph.output.iter().any(|o| branch.contains_key(&o.name) || rename.contains_key(&o.name))
    {
        return 0;
    }
    let removed: std::collections::HashSet<usize> = removable.iter().map(|&(ni, _)| ni).collect();
    let nodes = std::mem::take(&mut graph.node);
    graph.node = nodes
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !removed.contains(i))
        .map(|(_, mut n)| {
            for i in &mut n.input {
                if let Some(to) = rename.get(i) {
                    *i = to.clone();
                }
            }
            n
        })
        .collect();
    removable.len()
}

#[cfg(test)]
mod tests {
    use tract_onnx::pb::{NodeProto, ValueInfoProto};

    use super::*;

    fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            name: output.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    fn scalar(name: &str, v: f32) -> TensorProto {
        TensorProto {
            name: name.into(),
            data_type: DataType::Float as i32,
            raw_data: v.to_le_bytes().to_vec(),
            ..Default::default()
        }
    }

    fn value(name: &str) -> ValueInfoProto {
        ValueInfoProto { name: name.into(), ..Default::default() }
    }

    /// Our exporter's mask branch feeding two layers' scores, with `neg` as the additive
    /// constant (`MASK_NEG` makes the term exactly 0 at mask = 1).
    fn graph(neg: f32) -> GraphProto {
        GraphProto {
            input: vec![value("input_ids"), value(ATTENTION_MASK)],
            output: vec![value("logits")],
            initializer: vec![
                scalar("scale", -neg),
                scalar("neg", neg),
                scalar("w", 2.0),
                TensorProto {
                    name: "axes".into(),
                    data_type: DataType::Int64 as i32,
                    dims: vec![2],
                    raw_data: [1i64, 2].iter().flat_map(|v| v.to_le_bytes()).collect(),
                    ..Default::default()
                },
            ],
            node: vec![
                node("Cast", &[ATTENTION_MASK], "m.f32"),
                node("Mul", &["m.f32", "scale"], "m.scaled"),
                node("Add", &["m.scaled", "neg"], "m.additive"),
                node("Unsqueeze", &["m.additive", "axes"], "m.ext"),
                node("MatMul", &["input_ids", "w"], "s0"),
                node("Add", &["s0", "m.ext"], "s0.masked"),
                node("Softmax", &["s0.masked"], "p0"),
                node("Add", &["m.ext", "p0"], "s1.masked"),
                node("Softmax", &["s1.masked"], "logits"),
            ],
            ..Default::default()
        }
    }

    /// The pass removes nothing from `g` and leaves it as it was.
    #[track_caller]
    fn assert_left_alone(mut g: GraphProto) {
        let before = g.clone();
        assert_eq!(drop_zero_mask_adds(&mut g), 0);
        assert_eq!(g, before);
    }

    #[test]
    fn exact_zero_terms_are_removed_and_users_rewired() {
        let mut g = graph(-10_000.0);
        assert_eq!(drop_zero_mask_adds(&mut g), 2);
        let ops: Vec<&str> = g.node.iter().map(|n| n.name.as_str()).collect();
        assert!(!ops.contains(&"s0.masked") && !ops.contains(&"s1.masked"), "{ops:?}");
        let softmax: Vec<&[String]> = g.node.iter().filter(|n| n.op_type == "Softmax").map(|n| &n.input[..]).collect();
        assert_eq!(softmax, [&["s0".to_string()][..], &["p0".to_string()][..]]);
        // The input stays declared (the engine still feeds it).
        assert!(g.input.iter().any(|i| i.name == ATTENTION_MASK));
    }

    #[test]
    fn chained_zero_adds_rewire_to_the_first_operand() {
        let mut g = graph(-10_000.0);
        // s0.masked2 = s0.masked + m.ext, then the softmax reads s0.masked2.
        g.node.insert(6, node("Add", &["s0.masked", "m.ext"], "s0.masked2"));
        g.node[7].input[0] = "s0.masked2".into();
        assert_eq!(drop_zero_mask_adds(&mut g), 3);
        let softmax: Vec<&[String]> = g.node.iter().filter(|n| n.op_type == "Softmax").map(|n| &n.input[..]).collect();
        assert_eq!(softmax, [&["s0".to_string()][..], &["p0".to_string()][..]]);
    }

    #[test]
    fn a_cast_that_would_change_the_value_gives_up() {
        // 0.5 cast to an integer type is not 0.5: the branch cannot be evaluated in f32.
        let mut g = graph(-10_000.0);
        g.initializer[0] = scalar("scale", 0.5);
        g.node.insert(2, node("Cast", &["m.scaled"], "m.scaled_int"));
        g.node[2].attribute.push(tract_onnx::pb::AttributeProto {
            name: "to".into(),
            i: DataType::Int64 as i64,
            ..Default::default()
        });
        g.node[3].input[0] = "m.scaled_int".into();
        assert_left_alone(g);
    }

    #[test]
    fn a_term_that_is_not_exactly_zero_stays() {
        // 1 * 10000 + 0.5 is not 0: the adds change the scores and must stay.
        let mut g = graph(-10_000.0);
        g.initializer[1] = scalar("neg", 0.5);
        assert_left_alone(g);
    }

    #[test]
    fn unknown_branch_ops_or_missing_mask_leave_the_graph_alone() {
        let mut g = graph(-10_000.0);
        g.node[2].op_type = "Exp".into();
        assert_left_alone(g);

        let mut g = graph(-10_000.0);
        g.input.retain(|i| i.name != ATTENTION_MASK);
        assert_left_alone(g);

        // A graph output computed by a removable add is not handled: untouched.
        let mut g = graph(-10_000.0);
        g.output.push(value("s0.masked"));
        assert_left_alone(g);
    }

    #[test]
    fn non_scalar_constants_in_the_branch_give_up() {
        let mut g = graph(-10_000.0);
        g.initializer[0].raw_data.extend_from_slice(&1f32.to_le_bytes());
        g.initializer[0].dims = vec![2];
        assert_eq!(drop_zero_mask_adds(&mut g), 0);
    }
}
