//! Line charts as SVG: panels of curves with axes, ticks and a legend, for the evaluation figures.

use std::fmt::Write;

/// One curve. Series with the same `color` index share a colour (e.g. ours solid, the seed's dashed).
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub color: usize,
    pub dashed: bool,
}

pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

/// Tableau's ten colours (matplotlib's default cycle), then grey.
const PALETTE: [&str; 11] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#444444",
];

const PANEL_W: f64 = 460.0;
const PANEL_H: f64 = 330.0;
const LEGEND_W: f64 = 170.0;
const MARGIN: (f64, f64, f64, f64) = (40.0, 20.0, 50.0, 62.0); // top, right, bottom, left

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// About five round tick values covering [lo, hi].
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| span / s <= 6.0).unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) =
        values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-9 {
        return (lo - 0.5, hi + 0.5);
    }
    let pad = (hi - lo) * 0.05;
    (lo - pad, hi + pad)
}

fn panel(out: &mut String, chart: &Chart, ox: f64, oy: f64) {
    let (top, right, bottom, left) = MARGIN;
    let (w, h) = (PANEL_W - left - right, PANEL_H - top - bottom);
    let (x0, x1) = range(chart.series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
    let (y0, y1) = range(chart.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    let px = |x: f64| ox + left + (x - x0) / (x1 - x0) * w;
    let py = |y: f64| oy + top + h - (y - y0) / (y1 - y0) * h;
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" font-size="15" font-weight="bold" text-anchor="middle">{}</text>"#,
        ox + left + w / 2.0,
        oy + 24.0,
        escape(&chart.title)
    );
    let _ = writeln!(
        out,
        r##"<rect x="{:.1}" y="{:.1}" width="{w:.1}" height="{h:.1}" fill="none" stroke="#333"/>"##,
        ox + left,
        oy + top
    );
    for t in ticks(x0, x1) {
        let x = px(t);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"##,
            oy + top,
            oy + top + h,
            oy + top + h + 15.0,
            fmt_tick(t)
        );
    }
    for t in ticks(y0, y1) {
        let y = py(t);
        let _ = writeln!(
            out,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            ox + left,
            ox + left + w,
            ox + left - 5.0,
            y + 4.0,
            fmt_tick(t)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"#,
        ox + left + w / 2.0,
        oy + PANEL_H - 12.0,
        escape(&chart.x_label)
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate({:.1},{:.1}) rotate(-90)" font-size="12" text-anchor="middle">{}</text>"#,
        ox + 16.0,
        oy + top + h / 2.0,
        escape(&chart.y_label)
    );
    for s in &chart.series {
        let color = PALETTE[s.color % PALETTE.len()];
        let dash = if s.dashed { r#" stroke-dasharray="5,4""# } else { "" };
        let points: Vec<String> =
            s.points.iter().filter(|p| p.1.is_finite()).map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y))).collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.8"{dash} points="{}"/>"#,
            points.join(" ")
        );
        if s.points.len() <= 12 {
            for &(x, y) in s.points.iter().filter(|p| p.1.is_finite()) {
                let _ = writeln!(out, r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}"/>"#, px(x), py(y));
            }
        }
    }
    // Legend rows shrink so that every entry fits beside the panel.
    let row = (16f64).min((PANEL_H - top - 8.0) / chart.series.len().max(1) as f64);
    for (k, s) in chart.series.iter().enumerate() {
        let (lx, ly) = (ox + PANEL_W + 4.0, oy + top + 8.0 + row * k as f64);
        let color = PALETTE[s.color % PALETTE.len()];
        let dash = if s.dashed { r#" stroke-dasharray="5,4""# } else { "" };
        let _ = writeln!(
            out,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"#,
            lx + 22.0,
            lx + 27.0,
            ly + 4.0,
            escape(&s.name)
        );
    }
}

fn fmt_tick(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The charts as panels in a grid of `columns`, with a legend beside each.
pub fn figure(charts: &[Chart], columns: usize) -> String {
    let columns = columns.max(1);
    let rows = charts.len().div_ceil(columns).max(1);
    let cell_w = PANEL_W + LEGEND_W;
    let (width, height) = (cell_w * columns as f64, PANEL_H * rows as f64);
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">
<rect width="100%" height="100%" fill="white"/>
"#
    );
    for (i, chart) in charts.iter().enumerate() {
        panel(&mut out, chart, (i % columns) as f64 * cell_w, (i / columns) as f64 * PANEL_H);
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 1.0), vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]);
        assert_eq!(ticks(0.0, 50.0), vec![0.0, 10.0, 20.0, 30.0, 40.0, 50.0]);
    }

    #[test]
    fn points_land_inside_the_plot_area() {
        let chart = Chart {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: vec![Series { name: "a<b".into(), points: vec![(0.0, 0.0), (1.0, 1.0)], color: 0, dashed: true }],
        };
        let svg = figure(&[chart], 1);
        assert!(svg.contains("a&lt;b") && svg.contains("stroke-dasharray"));
        // x from 0 to 1 is padded 5 % each side: the first point sits 1/22 of the width in from the left edge.
        let (left, w) = (MARGIN.3, PANEL_W - MARGIN.3 - MARGIN.1);
        let expect = format!("{:.1},", left + w / 22.0);
        assert!(svg.contains(&format!("points=\"{expect}")), "{svg}");
    }
}
