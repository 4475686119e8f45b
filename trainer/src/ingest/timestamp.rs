//! MIMIC-III timestamps: `YYYY-MM-DD HH:MM:SS` on the proleptic Gregorian calendar (MIMIC's
//! dates are shifted into 2100-2200, so any year 0001-9999 is allowed).
//!
//! Only well-formed, existing instants pass: such strings order lexicographically exactly as
//! they order in time, which is how admissions are ordered.

/// Days in `month` (1-12) of `year` (Gregorian leap rule).
fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Checks that `s` is `YYYY-MM-DD HH:MM:SS` naming an instant that exists: year 1-9999, month
/// 1-12, a day of that month (29 February only in leap years), hour 0-23, minute and second
/// 0-59. Returns what is wrong otherwise.
pub(crate) fn check(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let layout = b.len() == 19
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b' ',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        });
    if !layout {
        return Err(format!("expected YYYY-MM-DD HH:MM:SS, found {s:?}"));
    }
    // All digits where read, by the layout check.
    let num = |from: usize, to: usize| b[from..to].iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    let (year, month, day) = (num(0, 4), num(5, 7), num(8, 10));
    let (hour, minute, second) = (num(11, 13), num(14, 16), num(17, 19));
    if year == 0 {
        return Err(format!("{s:?}: year 0000 does not exist"));
    }
    if !(1..=12).contains(&month) {
        return Err(format!("{s:?}: month {month} is not in 1-12"));
    }
    let days = days_in_month(year, month);
    if !(1..=days).contains(&day) {
        return Err(format!("{s:?}: day {day} is not in 1-{days} ({year:04}-{month:02} has {days} days)"));
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(format!("{s:?}: time of day {hour:02}:{minute:02}:{second:02} does not exist"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn real_instants_pass() {
        for s in ["2164-10-23 21:09:00", "2164-02-29 00:00:00", "2000-02-29 23:59:59", "0001-01-01 00:00:00"] {
            assert_eq!(check(s), Ok(()), "{s}");
        }
    }

    #[test]
    fn impossible_dates_and_times_fail() {
        for (s, what) in [
            ("2107-19-29 04:00:00", "month 19"),
            ("2164-02-30 04:00:00", "day 30"),
            ("2163-02-29 04:00:00", "day 29"),
            ("2100-02-29 04:00:00", "day 29"),
            ("2164-04-31 04:00:00", "day 31"),
            ("2164-01-00 04:00:00", "day 0"),
            ("0000-99-99 99:99:99", "year 0000"),
            ("2164-01-01 24:00:00", "24:00:00"),
            ("2164-01-01 23:60:00", "23:60:00"),
            ("2164-01-01 23:00:60", "23:00:60"),
            ("garbage", "expected YYYY-MM-DD HH:MM:SS"),
            ("2164-01-01T23:00:00", "expected YYYY-MM-DD HH:MM:SS"),
            ("", "expected"),
        ] {
            let e = check(s).unwrap_err();
            assert!(e.contains(what), "{s}: {e}");
        }
    }
}
