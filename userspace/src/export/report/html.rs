//! Writing the report's HTML and SVG: text escaped on the way out, and the colours every
//! section shares.

use std::fmt;

/// Text escaped for HTML and SVG, as element content or a quoted attribute value:
/// `write!(out, "<td>{}</td>", Esc(name))`.
pub struct Esc<'a>(pub &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

/// Distinct line colours (Tableau 10), one per series, in order.
pub const PALETTE: [&str; 10] =
    ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];

/// A heat colour for a share of the largest value (0..=1): pale yellow through orange to dark
/// red. The square root spreads the small values, which are the many.
pub fn heat(share: f64) -> String {
    const STOPS: [(f64, [f64; 3]); 5] = [
        (0.0, [255.0, 250.0, 220.0]),
        (0.25, [254.0, 217.0, 118.0]),
        (0.5, [253.0, 141.0, 60.0]),
        (0.75, [227.0, 26.0, 28.0]),
        (1.0, [128.0, 0.0, 38.0]),
    ];
    let s = if share.is_finite() { share.clamp(0.0, 1.0).sqrt() } else { 0.0 };
    let i = STOPS.iter().rposition(|(at, _)| *at <= s).unwrap_or(0).min(STOPS.len() - 2);
    let ((a, ca), (b, cb)) = (STOPS[i], STOPS[i + 1]);
    let t = (s - a) / (b - a);
    let c: Vec<u8> = (0..3).map(|k| (ca[k] + (cb[k] - ca[k]) * t).round() as u8).collect();
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

/// Whether text on a heat colour of this share reads better white.
pub fn heat_dark(share: f64) -> bool {
    share.is_finite() && share.clamp(0.0, 1.0).sqrt() >= 0.6
}

/// A short name for a process in a tight spot: its identity, else its pid.
pub fn short(rec: &crate::record::model::Recording, pid: u64) -> String {
    match rec.identity(pid) {
        Some(n) if !n.is_empty() => n.to_owned(),
        _ => rec.pid(pid),
    }
}

/// `s` cut to `max` characters, with an ellipsis when cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(s: &str) -> String {
        Esc(s).to_string()
    }

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(esc("<0.80.0> (a&b) \"x\" 'y'"), "&lt;0.80.0&gt; (a&amp;b) &quot;x&quot; &#39;y&#39;");
        assert_eq!(esc("plain"), "plain");
        assert_eq!(esc("</script><script>alert(1)</script>"), "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;");
    }

    #[test]
    fn heat_runs_from_pale_to_dark() {
        assert_eq!(heat(0.0), "#fffadc");
        assert_eq!(heat(1.0), "#800026");
        assert_eq!(heat(f64::NAN), "#fffadc");
        assert!(!heat_dark(0.1) && heat_dark(0.9));
    }

    #[test]
    fn clips_long_names() {
        assert_eq!(clip("order_worker_1", 20), "order_worker_1");
        assert_eq!(clip("abcdefghij", 5), "abcd…");
    }
}
