//! Reading recordings: the header first (bad magic or an unknown version is refused with a
//! clear error), then block by block. A corrupt block (its checksum, its compression or an
//! entry in it) is reported with where it is and skipped: reading goes on at the next block,
//! found by its magic when the damage hit a block's header. A file cut short ends with an
//! error saying so; everything intact before stays usable.

use std::fmt;
use std::io::Read;
use std::path::Path;

use super::format::{BLOCK_MAGIC, Entry, MAGIC, MAX_BLOCK, MAX_ENTRY, MAX_META, Meta, VERSION};

#[derive(Debug)]
pub enum ReadError {
    Io(std::io::Error),
    /// Not a recording (wrong magic).
    NotARecording,
    /// A recording of a format version this scope-probe does not read.
    Version(u16),
    /// The header is cut short or its meta is not what a recording says.
    Header(String),
    /// A block at this byte offset is cut short or corrupt; `resumed`: the reading goes on
    /// after it.
    Block {
        offset: u64,
        reason: String,
        resumed: bool,
    },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::NotARecording => {
                write!(f, "not a scope-probe recording (it does not start with {:?})", String::from_utf8_lossy(MAGIC))
            }
            ReadError::Version(v) => write!(f, "a recording of format version {v}; this scope-probe reads version {VERSION}"),
            ReadError::Header(why) => write!(f, "its header is damaged: {why}"),
            ReadError::Block { offset, reason, resumed: true } => {
                write!(f, "damaged at byte {offset}: {reason} (skipped; the blocks around it are intact)")
            }
            ReadError::Block { offset, reason, resumed: false } => {
                write!(f, "damaged at byte {offset}: {reason} (what comes before is intact)")
            }
        }
    }
}

impl std::error::Error for ReadError {}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// A recording being read.
pub struct Reader<R: Read> {
    input: Carried<R>,
    pub meta: Meta,
    offset: u64,
    pending: std::vec::IntoIter<Entry>,
    done: bool,
}

