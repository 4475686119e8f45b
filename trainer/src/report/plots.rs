//! SVG plots of a [`ReportJson`], drawn with plotters' SVG backend (text is written as `<text>`
//! elements: no fonts are read at run time). Each model keeps one colour across all plots.

use std::error::Error;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{fmt3, PointKind, ReportError, ReportJson};

/// One rendered plot.
#[derive(Debug, Clone, PartialEq)]
pub struct Plot {
    /// File name under `plots/` (also the anchor id in the HTML, without `.svg`).
    pub file_name: &'static str,
    /// Heading shown above it in the HTML.
    pub title: &'static str,
    /// The SVG document (starts with `<svg`).
    pub svg: String,
}

type DrawResult = Result<(), Box<dyn Error>>;
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

const FONT: &str = "sans-serif";
/// plotters writes `font-size = size / 1.24`: these give about 12, 13 and 16 px.
const SMALL: u32 = 15;
const TEXT: u32 = 16;
const CAPTION: u32 = 20;
const GREY: RGBColor = RGBColor(150, 150, 150);

/// Colour-blind-friendly categorical palette (Tableau 10).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// The colour of model `name`: its index among the report's models, then among curve-only names.
fn color_of(r: &ReportJson, name: &str) -> RGBColor {
    let idx = r.models.iter().position(|m| m.name == name).unwrap_or_else(|| {
        let extra: Vec<&str> =
            r.curves.iter().map(|c| c.model.as_str()).filter(|n| !r.models.iter().any(|m| m.name == *n)).collect();
        r.models.len() + extra.iter().position(|n| *n == name).unwrap_or(0)
    });
    PALETTE[idx % PALETTE.len()]
}

#[derive(Clone, Copy)]
enum Mark {
    Bar,
    Line,
}

struct LegendItem {
    text: String,
    color: RGBColor,
    mark: Mark,
}

const LEGEND_ROW: i32 = 24;
const LEGEND_LEFT: i32 = 20;

/// Top-left corners of the legend items laid out in rows across `width` pixels, and the height
/// of the strip.
fn legend_layout(items: &[LegendItem], width: u32) -> (Vec<(i32, i32)>, u32) {
    let mut pos = Vec::with_capacity(items.len());
    let (mut x, mut y) = (LEGEND_LEFT, 8);
    for it in items {
        // Swatch 24 px, gap 6, text about 7 px per character at 12 px, spacing 24.
        let w = 24 + 6 + 7 * it.text.chars().count() as i32 + 24;
        if x > LEGEND_LEFT && x + w > width as i32 - 10 {
            x = LEGEND_LEFT;
            y += LEGEND_ROW;
        }
        pos.push((x, y));
        x += w;
    }
    let h = if items.is_empty() { 8 } else { y + LEGEND_ROW + 4 };
    (pos, h as u32)
}

fn draw_legend(area: &Area, items: &[LegendItem]) -> DrawResult {
    let (pos, _) = legend_layout(items, area.dim_in_pixel().0);
    let style = TextStyle::from((FONT, SMALL).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (it, &(x, y)) in items.iter().zip(&pos) {
        let cy = y + LEGEND_ROW / 2;
        match it.mark {
            Mark::Bar => area.draw(&Rectangle::new([(x + 4, cy - 6), (x + 20, cy + 6)], it.color.filled()))?,
            Mark::Line => area.draw(&PathElement::new(vec![(x, cy), (x + 24, cy)], it.color.stroke_width(3)))?,
        }
        area.draw(&Text::new(it.text.clone(), (x + 30, cy), style.clone()))?;
    }
    Ok(())
}

/// Draws a plot of `size` pixels with a legend strip on top; `body` draws below it.
fn render(
    plot: &'static str,
    width: u32,
    body_height: u32,
    legend: &[LegendItem],
    body: impl FnOnce(&Area) -> DrawResult,
) -> Result<String, ReportError> {
    let (_, legend_h) = legend_layout(legend, width);
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (width, legend_h + body_height)).into_drawing_area();
        let res = (|| -> DrawResult {
            root.fill(&WHITE)?;
            let (top, rest) = root.split_vertically(legend_h);
            draw_legend(&top, legend)?;
            body(&rest)?;
            root.present()?;
            Ok(())
        })();
        res.map_err(|e| ReportError::Plot { plot, message: e.to_string() })?;
    }
    Ok(buf)
}

