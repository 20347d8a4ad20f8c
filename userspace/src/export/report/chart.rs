//! Line charts as inline SVG: time along the bottom (seconds since the recording started),
//! values up the side with round ticks in the chart's unit, one coloured line per series
//! with its points' values as tooltips, and a legend (clicking a name hides its line).

use std::fmt::Write;

use super::html::{Esc, PALETTE};
use crate::units::{bytes, count};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unit {
    Messages,
    Bytes,
    Cores,
}

impl Unit {
    fn text(self, v: f64) -> String {
        match self {
            Unit::Messages => count(v.round().max(0.0) as u64),
            Unit::Bytes => bytes(v.max(0.0) as u64),
            Unit::Cores => format!("{v:.2}"),
        }
    }

    /// A tick's label: in the unit of the top tick (`0.5 MiB`, not `512.0 KiB`), no more
    /// decimals than the steps need.
    fn tick(self, v: f64, top: f64) -> String {
        if v == 0.0 {
            return "0".into();
        }
        let trim = |s: String| if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_owned() } else { s };
        match self {
            Unit::Bytes => {
                let (scale, name) = match top {
                    t if t >= (1u64 << 30) as f64 => ((1u64 << 30) as f64, "GiB"),
                    t if t >= (1u64 << 20) as f64 => ((1u64 << 20) as f64, "MiB"),
                    t if t >= 1024.0 => (1024.0, "KiB"),
                    _ => (1.0, "B"),
                };
                format!("{} {name}", trim(format!("{:.2}", v / scale)))
            }
            Unit::Cores => trim(format!("{v:.2}")),
            Unit::Messages => self.text(v),
        }
    }
}

pub struct Series {
    pub name: String,
    /// (seconds, value), in time order.
    pub points: Vec<(f64, f64)>,
}

const W: f64 = 900.0;
const H: f64 = 240.0;
const LEFT: f64 = 78.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 34.0;
/// Points given a dot and a tooltip of their own, at most per series.
const DOTS: usize = 150;

