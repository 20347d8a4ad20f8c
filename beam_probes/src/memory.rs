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

/// Page size of the cache below.
const PAGE: u64 = 4096;

/// Reads of many small, scattered things (the elements of a message queue, dictionary terms)
/// through whole pages, each read once per snapshot: a queue of 85,000 messages is a few
/// thousand reads instead of 85,000. Bounded: past `max_pages` the cache starts over, and a
/// page that cannot be read is remembered as such.
pub struct PageCache {
    mem: RemoteMemory,
    pages: std::collections::HashMap<u64, Option<Box<[u8]>>>,
    max_pages: usize,
    /// Page reads done (for the cost report).
    pub reads: u64,
}

impl PageCache {
    pub fn new(mem: RemoteMemory, max_pages: usize) -> PageCache {
        PageCache { mem, pages: std::collections::HashMap::new(), max_pages: max_pages.max(1), reads: 0 }
    }

    fn page(&mut self, number: u64) -> Option<&[u8]> {
        if !self.pages.contains_key(&number) {
            if self.pages.len() >= self.max_pages {
                self.pages.clear();
            }
            self.reads += 1;
            let page = self.mem.read_vec(number * PAGE, PAGE as usize, "page").ok().map(Vec::into_boxed_slice);
            self.pages.insert(number, page);
        }
        self.pages.get(&number).and_then(|p| p.as_deref())
    }

    /// `buf.len()` bytes at `addr`, across pages; `None` when any of them cannot be read.
    pub fn read(&mut self, addr: u64, buf: &mut [u8]) -> Option<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = addr.checked_add(done as u64)?;
            let (number, offset) = (at / PAGE, (at % PAGE) as usize);
            let page = self.page(number)?;
            let n = (PAGE as usize - offset).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&page[offset..offset + n]);
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

    /// Forgets every page: the next snapshot reads them afresh.
    pub fn clear(&mut self) {
        self.pages.clear();
    }
}
