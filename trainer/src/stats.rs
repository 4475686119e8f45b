//! Small numeric summaries shared by the trainer's reports.

/// Median of `v` ([`ckd_core::bootstrap::median`]: unsorted input, the mean of the middle two
/// for an even count), 0 when `v` is empty (report fields are numbers, never NaN).
pub(crate) fn median(v: impl AsRef<[f64]>) -> f64 {
    let v = v.as_ref();
    if v.is_empty() {
        return 0.0;
    }
    ckd_core::bootstrap::median(v)
}

/// Kendall's tau-b rank correlation of `a` and `b` (equal lengths), which corrects for ties:
/// `(concordant - discordant) / sqrt((n0 - ties_a) (n0 - ties_b))`, `n0 = n (n - 1) / 2`.
/// `None` when fewer than two pairs or when either side is constant (undefined).
pub(crate) fn kendall_tau_b(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = a.len().min(b.len());
    let (mut concordant, mut discordant, mut ties_a, mut ties_b) = (0i64, 0i64, 0i64, 0i64);
    for i in 0..n {
        for j in i + 1..n {
            let (da, db) = (a[i] - a[j], b[i] - b[j]);
            match (da == 0.0, db == 0.0) {
                (true, true) => {
                    ties_a += 1;
                    ties_b += 1;
                }
                (true, false) => ties_a += 1,
                (false, true) => ties_b += 1,
                (false, false) if (da > 0.0) == (db > 0.0) => concordant += 1,
                (false, false) => discordant += 1,
            }
        }
    }
    let n0 = (n as i64) * (n as i64 - 1) / 2;
    let denom = (((n0 - ties_a) * (n0 - ties_b)) as f64).sqrt();
    (n >= 2 && denom > 0.0).then(|| (concordant - discordant) as f64 / denom)
}

#[cfg(test)]
mod tests {
    use super::{kendall_tau_b, median};

    /// Hand-computed: [1, 2, 3, 4] vs [1, 3, 2, 4]: 5 concordant, 1 discordant of 6 pairs,
    /// 4 / 6; with ties, [1, 1, 2, 3] vs [1, 2, 2, 3]: 4 concordant, 0 discordant, one pair
    /// tied in each, 4 / sqrt(5 * 5) = 0.8.
    #[test]
    fn kendall_tau_b_hand_computed() {
        let tau = kendall_tau_b(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]).unwrap();
        assert!((tau - 4.0 / 6.0).abs() < 1e-12);
        let tau = kendall_tau_b(&[1.0, 1.0, 2.0, 3.0], &[1.0, 2.0, 2.0, 3.0]).unwrap();
        assert!((tau - 0.8).abs() < 1e-12);
        assert_eq!(kendall_tau_b(&[3.0, 2.0, 1.0], &[1.0, 2.0, 3.0]), Some(-1.0));
        assert_eq!(kendall_tau_b(&[1.0, 1.0], &[1.0, 2.0]), None, "a constant side");
        assert_eq!(kendall_tau_b(&[1.0], &[1.0]), None);
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median([3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[] as &[f64]), 0.0);
    }
}
