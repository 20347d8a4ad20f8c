//! The perf map a VM started with `+JPperf true|map` writes: `/tmp/perf-<pid>.map`, one line
//! per JIT code range, `0x<start> <size in hex> $<name>` (OTP 25 writes it with
//! `fprintf("%p %tx $%s\n")`, e.g. `0x7f5f68bc1530 120 $t:loop/0`).
//!
//! The VM appends to it as modules load and never rewrites it, so a reader remembers how far
//! it got and parses only what follows. The VM writes through stdio, so a read can end in the
//! middle of a line: that line is left for the next read.
//!
//! blazesym's perf-map reader rejects the `0x` prefix OTP writes, hence this parser.

use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::jit::JitSymbol;

/// No line OTP writes comes near this (atoms are at most 255 characters, so `M:F/A` plus a
/// suffix is about 2 KiB): a longer run without a newline is garbage, skipped.
const MAX_LINE: usize = 16 * 1024;

/// Where a VM's perf map is, seen from here: `pid_in_namespace` is the pid the VM knows
/// itself by (its `getpid()`, which differs from ours inside a pid namespace), `root` its
/// root directory (`/proc/<pid>/root`, so VMs in chroots and containers work).
pub fn perf_map_path(root: &Path, pid_in_namespace: u32) -> PathBuf {
    root.join(format!("tmp/perf-{pid_in_namespace}.map"))
}

/// One line of a perf map, or `None` if it is not `<hex start> <hex size> <name>`. The
/// perf map's `$` before the name is dropped; the name is the rest of the line (quoted atoms
/// may contain spaces).
pub fn parse_line(line: &str) -> Option<JitSymbol> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut fields = line.splitn(3, ' ');
    let start = parse_hex(fields.next()?)?;
    let size = parse_hex(fields.next()?)?;
    let raw_name = fields.next()?;
    let name = raw_name.strip_prefix('$').unwrap_or(raw_name);
    if name.is_empty() {
        return None;
    }
    Some(JitSymbol { start, size, name: name.to_owned() })
}

fn parse_hex(field: &str) -> Option<u64> {
    let digits = field.strip_prefix("0x").or_else(|| field.strip_prefix("0X")).unwrap_or(field);
    // from_str_radix accepts a leading '+', which is no hex number.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// What [`parse_chunk`] made of a piece of the file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ParsedChunk {
    pub symbols: Vec<JitSymbol>,
    /// Bytes of complete lines (and skipped garbage): where the next read starts.
    pub consumed: usize,
    /// Lines that did not parse, and overlong runs without a newline.
    pub bad_lines: u64,
}

/// Parses the complete lines of `buf`; a trailing line without its newline is left
/// unconsumed unless it is already longer than any real line.
pub fn parse_chunk(buf: &[u8]) -> ParsedChunk {
    let mut parsed = ParsedChunk::default();
    let complete = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    for line in buf[..complete].split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        match std::str::from_utf8(line).ok().and_then(parse_line) {
            Some(symbol) => parsed.symbols.push(symbol),
            None => parsed.bad_lines += 1,
        }
    }
    parsed.consumed = complete;
    if buf.len() - complete > MAX_LINE {
        parsed.consumed = buf.len();
        parsed.bad_lines += 1;
    }
    parsed
}

/// Reads a perf map incrementally.
#[derive(Debug)]
pub struct PerfMapReader {
    path: PathBuf,
    /// File offset just past the last complete line read.
    offset: u64,
    bad_lines: u64,
}

impl PerfMapReader {
    pub fn new(path: PathBuf) -> Self {
        PerfMapReader { path, offset: 0, bad_lines: 0 }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lines that did not parse so far.
    pub fn bad_lines(&self) -> u64 {
        self.bad_lines
    }

    /// The symbols of the lines completed since the last call, in file order (oldest first).
    pub fn read_new(&mut self) -> Result<Vec<JitSymbol>> {
        let context = || format!("reading {}", self.path.display());
        let mut file = File::open(&self.path).map_err(|e| Error::io(context(), e))?;
        let len = file.metadata().map_err(|e| Error::io(context(), e))?.len();
        if len < self.offset {
            // Shorter than what we read: a new file under the same name (the pid was reused
            // by another VM). Start over; its entries are newer and win over the old ones.
            self.offset = 0;
        }
        file.seek(SeekFrom::Start(self.offset)).map_err(|e| Error::io(context(), e))?;
        let mut buf = Vec::new();
        match file.read_to_end(&mut buf) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(context(), e)),
        }
        let parsed = parse_chunk(&buf);
        self.offset += parsed.consumed as u64;
        self.bad_lines += parsed.bad_lines;
        Ok(parsed.symbols)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sym(start: u64, size: u64, name: &str) -> JitSymbol {
        JitSymbol { start, size, name: name.to_owned() }
    }