impl Reader<std::io::BufReader<std::fs::File>> {
    pub fn open(path: &Path) -> Result<Self, ReadError> {
        let f = std::fs::File::open(path)?;
        Reader::new(std::io::BufReader::new(f))
    }
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` at a clean end of input before any byte.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> Result<bool, std::io::Error> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "cut short"));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

impl<R: Read> Reader<R> {
    pub fn new(mut input: R) -> Result<Self, ReadError> {
        let mut fixed = [0u8; 14];
        match read_full(&mut input, &mut fixed) {
            Ok(true) => {}
            Ok(false) => return Err(ReadError::NotARecording),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(if fixed.starts_with(&MAGIC[..fixed.len().min(8)]) {
                    ReadError::Header("cut short".into())
                } else {
                    ReadError::NotARecording
                });
            }
            Err(e) => return Err(e.into()),
        }
        if &fixed[..8] != MAGIC {
            return Err(ReadError::NotARecording);
        }
        let version = u16::from_le_bytes([fixed[8], fixed[9]]);
        if version != VERSION {
            return Err(ReadError::Version(version));
        }
        let len = u32::from_le_bytes(fixed[10..14].try_into().expect("4 bytes"));
        if len > MAX_META {
            return Err(ReadError::Header(format!("meta of {len} bytes")));
        }
        let mut json = vec![0u8; len as usize];
        if !matches!(read_full(&mut input, &mut json), Ok(true)) {
            return Err(ReadError::Header("cut short".into()));
        }
        let meta: Meta = serde_json::from_slice(&json).map_err(|e| ReadError::Header(e.to_string()))?;
        if meta.format != super::FORMAT_NAME {
            return Err(ReadError::Header(format!("it says it is a {:?}", meta.format)));
        }
        Ok(Reader {
            input: Carried { carry: Vec::new(), input },
            meta,
            offset: 14 + u64::from(len),
            pending: Vec::new().into_iter(),
            done: false,
        })
    }

    /// The next block's entries; `Ok(None)` at the end.
    fn next_block(&mut self) -> Result<Option<Vec<Entry>>, ReadError> {
        let at = self.offset;
        let end = |reason: &str| ReadError::Block { offset: at, reason: reason.into(), resumed: false };
        let mut head = [0u8; 16];
        match read_full(&mut self.input, &mut head) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(end("a block cut short (the recorder stopped while writing it?)"));
            }
            Err(e) => return Err(e.into()),
        }
        if &head[..4] != BLOCK_MAGIC {
            return Err(self.resync(at, &head));
        }
        let word = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().expect("4 bytes"));
        let (raw_len, packed_len, crc) = (word(4), word(8), word(12));
        if raw_len > MAX_BLOCK || packed_len > MAX_BLOCK {
            // The header is damaged: its lengths cannot be trusted; look for the next block.
            return Err(self.resync(at, &head));
        }
        let mut packed = vec![0u8; packed_len as usize];
        if !matches!(read_full(&mut self.input, &mut packed), Ok(true)) && packed_len > 0 {
            return Err(end("a block cut short (the recorder stopped while writing it?)"));
        }
        self.offset += 16 + u64::from(packed_len);
        let skipped = |reason: String| ReadError::Block { offset: at, reason, resumed: true };
        if crc32fast::hash(&packed) != crc {
            return Err(skipped("its checksum does not match".into()));
        }
        let raw = zstd::bulk::decompress(&packed, raw_len as usize).map_err(|e| skipped(format!("it does not decompress: {e}")))?;
        if raw.len() != raw_len as usize {
            return Err(skipped("it decompresses to the wrong length".into()));
        }
        let mut entries = Vec::new();
        let mut rest = &raw[..];
        while !rest.is_empty() {
            if rest.len() < 4 {
                return Err(skipped("an entry cut short".into()));
            }
            let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes"));
            if len > MAX_ENTRY || rest.len() < 4 + len as usize {
                return Err(skipped(format!("an entry of {len} bytes")));
            }
            let entry: Entry =
                postcard::from_bytes(&rest[4..4 + len as usize]).map_err(|e| skipped(format!("an entry does not decode: {e}")))?;
            entries.push(entry);
            rest = &rest[4 + len as usize..];
        }
        Ok(Some(entries))
    }

    /// After bytes that are not a block's start (`head`, read at `at`): looks for the next
    /// block's magic and stops before it, so that the next read starts there.
    fn resync(&mut self, at: u64, head: &[u8; 16]) -> ReadError {
        // The magic may start inside what was read already.
        let mut window: Vec<u8> = head[1..].to_vec();
        let mut skipped = 1u64;
        loop {
            if let Some(i) = window.windows(4).position(|w| w == BLOCK_MAGIC) {
                skipped += i as u64;
                let mut carry = window.split_off(i);
                carry.extend_from_slice(&self.input.carry);
                self.input.carry = carry;
                self.offset = at + skipped;
                return ReadError::Block { offset: at, reason: format!("{skipped} bytes that are not a block"), resumed: true };
            }
            // Keep the last three bytes: a magic may straddle reads.
            let keep = window.len().saturating_sub(3);
            skipped += keep as u64;
            window.drain(..keep);
            let mut buf = [0u8; 4096];
            match self.input.read(&mut buf) {
                Ok(0) | Err(_) => {
                    self.done = true;
                    return ReadError::Block { offset: at, reason: "bytes that are not a block, to the end".into(), resumed: false };
                }
                Ok(n) => window.extend_from_slice(&buf[..n]),
            }
        }
    }
}

impl<R: Read> Iterator for Reader<R> {
    type Item = Result<Entry, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(e) = self.pending.next() {
                return Some(Ok(e));
            }
            if self.done {
                return None;
            }
            match self.next_block() {
                Ok(Some(entries)) => self.pending = entries.into_iter(),
                Ok(None) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    if !matches!(e, ReadError::Block { resumed: true, .. }) {
                        self.done = true;
                    }
                    return Some(Err(e));
                }
            }
        }
    }
}

/// The input, with bytes read ahead while looking for a block given back first.
struct Carried<R> {
    carry: Vec<u8>,
    input: R,
}

impl<R: Read> Read for Carried<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.carry.is_empty() {
            return self.input.read(buf);
        }
        let n = buf.len().min(self.carry.len());
        buf[..n].copy_from_slice(&self.carry[..n]);
        self.carry.drain(..n);
        Ok(n)
    }
}
