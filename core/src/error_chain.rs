//! An error and its causes as one line, each cause once.
//!
//! Errors in this workspace often print their source inside their own message
//! (`#[error("{path}: {source}")]`) and also return it from `source()`; printing the chain
//! naively (anyhow's `{:#}`) then repeats the same text two or three times. [`one_line`] is
//! what the command-line tools print instead.

use alloc::string::{String, ToString};
use core::error::Error;

/// `e` and its `source()` chain joined by `": "`, leaving out each cause whose text its
/// predecessor's text already contains (a cause that was already printed).
pub fn one_line(e: &(dyn Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut prev = out.clone();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !prev.contains(text.as_str()) {
            out.push_str(": ");
            out.push_str(&text);
        }
        prev = text;
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::boxed::Box;
    use alloc::format;

    /// An error with a message and an optional cause; `prints_source` makes its message end
    /// with the cause's text, as `#[error("{msg}: {source}")]` does.
    #[derive(Debug)]
    struct E {
        msg: &'static str,
        source: Option<Box<E>>,
        prints_source: bool,
    }

    impl core::fmt::Display for E {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            match (&self.source, self.prints_source) {
                (Some(s), true) => write!(f, "{}: {s}", self.msg),
                _ => f.write_str(self.msg),
            }
        }
    }

    impl Error for E {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.source.as_deref().map(|e| e as &(dyn Error + 'static))
        }
    }

    fn e(msg: &'static str, source: Option<E>, prints_source: bool) -> E {
        E { msg, source: source.map(Box::new), prints_source }
    }

    #[test]
    fn each_cause_once() {
        // context -> error that prints its source -> error that prints its source -> leaf.
        let leaf = e("No space left on device (os error 28)", None, false);
        let io = e("runs/x/samples.bin", Some(leaf), true);
        let ctx = e("writing the outputs", Some(io), false);
        assert_eq!(one_line(&ctx), "writing the outputs: runs/x/samples.bin: No space left on device (os error 28)");
        // The naive chain repeats the leaf.
        let naive = format!("{ctx}: {}: {}", ctx.source().unwrap(), ctx.source().unwrap().source().unwrap());
        assert_eq!(naive.matches("No space").count(), 2);
    }

    #[test]
    fn causes_that_do_not_print_their_source_are_all_kept() {
        let c = e("c", None, false);
        let b = e("b", Some(c), false);
        let a = e("a", Some(b), false);
        assert_eq!(one_line(&a), "a: b: c");
        assert_eq!(one_line(&e("alone", None, false)), "alone");
    }
}
