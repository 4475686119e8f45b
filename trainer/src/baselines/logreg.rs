//! Binary logistic regression with an L2 penalty, fitted by L-BFGS: scikit-learn's
//! `LogisticRegression(penalty="l2", C=C, fit_intercept=True)` objective, on sparse rows.
//!
//! Objective (the intercept `b` is not penalized, as in scikit-learn):
//!
//! ```text
//! f(w, b) = sum_i log(1 + exp(-s_i (x_i . w + b))) + ||w||^2 / (2 C),   s_i = 2 y_i - 1
//! ```
//!
//! It is strictly convex in `w` (and convex in `b`), so any optimizer that converges reaches the
//! same coefficients; the fixture test checks them against scikit-learn's to 1e-3.
//! Gradient: `X^T (sigmoid(X w + b) - y) + w / C` and `sum_i (sigmoid(.) - y_i)` for `b`.

/// A sparse row: (feature index, value) pairs, indices below the number of features.
pub type SparseRow = Vec<(u32, f32)>;

/// Fit settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogRegConfig {
    /// Inverse regularization strength (scikit-learn's `C`).
    pub c: f64,
    /// Stop when the largest gradient entry is below `tol` (scikit-learn's lbfgs `pgtol`
    /// meaning, with a tighter default than its 1e-4 so fits are converged).
    pub tol: f64,
    /// Iteration cap.
    pub max_iter: usize,
    /// L-BFGS memory (pairs kept).
    pub memory: usize,
}

impl Default for LogRegConfig {
    fn default() -> Self {
        LogRegConfig { c: 1.0, tol: 1e-6, max_iter: 500, memory: 10 }
    }
}

