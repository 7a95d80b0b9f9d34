//! The charts of `cartpulse segment --report DIR`, drawn with plotters'
//! bitmap backend:
//!
//! - `sizes.png`: one horizontal bar per segment (largest first), with its
//!   customer count and share;
//! - `profiles.png`: a heat map of every segment's *median member* in scaled
//!   units (robust z: 0 is the median customer, ±1 one IQR away, money and
//!   counts on the log scale), one row per feature. Medians of members rather
//!   than centroids because a centroid is a mean, pulled by the few extreme
//!   customers every retail segment has; the median says what a typical member
//!   looks like. Features that are constant over all customers (the session
//!   features when there is no clickstream) are left out: they would be rows
//!   of zeros.
//!
//! Text needs a font: the first of [`crate::jobs::train::plots::FONT_PATHS`] that
//! exists is read at run time. Without one the charts are still drawn, only
//! without words or numbers; nothing is ever fetched.

use super::SegmentReport;
use actors::features::profile::ProfileFeatures;
use anyhow::anyhow;
use ndarray::Array2;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;
use std::path::Path;
use std::sync::OnceLock;

const FONT: &str = "sans-serif";
const NAVY: RGBColor = RGBColor(31, 78, 140);
const ORANGE: RGBColor = RGBColor(214, 110, 30);
/// Scaled values at or beyond this get the full colour in the heat map.
const CLAMP: f64 = 2.0;

/// Registers the font once per process; `true` when text can be drawn.
fn have_font() -> bool {
    static LOADED: OnceLock<bool> = OnceLock::new();
    *LOADED.get_or_init(|| {
        for path in crate::jobs::train::plots::FONT_PATHS {
            if let Ok(bytes) = std::fs::read(path) {
                // plotters keeps registered fonts for the life of the process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                return [FontStyle::Normal, FontStyle::Bold]
                    .into_iter()
                    .all(|style| plotters::style::register_font(FONT, style, bytes).is_ok());
            }
        }
        false
    })
}

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing the segment report: {e}")
}

/// Per segment, the median of each column over its members (0 for an empty segment).
pub fn member_medians(matrix: &Array2<f64>, labels: &[usize], k: usize) -> Vec<Vec<f64>> {
    let mut out = Vec::with_capacity(k);
    for s in 0..k {
        let rows: Vec<usize> = labels.iter().enumerate().filter(|(_, &l)| l == s).map(|(i, _)| i).collect();
        let med = (0..matrix.ncols())
            .map(|j| {
                let mut col: Vec<f64> = rows.iter().map(|&i| matrix[[i, j]]).collect();
                col.sort_by(f64::total_cmp);
                match col.len() {
                    0 => 0.0,
                    n if n % 2 == 1 => col[n / 2],
                    n => (col[n / 2 - 1] + col[n / 2]) / 2.0,
                }
            })
            .collect();
        out.push(med);
    }
    out
}

/// Columns that are not constant over all rows, in order.
pub fn varying_columns(matrix: &Array2<f64>) -> Vec<usize> {
    (0..matrix.ncols())
        .filter(|&j| {
            let col = matrix.column(j);
            let first = col.first().copied().unwrap_or(0.0);
            col.iter().any(|&v| v != first)
        })
        .collect()
}

