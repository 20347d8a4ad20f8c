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
    fn clips_long_names() {
        assert_eq!(clip("order_worker_1", 20), "order_worker_1");
        assert_eq!(clip("abcdefghij", 5), "abcd…");
    }
}
