//! How quantities read for people, the same in every command.

/// `12.3 MiB`
pub fn bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// A duration in nanoseconds: `850 ns`, `12.3 µs`, `4.56 ms`, `1.234 s`.
pub fn duration_ns(ns: u64) -> String {
    match ns {
        n if n >= 1_000_000_000 => format!("{:.3} s", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2} ms", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} µs", n as f64 / 1e3),
        n => format!("{n} ns"),
    }
}

/// A moment of a recording: seconds since its start, `12.345s`.
pub fn at(ns: u64) -> String {
    format!("{:.3}s", ns as f64 / 1e9)
}

/// `1,234,567`
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_for_people() {
        assert_eq!(super::bytes(1536), "1.5 KiB");
        assert_eq!(super::count(1234567), "1,234,567");
        assert_eq!(super::count(123), "123");
        assert_eq!(super::duration_ns(4_560_000), "4.56 ms");
        assert_eq!(super::at(12_500_000_000), "12.500s");
    }
}
