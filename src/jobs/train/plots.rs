//! The report figures of `cartpulse train --report DIR`: `roc.png`,
//! `calibration.png` and `confusion.png`, drawn with plotters' bitmap backend
//! from the out-of-fold scores (every row scored by the fold model that did not
//! see it).
//!
//! Text needs a font: the first of [`FONT_PATHS`] that exists (Debian's DejaVu
//! Sans) is read at run time. Without one the figures are still drawn, only
//! without titles, tick labels or numbers; nothing is ever fetched.

use super::metrics::Confusion;
use anyhow::anyhow;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;
use std::path::Path;
use std::sync::OnceLock;

/// Where a sans-serif TrueType font is looked for, in order.
pub const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

const FONT: &str = "sans-serif";
const SIZE: (u32, u32) = (720, 640);
const NAVY: RGBColor = RGBColor(31, 78, 140);
const ORANGE: RGBColor = RGBColor(214, 110, 30);

/// Registers the font once per process; `true` when text can be drawn.
fn have_font() -> bool {
    static LOADED: OnceLock<bool> = OnceLock::new();
    *LOADED.get_or_init(|| {
        for path in FONT_PATHS {
            if let Ok(bytes) = std::fs::read(path) {
                // plotters keeps registered fonts for the life of the process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                for style in [FontStyle::Normal, FontStyle::Bold] {
                    if plotters::style::register_font(FONT, style, bytes).is_err() {
                        return false;
                    }
                }
                return true;
            }
        }
        false
    })
}

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing the report: {e}")
}

/// Draws the three figures into `dir`.
pub fn write_all(
    dir: &Path,
    roc: &[(f64, f64)],
    auc: f64,
    calibration: &[(f64, f64, usize)],
    confusion: &Confusion,
) -> anyhow::Result<()> {
    let text = have_font();
    roc_png(&dir.join("roc.png"), roc, auc, text)?;
    calibration_png(&dir.join("calibration.png"), calibration, text)?;
    confusion_png(&dir.join("confusion.png"), confusion, text)?;
    Ok(())
}

type UnitChart<'a, 'b> = ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The [0, 1] × [0, 1] frame both curves share: caption, axes, grid-free mesh
/// and the grey diagonal (chance for ROC, perfect calibration for the other).
fn unit_square_chart<'a, 'b>(
    root: &'a DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>,
    caption: &str,
    axes: (&str, &str),
    diagonal: &str,
    text: bool,
) -> anyhow::Result<UnitChart<'a, 'b>> {
    root.fill(&WHITE).map_err(err)?;
    let mut b = ChartBuilder::on(root);
    b.margin(20);
    if text {
        b.caption(caption, (FONT, 24)).x_label_area_size(50).y_label_area_size(60);
    }
    let mut chart = b.build_cartesian_2d(0f64..1f64, 0f64..1f64).map_err(err)?;
    let mut mesh = chart.configure_mesh();
    mesh.light_line_style(WHITE.mix(0.0));
    if text {
        mesh.x_desc(axes.0).y_desc(axes.1).label_style((FONT, 16)).axis_desc_style((FONT, 18));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(err)?;
    let line =
        chart.draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.4).stroke_width(1))).map_err(err)?;
    if text {
        line.label(diagonal).legend(|(x, y)| PathElement::new([(x, y), (x + 24, y)], BLACK.mix(0.4)));
    }
    Ok(chart)
}

fn roc_png(path: &Path, points: &[(f64, f64)], auc: f64, text: bool) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    let caption = format!("ROC, out-of-fold scores (AUC {auc:.4})");
    let axes = ("false positive rate", "true positive rate (recall)");
    let mut chart = unit_square_chart(&root, &caption, axes, "chance", text)?;
    let curve = chart.draw_series(LineSeries::new(points.iter().copied(), NAVY.stroke_width(2))).map_err(err)?;
    if text {
        curve
            .label("purchase-intent model")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 24, y)], NAVY.stroke_width(3)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font((FONT, 18))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.5))
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

