//! Reads of the target's memory from outside with `process_vm_readv`: no trap in the target,
//! no stop, and a fault on a bad pointer is an error here, never in the VM.

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy)]
pub struct RemoteMemory {
    pid: u32,
}

impl RemoteMemory {
    pub fn new(pid: u32) -> Self {
        RemoteMemory { pid }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Fills `buf` from `addr`; a short read is an error (the target changed under us).
    pub fn read_into(&self, addr: u64, buf: &mut [u8], what: &'static str) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: buf.len() };
        // SAFETY: the local iovec points at `buf`, which is valid for writes of its length;
        // the remote one is only interpreted by the kernel in the other address space.
        let n = unsafe { libc::process_vm_readv(self.pid as libc::pid_t, &local, 1, &remote, 1, 0) };
        if n < 0 {
            return Err(Error::Memory { what, addr, source: std::io::Error::last_os_error() });
        }
        if n as usize != buf.len() {
            return Err(Error::Memory {
                what,
                addr,
                source: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short read"),
            });
        }
        Ok(())
    }

    pub fn read_vec(&self, addr: u64, len: usize, what: &'static str) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.read_into(addr, &mut buf, what)?;
        Ok(buf)
    }

    pub fn read_u64(&self, addr: u64, what: &'static str) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read_into(addr, &mut b, what)?;
        Ok(u64::from_le_bytes(b))
    }

    pub fn read_u32(&self, addr: u64, what: &'static str) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read_into(addr, &mut b, what)?;
        Ok(u32::from_le_bytes(b))
    }

    pub fn read_u16(&self, addr: u64, what: &'static str) -> Result<u16> {
        let mut b = [0u8; 2];
        self.read_into(addr, &mut b, what)?;
        Ok(u16::from_le_bytes(b))
    }

    pub fn read_i16(&self, addr: u64, what: &'static str) -> Result<i16> {
        let mut b = [0u8; 2];
        self.read_into(addr, &mut b, what)?;
        Ok(i16::from_le_bytes(b))
    }

    /// A NUL-terminated string of at most `max` bytes.
    pub fn read_cstr(&self, addr: u64, max: usize, what: &'static str) -> Result<String> {
        let buf = self.read_vec(addr, max, what)?;
        let end = buf
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| Error::Corrupt(format!("{what}: no terminator within {max} bytes")))?;
        String::from_utf8(buf[..end].to_vec()).map_err(|_| Error::Corrupt(format!("{what}: not UTF-8")))
    }
}

/// Bytes of the cache's unit below (a page: consecutive messages share one read).
const LINE: u64 = 4096;

/// Reads of many small, scattered things (the elements of a message queue, dictionary terms)
/// through fixed lines of memory, each read once per snapshot: a queue of 85,000 messages is a
/// few thousand reads instead of 85,000. Bounded: past `max_lines` the cache starts over, and
/// a line that cannot be read is remembered as such.
pub struct PageCache {
    mem: RemoteMemory,
    /// Line number -> index into `data` (`u32::MAX`: unreadable).
    index: std::collections::HashMap<u64, u32, std::hash::BuildHasherDefault<LineHasher>>,
    data: Vec<u8>,
    max_lines: usize,
    /// Ranges read ahead by the caller (a process's dictionary and heap), served first.
    regions: Vec<(u64, Vec<u8>)>,
    /// Lines read (for the cost report).
    pub reads: u64,
}

/// Line numbers are already well spread: a multiply is hash enough (SipHash showed in
/// profiles of 100,000-process snapshots).
#[derive(Default)]
pub struct LineHasher(u64);

impl std::hash::Hasher for LineHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl PageCache {
    /// A cache of at most `max_bytes` of the target's memory.
    pub fn new(mem: RemoteMemory, max_bytes: usize) -> PageCache {
        PageCache {
            mem,
            index: Default::default(),
            data: Vec::new(),
            max_lines: (max_bytes / LINE as usize).max(1),
            regions: Vec::new(),
            reads: 0,
        }
    }

    fn line(&mut self, number: u64) -> Option<&[u8]> {
        let slot = match self.index.get(&number) {
            Some(&slot) => slot,
            None => {
                if self.index.len() >= self.max_lines {
                    self.clear();
                }
                self.reads += 1;
                let start = self.data.len();
                self.data.resize(start + LINE as usize, 0);
                let slot = match self.mem.read_into(number * LINE, &mut self.data[start..], "memory line") {
                    Ok(()) => (start / LINE as usize) as u32,
                    Err(_) => {
                        self.data.truncate(start);
                        u32::MAX
                    }
                };
                self.index.insert(number, slot);
                slot
            }
        };
        let at = slot as usize * LINE as usize;
        (slot != u32::MAX).then(|| &self.data[at..at + LINE as usize])
    }

    /// Ranges already read (replacing the previous ones): reads inside one are served from it.
    pub fn set_regions(&mut self, regions: Vec<(u64, Vec<u8>)>) {
        self.regions = regions;
    }

    /// `buf.len()` bytes at `addr`, across lines; `None` when any of them cannot be read.
    pub fn read(&mut self, addr: u64, buf: &mut [u8]) -> Option<()> {
        let end = addr.checked_add(buf.len() as u64)?;
        if let Some((start, bytes)) = self.regions.iter().find(|(s, b)| *s <= addr && end <= s + b.len() as u64) {
            let at = (addr - start) as usize;
            buf.copy_from_slice(&bytes[at..at + buf.len()]);
            return Some(());
        }
        let mut done = 0usize;
        while done < buf.len() {
            let at = addr.checked_add(done as u64)?;
            let (number, offset) = (at / LINE, (at % LINE) as usize);
            let line = self.line(number)?;
            let n = (LINE as usize - offset).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&line[offset..offset + n]);
            done += n;
        }
        Some(())
    }

    pub fn u64(&mut self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Some(u64::from_le_bytes(b))
    }

    pub fn u32(&mut self, addr: u64) -> Option<u32> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Some(u32::from_le_bytes(b))
    }

    /// Forgets every line: the next reads fetch them afresh.
    pub fn clear(&mut self) {
        self.index.clear();
        self.data.clear();
    }
}