/// A fitted model.
#[derive(Debug, Clone, PartialEq)]
pub struct LogReg {
    /// Coefficients, one per feature.
    pub coef: Vec<f64>,
    /// Intercept.
    pub intercept: f64,
    /// Iterations run.
    pub iterations: usize,
    /// Whether the gradient tolerance was met (else `max_iter` stopped it).
    pub converged: bool,
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// `log(1 + exp(z))` without overflow.
fn softplus(z: f64) -> f64 {
    if z > 0.0 {
        z + (-z).exp().ln_1p()
    } else {
        z.exp().ln_1p()
    }
}

fn dot(row: &[(u32, f32)], w: &[f64]) -> f64 {
    row.iter().map(|&(j, v)| w[j as usize] * v as f64).sum()
}

/// Objective and gradient at `theta = [w..., b]`.
fn objective(rows: &[SparseRow], y: &[bool], c: f64, theta: &[f64], grad: &mut [f64]) -> f64 {
    let d = theta.len() - 1;
    let (w, b) = (&theta[..d], theta[d]);
    let mut f = 0.0;
    for (j, g) in grad[..d].iter_mut().enumerate() {
        *g = w[j] / c;
        f += w[j] * w[j] / (2.0 * c);
    }
    grad[d] = 0.0;
    for (row, &yi) in rows.iter().zip(y) {
        let z = dot(row, w) + b;
        // -log p(y | z) = softplus(z) - y z
        f += softplus(z) - if yi { z } else { 0.0 };
        let r = sigmoid(z) - yi as u8 as f64;
        for &(j, v) in row {
            grad[j as usize] += r * v as f64;
        }
        grad[d] += r;
    }
    f
}

fn inf_norm(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

fn vdot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Fits one binary model on `rows` (each with features below `n_features`) and targets `y`.
/// An all-0 or all-1 `y` is fine: the intercept then goes towards -/+ infinity until the
/// gradient tolerance is met.
pub fn fit(rows: &[SparseRow], y: &[bool], n_features: usize, cfg: &LogRegConfig) -> LogReg {
    let n = n_features + 1;
    let mut theta = vec![0.0; n];
    let mut grad = vec![0.0; n];
    let mut f = objective(rows, y, cfg.c, &theta, &mut grad);
    let mut s_hist: Vec<Vec<f64>> = Vec::new();
    let mut y_hist: Vec<Vec<f64>> = Vec::new();
    let mut new_theta = vec![0.0; n];
    let mut new_grad = vec![0.0; n];
    let mut iterations = 0;
    let mut converged = inf_norm(&grad) < cfg.tol;
    while !converged && iterations < cfg.max_iter {
        iterations += 1;
        // Two-loop recursion: direction = -H * grad.
        let mut q = grad.clone();
        let k = s_hist.len();
        let mut alpha = vec![0.0; k];
        for ((s_i, y_i), a_i) in s_hist.iter().zip(&y_hist).zip(alpha.iter_mut()).rev() {
            *a_i = vdot(s_i, &q) / vdot(y_i, s_i);
            for (qj, yj) in q.iter_mut().zip(y_i) {
                *qj -= *a_i * yj;
            }
        }
        let gamma = match (s_hist.last(), y_hist.last()) {
            (Some(s_l), Some(y_l)) => vdot(s_l, y_l) / vdot(y_l, y_l),
            _ => 1.0,
        };
        for qj in q.iter_mut() {
            *qj *= gamma;
        }
        for ((s_i, y_i), a_i) in s_hist.iter().zip(&y_hist).zip(&alpha) {
            let beta = vdot(y_i, &q) / vdot(y_i, s_i);
            for (qj, sj) in q.iter_mut().zip(s_i) {
                *qj += (a_i - beta) * sj;
            }
        }
        let mut dir: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = vdot(&grad, &dir);
        if slope >= 0.0 {
            // Not a descent direction (should not happen with positive curvature pairs): restart.
            s_hist.clear();
            y_hist.clear();
            dir = grad.iter().map(|v| -v).collect();
            slope = vdot(&grad, &dir);
        }
        // First iteration: a unit step along -grad can be huge; scale it to length 1.
        let mut step = if k == 0 { 1.0 / inf_norm(&grad).max(1.0) } else { 1.0 };
        // Backtracking line search (Armijo, c1 = 1e-4).
        let mut accepted = false;
        let mut new_f = f;
        for _ in 0..60 {
            for ((nt, t), d) in new_theta.iter_mut().zip(&theta).zip(&dir) {
                *nt = t + step * d;
            }
            new_f = objective(rows, y, cfg.c, &new_theta, &mut new_grad);
            if new_f <= f + 1e-4 * step * slope {
                accepted = true;
                break;
            }
            step *= 0.5;
        }
        if !accepted {
            // No decrease is representable any more: we are at the optimum to machine precision.
            converged = inf_norm(&grad) < cfg.tol.sqrt();
            break;
        }
        let s: Vec<f64> = new_theta.iter().zip(&theta).map(|(a, b)| a - b).collect();
        let yv: Vec<f64> = new_grad.iter().zip(&grad).map(|(a, b)| a - b).collect();
        if vdot(&s, &yv) > 1e-12 * vdot(&yv, &yv).max(1e-300) {
            if s_hist.len() == cfg.memory {
                s_hist.remove(0);
                y_hist.remove(0);
            }
            s_hist.push(s);
            y_hist.push(yv);
        }
        std::mem::swap(&mut theta, &mut new_theta);
        std::mem::swap(&mut grad, &mut new_grad);
        f = new_f;
        converged = inf_norm(&grad) < cfg.tol;
    }
    let intercept = theta[n_features];
    theta.truncate(n_features);
    LogReg { coef: theta, intercept, iterations, converged }
}

impl LogReg {
    /// `P(y = 1 | row)`.
    pub fn predict(&self, row: &[(u32, f32)]) -> f64 {
        sigmoid(dot(row, &self.coef) + self.intercept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric_grad(rows: &[SparseRow], y: &[bool], c: f64, theta: &[f64]) -> Vec<f64> {
        let mut g = vec![0.0; theta.len()];
        let h = 1e-6;
        (0..theta.len())
            .map(|j| {
                let mut a = theta.to_vec();
                let mut b = theta.to_vec();
                a[j] += h;
                b[j] -= h;
                (objective(rows, y, c, &a, &mut g) - objective(rows, y, c, &b, &mut g)) / (2.0 * h)
            })
            .collect()
    }

    fn toy() -> (Vec<SparseRow>, Vec<bool>) {
        let rows = vec![
            vec![(0, 1.0), (2, 0.5)],
            vec![(1, 1.0)],
            vec![(0, 0.3), (1, 0.7)],
            vec![(2, 1.0)],
            vec![(0, 1.0), (1, 1.0), (2, 1.0)],
            vec![],
        ];
        (rows, vec![true, false, true, false, true, false])
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let (rows, y) = toy();
        let theta = [0.3, -0.2, 0.1, 0.05];
        let mut g = vec![0.0; 4];
        objective(&rows, &y, 0.7, &theta, &mut g);
        for (a, b) in g.iter().zip(numeric_grad(&rows, &y, 0.7, &theta)) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn optimum_has_zero_gradient() {
        let (rows, y) = toy();
        let m = fit(&rows, &y, 3, &LogRegConfig { tol: 1e-9, ..Default::default() });
        assert!(m.converged);
        let mut theta = m.coef.clone();
        theta.push(m.intercept);
        let mut g = vec![0.0; 4];
        objective(&rows, &y, 1.0, &theta, &mut g);
        assert!(inf_norm(&g) < 1e-8, "{g:?}");
    }

    /// One feature, no penalty to speak of (C huge), data with empirical log-odds known by hand:
    /// feature 1 on 3 positives / 1 negative, feature absent on 1 positive / 3 negatives. The MLE is
    /// b = log(1/3), w = log(3) - log(1/3) = 2 log 3.
    #[test]
    fn unpenalized_fit_matches_log_odds() {
        let on = vec![(0u32, 1.0f32)];
        let rows = vec![on.clone(), on.clone(), on.clone(), on, vec![], vec![], vec![], vec![]];
        let y = [true, true, true, false, true, false, false, false];
        let m = fit(&rows, &y, 1, &LogRegConfig { c: 1e9, tol: 1e-10, ..Default::default() });
        assert!((m.intercept - (1.0f64 / 3.0).ln()).abs() < 1e-5, "{m:?}");
        assert!((m.coef[0] - 2.0 * 3f64.ln()).abs() < 1e-5, "{m:?}");
    }
}