    #[test]
    fn parses_lines_as_otp_writes_them() {
        assert_eq!(parse_line("0x7f5f68bc1530 120 $t:loop/0"), Some(sym(0x7f5f68bc1530, 0x120, "t:loop/0")));
        assert_eq!(
            parse_line("0x7f031d304000 68 $global::apply_fun_shared"),
            Some(sym(0x7f031d304000, 0x68, "global::apply_fun_shared"))
        );
        assert_eq!(
            parse_line("0x7f030f41c8f0 30 $lists:keyfind/3-CodeInfoPrologue"),
            Some(sym(0x7f030f41c8f0, 0x30, "lists:keyfind/3-CodeInfoPrologue"))
        );
        // Quoted atoms keep their quotes, and may hold spaces.
        assert_eq!(
            parse_line("0x7f031d30aa00 50 $erl_init:'-restart/0-fun-0-'/0"),
            Some(sym(0x7f031d30aa00, 0x50, "erl_init:'-restart/0-fun-0-'/0"))
        );
        assert_eq!(parse_line("0x10 8 $m:'a b'/1"), Some(sym(0x10, 8, "m:'a b'/1")));
        // Without the 0x prefix and the $ marker (other writers of perf maps).
        assert_eq!(parse_line("1000 1f native_fn"), Some(sym(0x1000, 0x1f, "native_fn")));
        assert_eq!(parse_line("0x1000 10 $m:f/0\r"), Some(sym(0x1000, 0x10, "m:f/0")));
    }

    #[test]
    fn rejects_what_is_not_a_perf_map_line() {
        for bad in [
            "",
            "0x1000",
            "0x1000 10",
            "0x1000 10 ",
            "0x1000 10 $",
            "zz 10 $m:f/0",
            "0x1000 +10 $m:f/0",
            "0x 10 $m:f/0",
            "0x10000000000000000 1 $m:f/0",
        ] {
            assert_eq!(parse_line(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_chunk_stops_at_its_last_complete_line() {
        let parsed = parse_chunk(b"0x10 8 $a:a/0\ngarbage\n0x20 8 $b:b/0\n0x30 8 $c:c");
        assert_eq!(parsed.symbols, [sym(0x10, 8, "a:a/0"), sym(0x20, 8, "b:b/0")]);
        assert_eq!(parsed.bad_lines, 1);
        assert_eq!(parsed.consumed, "0x10 8 $a:a/0\ngarbage\n0x20 8 $b:b/0\n".len());
        assert_eq!(parse_chunk(b"0x30 8 $c:c").consumed, 0, "nothing complete yet");
        let overlong = vec![b'x'; MAX_LINE + 1];
        let parsed = parse_chunk(&overlong);
        assert_eq!((parsed.consumed, parsed.bad_lines), (overlong.len(), 1), "garbage without newline is skipped");
    }

    /// A scratch file that removes itself.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            let path = std::env::temp_dir().join(format!("beam_probes-{tag}-{}.map", std::process::id()));
            let _ = std::fs::remove_file(&path);
            Scratch(path)
        }

        fn append(&self, text: &str) {
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.0).unwrap();
            f.write_all(text.as_bytes()).unwrap();
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn reads_only_what_was_appended_and_waits_for_partial_lines() {
        let file = Scratch::new("incremental");
        let mut reader = PerfMapReader::new(file.0.clone());
        assert!(reader.read_new().is_err(), "no file yet");
        file.append("0x1000 10 $a:a/0\n0x2000 20 $b:");
        assert_eq!(reader.read_new().unwrap(), [sym(0x1000, 0x10, "a:a/0")]);
        assert_eq!(reader.read_new().unwrap(), [], "nothing new, the partial line waits");
        file.append("b/1\n0x3000 30 $c:c/2\n");
        assert_eq!(reader.read_new().unwrap(), [sym(0x2000, 0x20, "b:b/1"), sym(0x3000, 0x30, "c:c/2")]);
        file.append("not a line\n");
        assert_eq!(reader.read_new().unwrap(), []);
        assert_eq!(reader.bad_lines(), 1);
    }

    #[test]
    fn a_shorter_file_is_read_from_the_start() {
        let file = Scratch::new("replaced");
        file.append("0x1000 10 $a:a/0\n0x2000 10 $b:b/0\n");
        let mut reader = PerfMapReader::new(file.0.clone());
        assert_eq!(reader.read_new().unwrap().len(), 2);
        std::fs::write(&file.0, "0x5000 10 $z:z/0\n").unwrap();
        assert_eq!(reader.read_new().unwrap(), [sym(0x5000, 0x10, "z:z/0")]);
    }

    #[test]
    fn path_is_under_the_targets_root() {
        assert_eq!(perf_map_path(Path::new("/proc/42/root"), 7), PathBuf::from("/proc/42/root/tmp/perf-7.map"));
    }

    // Fuzzing on stable Rust: arbitrary bytes and lines never panic the parser, what it takes
    // is whole lines, and every line OTP could write reads back exactly.
    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 3000, failure_persistence: None, ..Default::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096)) {
            let parsed = parse_chunk(&buf);
            proptest::prop_assert!(parsed.consumed <= buf.len());
            proptest::prop_assert!(parsed.consumed == buf.len() || parsed.consumed == 0 || buf[parsed.consumed - 1] == b'\n');
        }

        #[test]
        fn written_lines_read_back(lines in proptest::collection::vec((proptest::prelude::any::<u64>(), proptest::prelude::any::<u32>(), "[a-zA-Z_][a-zA-Z0-9_ ':.@/-]{0,60}"), 0..50)) {
            let text: String = lines.iter().map(|(start, size, name)| format!("{start:#x} {size:x} ${name}\n")).collect();
            let parsed = parse_chunk(text.as_bytes());
            proptest::prop_assert_eq!(parsed.consumed, text.len());
            proptest::prop_assert_eq!(parsed.bad_lines, 0);
            let want: Vec<JitSymbol> = lines.iter().map(|(start, size, name)| sym(*start, u64::from(*size), name)).collect();
            proptest::prop_assert_eq!(parsed.symbols, want);
        }
    }
}