/// About `n` round tick values covering 0..=max: steps of 1, 2 or 5 times a power of ten
/// (for bytes: of 1024 times that, in the unit the top value reads in).
pub fn ticks(max: f64, n: usize, unit: Unit) -> Vec<f64> {
    let max = if max.is_finite() && max > 0.0 { max } else { 1.0 };
    let scale = match unit {
        Unit::Bytes if max >= (1u64 << 30) as f64 => (1u64 << 30) as f64,
        Unit::Bytes if max >= (1u64 << 20) as f64 => (1u64 << 20) as f64,
        Unit::Bytes if max >= 1024.0 => 1024.0,
        _ => 1.0,
    };
    let raw = max / scale / n.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let mut step = [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(10.0 * magnitude);
    if unit == Unit::Messages {
        step = step.max(1.0);
    }
    let step = step * scale;
    let top = (max / step).ceil() as usize;
    (0..=top).map(|i| i as f64 * step).collect()
}

/// Draws a chart of `series` over 0..=`x_max` seconds; `id` names it in the page.
pub fn line_chart(out: &mut String, id: &str, title: &str, unit: Unit, x_from: f64, x_to: f64, series: &[Series]) {
    let y_max = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0, f64::max);
    let yt = ticks(y_max, 5, unit);
    let y_top = *yt.last().unwrap_or(&1.0);
    let span = (x_to - x_from).max(1e-9);
    let xt: Vec<f64> = ticks(span, 8, Unit::Cores).into_iter().map(|t| t + x_from).filter(|t| *t <= x_to + 1e-9).collect();
    let x = |s: f64| LEFT + (s - x_from) / span * (W - LEFT - RIGHT);
    let y = |v: f64| H - BOTTOM - v / y_top * (H - TOP - BOTTOM);
    let _ = write!(
        out,
        "<figure class=\"sp-chart\" id=\"{id}\"><figcaption>{}</figcaption><svg class=\"sp-chart-svg\" \
         xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\">",
        Esc(title),
        Esc(title)
    );
    // Axes and grid.
    for v in &yt {
        let _ = write!(
            out,
            "<line class=\"sp-grid\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/><text class=\"sp-tick sp-ytick\" x=\"{:.1}\" \
             y=\"{:.1}\">{}</text>",
            W - RIGHT,
            y(*v),
            y(*v),
            LEFT - 6.0,
            y(*v) + 4.0,
            Esc(&unit.tick(*v, y_top))
        );
    }
    for s in &xt {
        let _ = write!(
            out,
            "<line class=\"sp-grid sp-xgrid\" x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{TOP}\" y2=\"{:.1}\"/><text class=\"sp-tick sp-xtick\" \
             x=\"{:.1}\" y=\"{:.1}\">{}s</text>",
            x(*s),
            x(*s),
            H - BOTTOM,
            x(*s),
            H - BOTTOM + 16.0,
            trim_float(*s)
        );
    }
    let _ = write!(
        out,
        "<line class=\"sp-axis\" x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{:.1}\"/><line class=\"sp-axis\" x1=\"{LEFT}\" \
         x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/><text class=\"sp-tick sp-xlabel\" x=\"{:.1}\" y=\"{:.1}\">seconds since the \
         recording started</text>",
        H - BOTTOM,
        W - RIGHT,
        H - BOTTOM,
        H - BOTTOM,
        W - RIGHT,
        H - 2.0
    );
    for (i, s) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let _ = write!(out, "<g class=\"sp-series\" data-series=\"{i}\" data-name=\"{}\" style=\"color:{colour}\">", Esc(&s.name));
        let mut d = String::new();
        for (k, (t, v)) in s.points.iter().enumerate() {
            let _ = write!(d, "{}{:.1},{:.1}", if k == 0 { "M" } else { " L" }, x(*t), y(*v));
        }
        let _ = write!(out, "<path class=\"sp-line\" d=\"{d}\"><title>{}</title></path>", Esc(&s.name));
        if s.points.len() <= DOTS {
            for (t, v) in &s.points {
                let _ = write!(
                    out,
                    "<circle class=\"sp-dot\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"{}\"><title>{} at {:.1} s: {}</title></circle>",
                    x(*t),
                    y(*v),
                    if s.points.len() == 1 { 4 } else { 2 },
                    Esc(&s.name),
                    t,
                    Esc(&unit.text(*v))
                );
            }
        }
        out.push_str("</g>");
    }
    out.push_str("</svg><ul class=\"sp-legend\">");
    for (i, s) in series.iter().enumerate() {
        let peak = s.points.iter().map(|p| p.1).fold(0.0, f64::max);
        let _ = write!(
            out,
            "<li data-series=\"{i}\" title=\"click to hide or show\"><span class=\"sp-swatch\" style=\"background:{}\"></span>{} \
             <span class=\"sp-muted\">peak {}</span></li>",
            PALETTE[i % PALETTE.len()],
            Esc(&s.name),
            Esc(&unit.text(peak))
        );
    }
    out.push_str("</ul></figure>");
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_top() {
        assert_eq!(ticks(812.0, 4, Unit::Messages), vec![0.0, 500.0, 1000.0]);
        assert_eq!(ticks(812.0, 5, Unit::Messages), vec![0.0, 200.0, 400.0, 600.0, 800.0, 1000.0]);
        assert_eq!(ticks(3.0, 4, Unit::Messages), vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(ticks(0.0, 4, Unit::Messages), vec![0.0, 1.0]);
        let mib = (1u64 << 20) as f64;
        assert_eq!(ticks(1.7 * mib, 4, Unit::Bytes), vec![0.0, 0.5 * mib, mib, 1.5 * mib, 2.0 * mib]);
        assert_eq!(ticks(1.3, 4, Unit::Cores), vec![0.0, 0.5, 1.0, 1.5]);
        assert_eq!(Unit::Bytes.tick(0.5 * mib, 2.0 * mib), "0.5 MiB");
        assert_eq!(Unit::Bytes.tick(0.0, 2.0 * mib), "0");
        assert_eq!(Unit::Cores.tick(0.5, 1.5), "0.5");
    }

    #[test]
    fn names_are_escaped() {
        let mut out = String::new();
        let s = Series { name: "<0.80.0> (a<b>)".into(), points: vec![(0.0, 1.0), (1.0, 2.0)] };
        line_chart(&mut out, "c", "Mailbox <length>", Unit::Messages, 0.0, 1.0, &[s]);
        assert!(!out.contains("<0.80.0>") && !out.contains("<length>"));
        assert!(out.contains("&lt;0.80.0&gt; (a&lt;b&gt;)"));
    }
}