/// Per-label F1: horizontal grouped bars, one group per label (label 0 on top), one bar per model.
fn per_label_f1(r: &ReportJson) -> Result<String, ReportError> {
    let n_labels = r.labels.len().max(1);
    let m = r.models.len().max(1);
    let row_h = (7 * m as u32 + 8).max(22);
    let legend: Vec<LegendItem> = r
        .models
        .iter()
        .map(|x| LegendItem {
            text: format!("{} (macro F1 {})", x.name, fmt3(Some(x.metrics.macro_f1))),
            color: color_of(r, &x.name),
            mark: Mark::Bar,
        })
        .collect();
    // Row i spans y in [(L - i - 1)·U, (L - i)·U) in integer units (U per row; integer
    // coordinates keep plotters' default tick formatting); its name sits at the centre.
    const U: i32 = 100;
    let nl = n_labels as i32;
    let centers: Vec<i32> = (0..nl).map(|i| (nl - i) * U - U / 2).collect();
    let name_of = |v: &i32| -> String {
        let i = nl - (v + U / 2) / U;
        usize::try_from(i).ok().and_then(|i| r.labels.get(i)).cloned().unwrap_or_default()
    };
    let longest = r.labels.iter().map(|s| s.chars().count()).max().unwrap_or(10) as u32;
    let y_area = 7 * longest + 20;
    render("per_label_f1", 1000, n_labels as u32 * row_h + 100, &legend, |area| {
        let mut chart = ChartBuilder::on(area)
            .caption("Per-label F1 at each model's decision thresholds", (FONT, CAPTION))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(y_area)
            .build_cartesian_2d(0f64..1f64, (0..nl * U).with_key_points(centers.clone()))?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc("F1")
            .y_label_formatter(&name_of)
            .label_style((FONT, SMALL))
            .axis_desc_style((FONT, TEXT))
            .draw()?;
        // Bars of one label fill the middle 80% of its row, model 0 on top.
        let bar = (U * 8 / 10) / m as i32;
        for (k, model) in r.models.iter().enumerate() {
            let color = color_of(r, &model.name);
            chart.draw_series(model.metrics.per_label.iter().zip(&centers).map(|(lr, &c)| {
                let top = c + U * 4 / 10 - k as i32 * bar;
                Rectangle::new([(0.0, top - bar), (lr.f1.clamp(0.0, 1.0), top)], color.filled())
            }))?;
        }
        Ok(())
    })
}

fn diagonal<'a>() -> LineSeries<SVGBackend<'a>, (f64, f64)> {
    LineSeries::new(vec![(0.0, 0.0), (1.0, 1.0)], GREY.stroke_width(1))
}

/// Micro-averaged ROC curve per model, with the chance diagonal.
fn roc(r: &ReportJson) -> Result<String, ReportError> {
    let mut legend: Vec<LegendItem> = r
        .models
        .iter()
        .filter(|m| m.roc.is_some())
        .map(|m| LegendItem {
            text: format!("{} (micro AUC {})", m.name, fmt3(m.metrics.micro_auc)),
            color: color_of(r, &m.name),
            mark: Mark::Line,
        })
        .collect();
    legend.push(LegendItem { text: "chance".into(), color: GREY, mark: Mark::Line });
    render("roc", 640, 580, &legend, |area| {
        let mut chart = ChartBuilder::on(area)
            .caption("ROC, micro-averaged over all labels", (FONT, CAPTION))
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
        chart
            .configure_mesh()
            .x_desc("False positive rate")
            .y_desc("True positive rate")
            .label_style((FONT, SMALL))
            .axis_desc_style((FONT, TEXT))
            .draw()?;
        chart.draw_series(diagonal())?;
        for m in &r.models {
            if let Some(points) = &m.roc {
                chart.draw_series(LineSeries::new(points.iter().copied(), color_of(r, &m.name).stroke_width(2)))?;
            }
        }
        Ok(())
    })
}

