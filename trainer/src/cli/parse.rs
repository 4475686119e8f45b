//! Parse-time checks of numeric arguments (clap `value_parser`s): a value outside its range is
//! a usage error (exit 2) naming the flag (clap adds it) and the allowed range, before any work.

/// `--max-len`: at least 3 tokens ([CLS], one token of the text, [SEP]).
pub fn max_len(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if n < MIN_MAX_LEN {
        return Err(format!("must be at least {MIN_MAX_LEN} ([CLS], one token of the text, [SEP])"));
    }
    Ok(n)
}

const MIN_MAX_LEN: usize = 3;

/// `--vocab-size` of a WordPiece vocabulary trained from scratch: at least 32 (the 5 special
/// tokens and the texts' characters are always kept; a smaller request could not be honoured).
pub fn vocab_size(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if n < MIN_VOCAB {
        return Err(format!(
            "must be at least {MIN_VOCAB} (5 special tokens and the texts' characters are always kept)"
        ));
    }
    Ok(n)
}

const MIN_VOCAB: usize = 32;

/// `--label-fraction`: in (0, 1].
pub fn fraction(s: &str) -> Result<f64, String> {
    let f: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if !(f > 0.0 && f <= 1.0) {
        return Err("must be in (0, 1]".into());
    }
    Ok(f)
}

/// A learning rate or rate multiplier: finite and > 0.
pub fn positive(s: &str) -> Result<f64, String> {
    let x: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if !(x.is_finite() && x > 0.0) {
        return Err("must be a finite number > 0".into());
    }
    Ok(x)
}

/// A temperature: finite and > 0.
pub fn positive_f32(s: &str) -> Result<f32, String> {
    let x: f32 = s.parse().map_err(|e| format!("{e}"))?;
    if !(x.is_finite() && x > 0.0) {
        return Err("must be a finite number > 0".into());
    }
    Ok(x)
}

/// A loss weight: finite and >= 0.
pub fn weight(s: &str) -> Result<f32, String> {
    let x: f32 = s.parse().map_err(|e| format!("{e}"))?;
    if !(x.is_finite() && x >= 0.0) {
        return Err("must be a finite number >= 0".into());
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked() {
        assert!(max_len("0").is_err() && max_len("2").is_err() && max_len("x").is_err());
        assert_eq!(max_len("3"), Ok(3));
        assert!(vocab_size("1").is_err());
        assert_eq!(vocab_size("300"), Ok(300));
        for bad in ["0", "-0.1", "2", "NaN", "inf"] {
            assert!(fraction(bad).is_err(), "{bad}");
        }
        assert_eq!(fraction("1"), Ok(1.0));
        for bad in ["0", "-1e-3", "NaN", "inf", "-inf"] {
            assert!(positive(bad).is_err() && positive_f32(bad).is_err(), "{bad}");
        }
        assert_eq!(positive("2e-5"), Ok(2e-5));
        assert!(weight("-0.5").is_err() && weight("NaN").is_err());
        assert_eq!(weight("0"), Ok(0.0));
    }
}
