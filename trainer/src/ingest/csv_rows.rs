//! CSV rows read one physical line at a time, with exact line numbers.
//!
//! Contract: a row is one line (terminated by `\n` or `\r\n`; the last line may lack it), split
//! into fields by RFC 4180 rules (`,` separates, `"…"` quotes, `""` inside quotes is a quote).
//! A line break inside a quoted field is not allowed: MIMIC-III's tables have none, and
//! allowing it lets one stray `"` swallow every row up to the next `"` (the `csv` crate read
//! 161 rows of PRESCRIPTIONS as one). A line whose quote is still open at its end is reported
//! as [`Line::UnclosedQuote`] and the next line is read afresh, so at most that one row is
//! lost. Line numbers count every line of the file (the header is line 1) whatever the
//! terminator; a UTF-8 byte-order mark at the start of the file is skipped; empty lines carry
//! no row and are skipped.

use std::io::{self, BufRead};

/// The fields of one row: `bytes` holds them back to back, field `i` ends at `ends[i]`.
pub(crate) struct Fields<'a> {
    bytes: &'a [u8],
    ends: &'a [usize],
}

impl<'a> Fields<'a> {
    /// Number of fields.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Field `i` (unquoted), or `None` past the last field.
    pub(crate) fn get(&self, i: usize) -> Option<&'a [u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.bytes[start..end])
    }
}

/// One non-empty line of the file.
pub(crate) enum Line<'a> {
    /// A complete row.
    Row(Fields<'a>),
    /// A quoted field opened on this line is not closed on it.
    UnclosedQuote,
}

/// Reads rows from `input` (see the module contract).
pub(crate) struct CsvRows<R> {
    input: R,
    core: csv_core::Reader,
    /// 1-based number of the line last read (0 before the first).
    line: u64,
    raw: Vec<u8>,
    out: Vec<u8>,
    ends: Vec<usize>,
}

const BOM: &[u8] = b"\xef\xbb\xbf";

impl<R: BufRead> CsvRows<R> {
    /// A reader at the start of `input`.
    pub(crate) fn new(input: R) -> Self {
        let mut rows = CsvRows {
            input,
            core: csv_core::ReaderBuilder::new().terminator(csv_core::Terminator::Any(b'\n')).build(),
            line: 0,
            raw: Vec::with_capacity(1024),
            out: vec![0; 1024],
            ends: vec![0; 32],
        };
        rows.restart();
        rows
    }

    /// Puts the parser back at the start of a row. csv-core strips a byte-order mark from the
    /// first input it sees; an empty line fed first makes sure it never does so mid-file (the
    /// file's own mark is skipped in [`Self::next_line`]).
    fn restart(&mut self) {
        self.core.reset();
        let _ = self.core.read_record(b"\n", &mut self.out, &mut self.ends);
    }

    /// The next non-empty line with its 1-based number, or `None` at the end of the input.
    pub(crate) fn next_line(&mut self) -> io::Result<Option<(u64, Line<'_>)>> {
        let (start, end) = loop {
            self.raw.clear();
            if self.input.read_until(b'\n', &mut self.raw)? == 0 {
                return Ok(None);
            }
            self.line += 1;
            let start = if self.line == 1 && self.raw.starts_with(BOM) { BOM.len() } else { 0 };
            let mut end = self.raw.len();
            for t in [b'\n', b'\r'] {
                if end > start && self.raw[end - 1] == t {
                    end -= 1;
                }
            }
            if end > start {
                break (start, end);
            }
        };
        // Bytes `start..end` of `raw` are the row; one `\n` fed after them ends it.
        let (mut pos, mut nout, mut nend) = (start, 0usize, 0usize);
        let mut fed_end = false;
        loop {
            let input: &[u8] = if pos < end {
                &self.raw[pos..end]
            } else if !fed_end {
                b"\n"
            } else {
                // The terminator went into an open quoted field.
                self.restart();
                return Ok(Some((self.line, Line::UnclosedQuote)));
            };
            let (res, nin, o, e) = self.core.read_record(input, &mut self.out[nout..], &mut self.ends[nend..]);
            if pos < end {
                pos += nin;
            } else if nin > 0 {
                fed_end = true;
            }
            nout += o;
            nend += e;
            match res {
                csv_core::ReadRecordResult::InputEmpty => {}
                csv_core::ReadRecordResult::OutputFull => self.out.resize(self.out.len() * 2, 0),
                csv_core::ReadRecordResult::OutputEndsFull => self.ends.resize(self.ends.len() * 2, 0),
                csv_core::ReadRecordResult::Record | csv_core::ReadRecordResult::End => break,
            }
        }
        Ok(Some((self.line, Line::Row(Fields { bytes: &self.out[..nout], ends: &self.ends[..nend] }))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(line, fields)` of every line (`None` for an unclosed quote).
    fn rows(text: &[u8]) -> Vec<(u64, Option<Vec<String>>)> {
        let mut r = CsvRows::new(text);
        let mut v = Vec::new();
        while let Some((n, l)) = r.next_line().unwrap() {
            v.push((
                n,
                match l {
                    Line::Row(f) => {
                        Some((0..f.len()).map(|i| String::from_utf8_lossy(f.get(i).unwrap()).into_owned()).collect())
                    }
                    Line::UnclosedQuote => None,
                },
            ));
        }
        v
    }

    fn row(f: &[&str]) -> Option<Vec<String>> {
        Some(f.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn crlf_and_lf_give_the_same_lines() {
        let lf = rows(b"a,b\n1,\"x, y\"\n\n2,\"say \"\"hi\"\"\"\n3,z");
        let crlf = rows(b"a,b\r\n1,\"x, y\"\r\n\r\n2,\"say \"\"hi\"\"\"\r\n3,z\r\n");
        let want = vec![
            (1, row(&["a", "b"])),
            (2, row(&["1", "x, y"])),
            (4, row(&["2", "say \"hi\""])),
            (5, row(&["3", "z"])),
        ];
        assert_eq!(lf, want);
        assert_eq!(crlf, want);
    }

    #[test]
    fn unclosed_quote_loses_its_line_only() {
        let got = rows(b"a,b,c\r\n1,\"open,x\r\n2,y,z\r\n3,\"q\",w\r\n4,\"\"\"\r\n5,u,v");
        assert_eq!(
            got,
            vec![
                (1, row(&["a", "b", "c"])),
                (2, None),
                (3, row(&["2", "y", "z"])),
                (4, row(&["3", "q", "w"])),
                (5, None),
                (6, row(&["5", "u", "v"])),
            ]
        );
    }

    #[test]
    fn byte_order_mark_skipped_at_file_start_only() {
        let got = rows(b"\xef\xbb\xbfa,b\n1,\"open\n\xef\xbb\xbf2,x\n");
        assert_eq!(got[0], (1, row(&["a", "b"])));
        assert_eq!(got[1], (2, None));
        assert_eq!(got[2], (3, row(&["\u{feff}2", "x"])));
    }

    #[test]
    fn long_rows_and_many_fields() {
        let long = "x".repeat(5000);
        let many = vec!["f"; 100].join(",");
        let text = format!("{long},{many}\n");
        let got = rows(text.as_bytes());
        let f = got[0].1.as_ref().unwrap();
        assert_eq!((f.len(), f[0].len()), (101, 5000));
    }
}
