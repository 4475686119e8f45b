//! `forest.svg`: every setting's paired macro-AUC difference against no distillation, one row
//! per setting and label fraction (grouped by fraction, in grid order), the point estimate with
//! its 95% interval, and a line at 0. Drawn with plotters' SVG backend (no fonts read).

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::pct;
use super::summary::BenchJson;

const FONT: &str = "sans-serif";
const ROW: u32 = 22;
const LABEL_W: u32 = 330;

/// The SVG document.
pub fn render(b: &BenchJson) -> Result<String, String> {
    let rows: Vec<(String, f64, f64, f64)> = b
        .rows
        .iter()
        .filter_map(|r| {
            let d = r.vs_none?;
            Some((format!("{} @ {}%", r.setting, pct(r.label_fraction)), d.estimate, d.lo, d.hi))
        })
        .collect();
    let n = rows.len().max(1);
    let lo = rows.iter().map(|r| r.2).fold(0.0f64, f64::min);
    let hi = rows.iter().map(|r| r.3).fold(0.0f64, f64::max);
    let pad = ((hi - lo) * 0.08).max(0.005);
    let (x0, x1) = (lo - pad, hi + pad);
    let height = ROW * n as u32 + 110;
    let width = 1000;
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (width, height)).into_drawing_area();
        let draw = || -> Result<(), Box<dyn std::error::Error>> {
            root.fill(&WHITE)?;
            let (labels, plot) = root.split_horizontally(LABEL_W);
            let mut chart = ChartBuilder::on(&plot)
                .caption("Macro-AUC difference vs no distillation (paired 95% interval)", (FONT, 18))
                .margin(12)
                .x_label_area_size(40)
                .build_cartesian_2d(x0..x1, 0f64..n as f64)?;
            chart
                .configure_mesh()
                .disable_y_mesh()
                .disable_y_axis()
                .x_desc("test macro-AUC difference")
                .label_style((FONT, 13))
                .draw()?;
            chart.draw_series(LineSeries::new([(0.0, 0.0), (0.0, n as f64)], BLACK.stroke_width(1)))?;
            let y = |i: usize| n as f64 - i as f64 - 0.5;
            for (i, (_, e, l, h)) in rows.iter().enumerate() {
                let color = if *l > 0.0 {
                    RGBColor(44, 160, 44)
                } else if *h < 0.0 {
                    RGBColor(214, 39, 40)
                } else {
                    RGBColor(31, 119, 180)
                };
                chart.draw_series(LineSeries::new([(*l, y(i)), (*h, y(i))], color.stroke_width(2)))?;
                chart.draw_series([Circle::new((*e, y(i)), 4, color.filled())])?;
            }
            // Row labels, aligned with the rows (the chart's caption and margins offset them).
            let (_, ph) = plot.dim_in_pixel();
            let top = 12 + 30; // margin + caption band
            let body = ph as i32 - top - 12 - 40;
            let style = TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
            for (i, (name, ..)) in rows.iter().enumerate() {
                let cy = top + ((i as f64 + 0.5) * body as f64 / n as f64) as i32;
                labels.draw(&Text::new(name.clone(), (LABEL_W as i32 - 8, cy), style.clone()))?;
            }
            root.present()?;
            Ok(())
        };
        draw().map_err(|e| format!("forest plot: {e}"))?;
    }
    Ok(buf)
}
