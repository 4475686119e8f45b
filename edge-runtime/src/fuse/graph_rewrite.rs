//! Pattern rewrites of an ONNX graph before tract parses it (the fused ops of [`crate::ops::attention`]
//! and [`crate::ops::qlinear`]): an index of who produces and uses each value, and the splice that
//! replaces each matched chain by one node.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb::{tensor_proto::DataType, GraphProto, NodeProto};

/// Replaces every chain `matcher` finds by its fused node. `matcher(index, i)` looks at node
/// `i` (each node is offered once, in graph order); a chain that shares a node with one matched
/// earlier is skipped. Returns how many chains were fused (0: graph unchanged). Each fused node
/// takes the position of the node it `replaces` (the chain's last), so the graph stays sorted.
pub(crate) fn rewrite(graph: &mut GraphProto, matcher: impl Fn(&Index, usize) -> Option<Fusion>) -> usize {
    let fusions = {
        let index = Index::new(graph);
        let mut claimed: HashSet<usize> = HashSet::new();
        let mut fusions = Vec::new();
        for i in 0..graph.node.len() {
            if let Some(f) = matcher(&index, i) {
                if f.removed.iter().all(|n| !claimed.contains(n)) {
                    claimed.extend(f.removed.iter().copied());
                    fusions.push(f);
                }
            }
        }
        fusions
    };
    if fusions.is_empty() {
        return 0;
    }
    let mut at: HashMap<usize, NodeProto> = HashMap::new();
    let mut removed: HashSet<usize> = HashSet::new();
    for f in &fusions {
        removed.extend(f.removed.iter().copied());
        at.insert(f.replaces, f.node.clone());
    }
    let nodes = std::mem::take(&mut graph.node);
    graph.node = nodes
        .into_iter()
        .enumerate()
        .filter_map(|(i, n)| match at.remove(&i) {
            Some(fused) => Some(fused),
            None => (!removed.contains(&i)).then_some(n),
        })
        .collect();
    fusions.len()
}

/// One matched chain: the nodes it removes (including `replaces`), the node whose position
/// and output the fused node takes over, and the fused node.
pub(crate) struct Fusion {
    pub removed: Vec<usize>,
    pub replaces: usize,
    pub node: NodeProto,
}

/// Who produces and who uses each value of a graph.
pub(crate) struct Index<'g> {
    graph: &'g GraphProto,
    producer: HashMap<&'g str, usize>,
    /// Consumer node indices of each value (a graph output counts as an extra, foreign use).
    users: HashMap<&'g str, Vec<Option<usize>>>,
}

impl<'g> Index<'g> {
    pub(crate) fn new(graph: &'g GraphProto) -> Self {
        let mut producer = HashMap::new();
        let mut users: HashMap<&str, Vec<Option<usize>>> = HashMap::new();
        for (i, n) in graph.node.iter().enumerate() {
            for o in &n.output {
                producer.insert(o.as_str(), i);
            }
            for input in n.input.iter().filter(|s| !s.is_empty()) {
                users.entry(input.as_str()).or_default().push(Some(i));
            }
        }
        for o in &graph.output {
            users.entry(o.name.as_str()).or_default().push(None);
        }
        Index { graph, producer, users }
    }

    /// The node producing `value` as its only output, if its op is `op`.
    pub(crate) fn made_by(&self, value: &str, op: &str) -> Option<usize> {
        let i = *self.producer.get(value)?;
        let n = &self.graph.node[i];
        (n.op_type == op && n.output.len() == 1).then_some(i)
    }

    /// The node producing `value` (as any of its outputs).
    pub(crate) fn producer(&self, value: &str) -> Option<usize> {
        self.producer.get(value).copied()
    }

    /// Every use of `value` (`None`: a graph output).
    pub(crate) fn users_of(&self, value: &str) -> Option<&[Option<usize>]> {
        self.users.get(value).map(Vec::as_slice)
    }

    /// The one node using `value`, if it is a two-input, one-output `op`: (that node, its other
    /// operand).
    pub(crate) fn binary_user(&self, value: &str, op: &str) -> Option<(usize, &'g str)> {
        let i = self.sole_user(value)?;
        let n = self.node(i);
        let [a, b] = n.input.as_slice() else { return None };
        if n.op_type != op || n.output.len() != 1 {
            return None;
        }
        Some((i, if a == value { b.as_str() } else { a.as_str() }))
    }

    /// The one node using `value` (used exactly once, not a graph output).
    pub(crate) fn sole_user(&self, value: &str) -> Option<usize> {
        match self.users.get(value)?.as_slice() {
            [Some(i)] => Some(*i),
            _ => None,
        }
    }

    pub(crate) fn node(&self, i: usize) -> &'g NodeProto {
        &self.graph.node[i]
    }

    pub(crate) fn init(&self, name: &str) -> Option<&'g tract_onnx::pb::TensorProto> {
        self.graph.initializer.iter().find(|t| t.name == name)
    }

    /// The values of a 1-D i64 initializer.
    pub(crate) fn ints(&self, name: &str) -> Option<Vec<i64>> {
        let t = self.init(name)?;
        if t.data_type != DataType::Int64 as i32 || t.dims.len() != 1 {
            return None;
        }
        let vals: Vec<i64> = if t.raw_data.is_empty() {
            t.int64_data.clone()
        } else {
            if t.raw_data.len() % 8 != 0 {
                return None;
            }
            t.raw_data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default())).collect()
        };
        (vals.len() as i64 == t.dims[0]).then_some(vals)
    }

    /// The value of a one-element f32 initializer.
    pub(crate) fn scalar(&self, name: &str) -> Option<f32> {
        let t = self.init(name)?;
        if t.data_type != DataType::Float as i32 || t.dims.iter().product::<i64>() != 1 {
            return None;
        }
        match (t.raw_data.as_slice(), t.float_data.as_slice()) {
            ([a, b, c, d], []) => Some(f32::from_le_bytes([*a, *b, *c, *d])),
            ([], [v]) => Some(*v),
            _ => None,
        }
    }
}
