//! ROC math on `(score, target)` pairs: the curve's points, the trapezoidal area under a curve,
//! and the thinning of a curve to a resolution so stored curves stay small.

/// Points `(FPR, TPR)` of the ROC curve of `(score, target)` pairs: `(0, 0)`, then one point per
/// distinct score taken as threshold in decreasing order (tied scores move diagonally at once),
/// ending at `(1, 1)`. `None` when the targets are all 0 or all 1. Scores must not be NaN and
/// targets must be 0 or 1 (the caller validates; NaN sorts as a tie).
pub fn roc_points(scores: &[f32], targets: &[u8]) -> Option<Vec<(f64, f64)>> {
    let mut pairs: Vec<(f32, u8)> = scores.iter().copied().zip(targets.iter().copied()).collect();
    let n_pos = pairs.iter().filter(|p| p.1 == 1).count() as u64;
    let n_neg = pairs.len() as u64 - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    pairs.sort_unstable_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
    let mut out = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut rest = &pairs[..];
    while let Some(&(v, _)) = rest.first() {
        let len = rest.iter().position(|p| p.0 != v).unwrap_or(rest.len());
        let (group, tail) = rest.split_at(len);
        tp += group.iter().filter(|p| p.1 == 1).count() as u64;
        fp += group.iter().filter(|p| p.1 != 1).count() as u64;
        out.push((fp as f64 / n_neg as f64, tp as f64 / n_pos as f64));
        rest = tail;
    }
    Some(out)
}

/// Trapezoidal area under a curve of `(x, y)` points with non-decreasing `x`.
pub fn trapezoid_area(points: &[(f64, f64)]) -> f64 {
    points.windows(2).map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0).sum()
}

/// Keeps the first and last points and every point at least `resolution` away (in either
/// coordinate) from the previously kept one.
pub fn thin_curve(points: &[(f64, f64)], resolution: f64) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    for (i, &p) in points.iter().enumerate() {
        let keep = match out.last() {
            None => true,
            Some(&(x, y)) => i + 1 == points.len() || (p.0 - x).abs() >= resolution || (p.1 - y).abs() >= resolution,
        };
        if keep {
            out.push(p);
        }
    }
    out
}
