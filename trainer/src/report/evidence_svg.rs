//! A visit's text with its concepts shaded by evidence, one panel per kind of evidence (the
//! teacher's attention, the student's, occlusion), as a self-contained SVG.
//!
//! Layout: monospace text at [`FONT_PX`], wrapped at spaces to [`LINE_CHARS`] characters; each
//! concept of the visit gets a rectangle behind its characters (one per line it spans) whose
//! opacity is its weight over the panel's largest weight. Weights at or below 0 are not drawn.

use std::fmt::Write as _;

use ckd_core::visit::Rendered;

use super::html::escape;

/// Font size of the text, in px.
pub const FONT_PX: f64 = 12.0;
/// Characters per wrapped line.
pub const LINE_CHARS: usize = 110;
/// Advance of one monospace character at [`FONT_PX`] (0.6 em, as common monospace fonts).
const CHAR_PX: f64 = FONT_PX * 0.6;
const LINE_PX: f64 = FONT_PX * 1.5;
const MARGIN: f64 = 10.0;
/// One colour per panel (Tableau 10: blue, orange, green, red).
const COLOURS: [&str; 4] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"];

/// One panel: a title and one weight per concept of the visit (in `Rendered::concepts` order).
#[derive(Debug, Clone, Copy)]
pub struct EvidencePanel<'a> {
    /// Title shown above the text.
    pub title: &'a str,
    /// Weight of each concept.
    pub weights: &'a [f32],
}

/// The wrapped lines of `text` as (first char, end char) ranges: breaks after a space so that
/// no line is longer than `width` characters (a longer word is cut).
fn wrap(chars: &[char], width: usize) -> Vec<(usize, usize)> {
    let mut lines = Vec::new();
    let mut start = 0;
    while start < chars.len() {
        let hard = (start + width).min(chars.len());
        let end = if hard == chars.len() {
            hard
        } else {
            match chars[start..hard].iter().rposition(|&c| c == ' ') {
                Some(p) if p > 0 => start + p + 1,
                _ => hard,
            }
        };
        lines.push((start, end));
        start = end;
    }
    lines
}

/// The SVG document (see the module docs). Panels whose weights do not match the concepts in
/// number draw no shading.
pub fn evidence_svg(rendered: &Rendered, panels: &[EvidencePanel<'_>]) -> String {
    let chars: Vec<char> = rendered.text.chars().collect();
    // Byte offset -> char index, for the concept spans.
    let mut char_at = vec![0usize; rendered.text.len() + 1];
    for (ci, (b, c)) in rendered.text.char_indices().enumerate() {
        for slot in &mut char_at[b..b + c.len_utf8()] {
            *slot = ci;
        }
    }
    char_at[rendered.text.len()] = chars.len();
    let lines = wrap(&chars, LINE_CHARS);
    let panel_h = LINE_PX * (lines.len() as f64 + 1.5);
    let width = 2.0 * MARGIN + CHAR_PX * LINE_CHARS as f64;
    let height = 2.0 * MARGIN + panel_h * panels.len() as f64;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="monospace" font-size="{FONT_PX}">"#
    );
    svg.push_str(r##"<rect width="100%" height="100%" fill="#fff"/>"##);
    for (pi, panel) in panels.iter().enumerate() {
        let top = MARGIN + pi as f64 * panel_h;
        let colour = COLOURS[pi % COLOURS.len()];
        let _ = write!(
            svg,
            r#"<text x="{MARGIN}" y="{:.1}" font-weight="bold" font-family="sans-serif">{}</text>"#,
            top + FONT_PX,
            escape(panel.title)
        );
        let max = panel.weights.iter().copied().fold(0f32, f32::max);
        let shade = panel.weights.len() == rendered.concepts.len() && max > 0.0;
        for (li, &(ls, le)) in lines.iter().enumerate() {
            let y = top + LINE_PX * (li as f64 + 1.5);
            if shade {
                for (c, &w) in rendered.concepts.iter().zip(panel.weights) {
                    let (cs, ce) = (char_at[c.start.min(rendered.text.len())], char_at[c.end.min(rendered.text.len())]);
                    let (s, e) = (cs.max(ls), ce.min(le));
                    if w > 0.0 && s < e {
                        let _ = write!(
                            svg,
                            r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}" fill-opacity="{:.3}"/>"#,
                            MARGIN + CHAR_PX * (s - ls) as f64,
                            y - FONT_PX,
                            CHAR_PX * (e - s) as f64,
                            LINE_PX * 0.95,
                            w / max
                        );
                    }
                }
            }
            let line: String = chars[ls..le].iter().collect();
            let _ = write!(svg, r#"<text x="{MARGIN}" y="{y:.1}" xml:space="preserve">{}</text>"#, escape(&line));
        }
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use ckd_core::visit::{render, Coded, Visit};

    #[test]
    fn wraps_at_spaces_and_cuts_long_words() {
        let c: Vec<char> = "aaa bbb ccc".chars().collect();
        assert_eq!(wrap(&c, 8), [(0, 8), (8, 11)]);
        let c: Vec<char> = "abcdefghij".chars().collect();
        assert_eq!(wrap(&c, 4), [(0, 4), (4, 8), (8, 10)]);
        assert!(wrap(&[], 4).is_empty());
    }

    #[test]
    fn shades_each_weighted_concept_once_per_line() {
        let visit = Visit {
            diagnoses: vec![Coded { code: "4280".into(), title: "Heart failure <acute & chronic>".into() }],
            medications: vec!["Furosemide".into(), "Insulin".into()],
            procedures: vec![],
        };
        let r = render(&visit, &[]);
        assert_eq!(r.concepts.len(), 3);
        let svg = evidence_svg(
            &r,
            &[
                EvidencePanel { title: "student & teacher", weights: &[0.5, 0.25, 0.0] },
                EvidencePanel { title: "wrong length", weights: &[1.0] },
            ],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("Heart failure &lt;acute &amp; chronic&gt;") && svg.contains("student &amp; teacher"));
        // The text is longer than one line: concepts fall on the first (diagnosis) and second
        // line (Furosemide); the zero weight and the mismatched panel draw nothing.
        assert!(r.text.chars().count() > LINE_CHARS);
        assert_eq!(svg.matches("<rect x=").count(), 2, "{svg}");
        assert!(svg.contains(r#"fill-opacity="1.000""#) && svg.contains(r#"fill-opacity="0.500""#));
    }
}
