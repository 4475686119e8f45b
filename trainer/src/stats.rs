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

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median([3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[] as &[f64]), 0.0);
    }
}