/// Draws both charts into `dir` (which must exist).
pub fn write_all(dir: &Path, r: &SegmentReport, matrix: &Array2<f64>, labels: &[usize]) -> anyhow::Result<()> {
    let text = have_font();
    sizes_png(&dir.join("sizes.png"), r, text)?;
    let medians = member_medians(matrix, labels, r.k);
    profiles_png(&dir.join("profiles.png"), r, &medians, &varying_columns(matrix), text)?;
    Ok(())
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn sizes_png(path: &Path, r: &SegmentReport, text: bool) -> anyhow::Result<()> {
    let row_h = 56i32;
    let (top, bottom) = (if text { 80 } else { 20 }, 30i32);
    let height = (top + bottom + row_h * r.k as i32).max(200) as u32;
    // The label column is as wide as the longest "index  name" (about 9 px a
    // character at this size), the bars get 550 px, their numbers 150.
    let longest = r.segments.iter().map(|s| s.name.chars().count() + 4).max().unwrap_or(10) as i32;
    let (left, bar, right) = (if text { 30 + 9 * longest } else { 20 }, 550i32, 150i32);
    let width = (left + bar + right).max(720);
    let root = BitMapBackend::new(path, (width as u32, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    if text {
        let title = format!(
            "Segment sizes: v{}, k = {}, {} customers (silhouette {:.3})",
            r.version,
            r.k,
            thousands(r.n_customers),
            r.silhouette
        );
        root.draw(&Text::new(title, (20, 25), (FONT, 22).into_font().style(FontStyle::Bold))).map_err(err)?;
    }
    let mut segs: Vec<_> = r.segments.iter().collect();
    segs.sort_by(|a, b| b.size.cmp(&a.size).then(a.segment.cmp(&b.segment)));
    let max = segs.iter().map(|s| s.size).max().unwrap_or(1).max(1) as f64;
    let span = bar as f64;
    for (row, s) in segs.iter().enumerate() {
        let y0 = top + row as i32 * row_h + 8;
        let y1 = y0 + row_h - 16;
        let w = ((s.size as f64 / max) * span).round().max(1.0) as i32;
        root.draw(&Rectangle::new([(left, y0), (left + w, y1)], NAVY.mix(0.85).filled())).map_err(err)?;
        if text {
            let mid = (y0 + y1) / 2;
            root.draw(&Text::new(
                format!("{}  {}", s.segment, s.name),
                (left - 12, mid),
                (FONT, 17).into_font().color(&BLACK).pos(Pos::new(HPos::Right, VPos::Center)),
            ))
            .map_err(err)?;
            let share = 100.0 * s.size as f64 / r.n_customers.max(1) as f64;
            root.draw(&Text::new(
                format!("{} ({share:.1} %)", thousands(s.size)),
                (left + w + 8, mid),
                (FONT, 16).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center)),
            ))
            .map_err(err)?;
        }
    }
    root.present().map_err(err)?;
    Ok(())
}

/// Diverging colour: orange above the median customer, navy below, white at 0.
fn heat(v: f64) -> RGBColor {
    let t = (v / CLAMP).clamp(-1.0, 1.0);
    let base = if t >= 0.0 { ORANGE } else { NAVY };
    let a = t.abs();
    let mix = |c: u8| (255.0 + (c as f64 - 255.0) * a).round() as u8;
    RGBColor(mix(base.0), mix(base.1), mix(base.2))
}

fn profiles_png(
    path: &Path,
    r: &SegmentReport,
    medians: &[Vec<f64>],
    columns: &[usize],
    text: bool,
) -> anyhow::Result<()> {
    let names = ProfileFeatures::NAMES;
    let (cell_w, cell_h) = (110i32, 30i32);
    let left = if text { 250 } else { 20 };
    let top = if text { 110 } else { 20 };
    // The legend below the grid names every segment (the column heads only
    // have room for its number and size).
    let legend = if text { 30 + 24 * r.k as i32 } else { 10 };
    let width = (left + cell_w * r.k as i32 + 30).max(720) as u32;
    let height = (top + cell_h * columns.len() as i32 + legend + 20).max(200) as u32;
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    if text {
        root.draw(&Text::new(
            format!("Segment profiles: median member per segment (v{})", r.version),
            (20, 25),
            (FONT, 22).into_font().style(FontStyle::Bold),
        ))
        .map_err(err)?;
        root.draw(&Text::new(
            "robust z: 0 = median customer, ±1 = one IQR; money and counts log-scaled",
            (20, 55),
            (FONT, 15).into_font().color(&BLACK.mix(0.7)),
        ))
        .map_err(err)?;
    }
    for s in 0..r.k {
        let x0 = left + s as i32 * cell_w;
        if text {
            let size = r.segments.get(s).map(|i| i.size).unwrap_or(0);
            root.draw(&Text::new(
                format!("seg {s}"),
                (x0 + cell_w / 2, top - 34),
                (FONT, 16).into_font().style(FontStyle::Bold).color(&BLACK).pos(center()),
            ))
            .map_err(err)?;
            root.draw(&Text::new(
                format!("n={}", thousands(size)),
                (x0 + cell_w / 2, top - 14),
                (FONT, 14).into_font().color(&BLACK.mix(0.7)).pos(center()),
            ))
            .map_err(err)?;
        }
        for (row, &j) in columns.iter().enumerate() {
            let y0 = top + row as i32 * cell_h;
            let v = medians.get(s).and_then(|m| m.get(j)).copied().unwrap_or(0.0);
            root.draw(&Rectangle::new([(x0, y0), (x0 + cell_w, y0 + cell_h)], heat(v).filled())).map_err(err)?;
            root.draw(&Rectangle::new([(x0, y0), (x0 + cell_w, y0 + cell_h)], WHITE.stroke_width(1))).map_err(err)?;
            if text {
                let ink = if v.abs() > 0.6 * CLAMP { WHITE } else { BLACK };
                root.draw(&Text::new(
                    format!("{v:+.2}"),
                    (x0 + cell_w / 2, y0 + cell_h / 2),
                    (FONT, 14).into_font().color(&ink).pos(center()),
                ))
                .map_err(err)?;
            }
        }
    }
    if text {
        for (row, &j) in columns.iter().enumerate() {
            root.draw(&Text::new(
                names.get(j).copied().unwrap_or("?"),
                (left - 10, top + row as i32 * cell_h + cell_h / 2),
                (FONT, 15).into_font().color(&BLACK).pos(Pos::new(HPos::Right, VPos::Center)),
            ))
            .map_err(err)?;
        }
        let y = top + cell_h * columns.len() as i32 + 30;
        for (i, s) in r.segments.iter().enumerate() {
            root.draw(&Text::new(
                format!("seg {}: {}", s.segment, s.name),
                (20, y + 24 * i as i32),
                (FONT, 15).into_font().color(&BLACK),
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