/// `bins`: (mean predicted probability, observed purchase rate, rows).
fn calibration_png(path: &Path, bins: &[(f64, f64, usize)], text: bool) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    let caption = "Calibration, out-of-fold scores (10 bins)";
    let axes = ("mean predicted probability", "observed purchase rate");
    let mut chart = unit_square_chart(&root, caption, axes, "perfectly calibrated", text)?;
    let pts: Vec<(f64, f64)> = bins.iter().map(|&(p, o, _)| (p, o)).collect();
    let line = chart.draw_series(LineSeries::new(pts.iter().copied(), ORANGE.stroke_width(3))).map_err(err)?;
    if text {
        line.label("model").legend(|(x, y)| PathElement::new([(x, y), (x + 24, y)], ORANGE.stroke_width(3)));
    }
    chart.draw_series(pts.iter().map(|&p| Circle::new(p, 6, ORANGE.filled()))).map_err(err)?;
    if text {
        // Row count of each bin next to its point: the sparse middle bins
        // are the noisy ones.
        chart
            .draw_series(bins.iter().map(|&(p, o, n)| {
                EmptyElement::at((p, o))
                    + Text::new(format!("n={n}"), (10, 4), (FONT, 14).into_font().color(&BLACK.mix(0.7)))
            }))
            .map_err(err)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, 18))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.5))
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

fn confusion_png(path: &Path, c: &Confusion, text: bool) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, (640, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (title, body) = root.split_vertically(if text { 70 } else { 20 });
    let total = c.total().max(1) as f64;
    if text {
        title
            .draw(&Text::new(
                format!("Confusion matrix, all folds ({} sessions, accuracy {:.4})", c.total(), c.accuracy()),
                (20, 25),
                (FONT, 20).into_font().style(FontStyle::Bold),
            ))
            .map_err(err)?;
    }
    // Left margin and top band for the axis labels.
    let (left, top) = (150i32, 60i32);
    let (w, h) = body.dim_in_pixel();
    let cell_w = (w as i32 - left - 30) / 2;
    let cell_h = (h as i32 - top - 30) / 2;
    // Rows: actual (buy, no buy); columns: predicted (buy, no buy).
    let cells = [[(c.tp, true), (c.r#fn, false)], [(c.fp, false), (c.tn, true)]];
    let actual = ["actual: buys", "actual: no buy"];
    let predicted = ["predicted: buys", "predicted: no buy"];
    for (r, row) in cells.iter().enumerate() {
        for (k, &(count, correct)) in row.iter().enumerate() {
            let x0 = left + k as i32 * cell_w;
            let y0 = top + r as i32 * cell_h;
            // Colour depth by the share of the row's actual class.
            let row_total = (row[0].0 + row[1].0).max(1) as f64;
            let share = count as f64 / row_total;
            let base = if correct { NAVY } else { ORANGE };
            body.draw(&Rectangle::new([(x0, y0), (x0 + cell_w, y0 + cell_h)], base.mix(0.15 + 0.75 * share).filled()))
                .map_err(err)?;
            body.draw(&Rectangle::new([(x0, y0), (x0 + cell_w, y0 + cell_h)], BLACK.stroke_width(1))).map_err(err)?;
            if text {
                let ink = if share > 0.5 { WHITE } else { BLACK };
                let (cx, cy) = (x0 + cell_w / 2, y0 + cell_h / 2);
                body.draw(&Text::new(
                    count.to_string(),
                    (cx, cy - 18),
                    (FONT, 34).into_font().style(FontStyle::Bold).color(&ink).pos(center()),
                ))
                .map_err(err)?;
                body.draw(&Text::new(
                    format!("{:.1} % of row, {:.1} % of all", 100.0 * share, 100.0 * count as f64 / total),
                    (cx, cy + 20),
                    (FONT, 15).into_font().color(&ink).pos(center()),
                ))
                .map_err(err)?;
            }
        }
        if text {
            body.draw(&Text::new(
                actual[r],
                (left - 10, top + r as i32 * cell_h + cell_h / 2),
                (FONT, 17).into_font().color(&BLACK).pos(Pos::new(HPos::Right, VPos::Center)),
            ))
            .map_err(err)?;
        }
    }
    if text {
        for (k, label) in predicted.iter().enumerate() {
            body.draw(&Text::new(
                *label,
                (left + k as i32 * cell_w + cell_w / 2, top - 20),
                (FONT, 17).into_font().color(&BLACK).pos(center()),
            ))
            .map_err(err)?;
        }
    }
    root.present().map_err(err)?;
    Ok(())
}

fn center() -> Pos {
    Pos::new(HPos::Center, VPos::Center)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let roc = [(0.0, 0.0), (0.1, 0.6), (0.4, 0.9), (1.0, 1.0)];
        let cal = [(0.05, 0.03, 900), (0.5, 0.45, 50), (0.9, 0.85, 60)];
        let c = Confusion { tp: 40, fp: 10, tn: 900, r#fn: 50 };
        write_all(dir.path(), &roc, 0.9, &cal, &c).unwrap();
        for f in ["roc.png", "calibration.png", "confusion.png"] {
            let bytes = std::fs::read(dir.path().join(f)).unwrap();
            assert!(bytes.starts_with(b"\x89PNG"), "{f}");
        }
    }
}