/// Reliability diagram: observed frequency against mean predicted probability per bin.
fn calibration(r: &ReportJson) -> Result<String, ReportError> {
    let mut legend: Vec<LegendItem> = r
        .models
        .iter()
        .map(|m| LegendItem {
            text: format!("{} (ECE {})", m.name, fmt3(Some(m.metrics.ece))),
            color: color_of(r, &m.name),
            mark: Mark::Line,
        })
        .collect();
    legend.push(LegendItem { text: "perfectly calibrated".into(), color: GREY, mark: Mark::Line });
    render("calibration", 640, 580, &legend, |area| {
        let mut chart = ChartBuilder::on(area)
            .caption("Calibration (reliability diagram)", (FONT, CAPTION))
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
        chart
            .configure_mesh()
            .x_desc("Mean predicted probability in bin")
            .y_desc("Observed frequency of the label")
            .label_style((FONT, SMALL))
            .axis_desc_style((FONT, TEXT))
            .draw()?;
        chart.draw_series(diagonal())?;
        for m in &r.models {
            let color = color_of(r, &m.name);
            let pts: Vec<(f64, f64)> =
                m.metrics.calibration.iter().filter_map(|b| Some((b.mean_predicted?, b.observed_frequency?))).collect();
            chart.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?;
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        }
        Ok(())
    })
}

/// Training loss against step (left) and validation macro-F1 against epoch (right).
fn training_curves(r: &ReportJson) -> Result<String, ReportError> {
    let legend: Vec<LegendItem> = r
        .curves
        .iter()
        .map(|c| LegendItem { text: c.model.clone(), color: color_of(r, &c.model), mark: Mark::Line })
        .collect();
    // Loss series: step logs when a curve has any, else the per-epoch mean loss.
    let loss_series: Vec<Vec<(u64, f64)>> = r
        .curves
        .iter()
        .map(|c| {
            let has_steps = c.points.iter().any(|p| p.kind == PointKind::Step && p.loss.is_some());
            let want = if has_steps { PointKind::Step } else { PointKind::Epoch };
            c.points.iter().filter(|p| p.kind == want).filter_map(|p| Some((p.step, p.loss?))).collect()
        })
        .collect();
    // Validation series: x = epochs completed (epoch index + 1).
    let f1_series: Vec<Vec<(u64, f64)>> = r
        .curves
        .iter()
        .map(|c| {
            c.points
                .iter()
                .filter(|p| p.kind == PointKind::Epoch)
                .enumerate()
                .filter_map(|(i, p)| Some((p.epoch.unwrap_or(i) as u64 + 1, p.val_macro_f1?)))
                .collect()
        })
        .collect();
    // Integer x axes (steps, epochs) so that ticks are whole numbers.
    let max_step = loss_series.iter().flatten().map(|p| p.0).max().unwrap_or(1).max(1);
    let max_loss = loss_series.iter().flatten().map(|p| p.1).fold(0.0, f64::max);
    let max_loss = if max_loss > 0.0 { max_loss * 1.1 } else { 1.0 };
    let max_epoch = f1_series.iter().flatten().map(|p| p.0).max().unwrap_or(1).max(1);
    render("training_curves", 1100, 480, &legend, |area| {
        let (left, right) = area.split_horizontally(550);
        let mut chart = ChartBuilder::on(&left)
            .caption("Training loss", (FONT, CAPTION))
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d(0..max_step, 0f64..max_loss)?;
        chart
            .configure_mesh()
            .x_desc("Step")
            .y_desc("Loss")
            .label_style((FONT, SMALL))
            .axis_desc_style((FONT, TEXT))
            .draw()?;
        for (c, pts) in r.curves.iter().zip(&loss_series) {
            chart.draw_series(LineSeries::new(pts.iter().copied(), color_of(r, &c.model).stroke_width(2)))?;
        }
        let mut chart = ChartBuilder::on(&right)
            .caption("Validation macro-F1", (FONT, CAPTION))
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d(0..max_epoch, 0f64..1f64)?;
        chart
            .configure_mesh()
            .x_desc("Epochs completed")
            .y_desc("Macro-F1")
            .label_style((FONT, SMALL))
            .axis_desc_style((FONT, TEXT))
            .draw()?;
        for (c, pts) in r.curves.iter().zip(&f1_series) {
            let color = color_of(r, &c.model);
            chart.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?;
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        }
        Ok(())
    })
}

/// Every plot of the report, in display order. The training-curve plot is left out when no
/// curve has a point.
pub fn render_plots(r: &ReportJson) -> Result<Vec<Plot>, ReportError> {
    let mut out = vec![
        Plot { file_name: "per_label_f1.svg", title: "Per-label F1", svg: per_label_f1(r)? },
        Plot { file_name: "roc.svg", title: "ROC curves", svg: roc(r)? },
        Plot { file_name: "calibration.svg", title: "Calibration", svg: calibration(r)? },
    ];
    if r.curves.iter().any(|c| !c.points.is_empty()) {
        out.push(Plot { file_name: "training_curves.svg", title: "Training curves", svg: training_curves(r)? });
    }
    Ok(out)
}
