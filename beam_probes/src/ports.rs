//! The port table (`erts_port`) read from outside while the VM runs: for each port its id,
//! name, driver, connected process, bytes queued in the driver's queue, whether it is busy,
//! bytes in and out and OS pid; for sockets of the inet drivers, the socket as the kernel
//! sees it (addresses, TCP state, the kernel's send and receive queues), found through the
//! descriptor number the driver keeps and the VM's `/proc/PID/fd` and `/proc/PID/net`.
//!
//! Only metadata is read: never data queued in a port or buffered by a driver. Like the
//! process snapshot, nothing is stopped; every record is validated (its id must be a port id
//! of the slot it came from, counts must be sane, every pointer readable, and the slot must
//! still hold the same port once the record is read) and torn records are skipped and counted.

use std::collections::HashMap;
use std::io::BufRead;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::builds::{BuildTable, PortLayout};
use crate::error::{Error, Result};
use crate::memory::PageCache;
use crate::proctab::ProcessTable;
use crate::snapshot::{read_many, u32_at, u64_at};
use crate::terms::{Pid, PidDecoder, PidIndex, PtabIndexing};

/// Ports read per `process_vm_readv` call.
const BATCH: usize = 512;
/// Slots of the port table read per call.
const SLOT_CHUNK: u64 = 64 * 1024;
/// Longest name kept: a spawned command can be long; the rest is cut.
const MAX_NAME: usize = 1024;
/// Longest driver name (drivers are named like atoms: at most 255 characters).
const MAX_DRIVER_NAME: usize = 256;
/// Counts beyond these are a torn read, not a real port.
const MAX_QUEUE_BYTES: u64 = 1 << 48;
const MAX_IO_BYTES: u64 = 1 << 56;
/// Linux's PID_MAX_LIMIT: no OS pid is above it.
const MAX_OS_PID: i64 = 1 << 22;
/// Bytes the string cache keeps.
const CACHE_BYTES: usize = 1 << 20;

/// A socket of an inet driver port, as the kernel reports it in `/proc/PID/net/*`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Socket {
    /// The descriptor number in the VM (`inet_descriptor.s`).
    pub fd: i32,
    /// `tcp`, `tcp6`, `udp` or `udp6` (the `/proc/net` table it was found in); `None` when
    /// the descriptor is a socket none of them lists (SCTP, a UNIX socket).
    pub protocol: Option<&'static str>,
    /// The socket's inode (`socket:[N]`).
    pub inode: u64,
    /// `address:port` (IPv6 in brackets).
    pub local: Option<String>,
    /// The peer's address; `None` when unconnected (a listener, an unconnected UDP socket).
    pub peer: Option<String>,
    /// The TCP state (`ESTABLISHED`, `LISTEN`...); for UDP the kernel's (`CLOSE` unless
    /// connected).
    pub state: Option<&'static str>,
    /// Bytes in the kernel's send queue (`tx_queue`): data sent but not acknowledged by the
    /// peer, which grows when the peer does not read. For a listener, its backlog limit.
    pub send_queue: u64,
    /// Bytes in the kernel's receive queue (`rx_queue`): received, not yet read by the VM.
    /// For a listener, connections waiting to be accepted.
    pub recv_queue: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PortRecord {
    /// Raw port id term.
    #[serde(skip)]
    pub term: u64,
    /// As Erlang prints it: `#Port<0.N>`.
    pub id: String,
    pub number: u64,
    /// `erlang:port_info(P, name)`: the driver's name, or the command spawned (cut at
    /// [`MAX_NAME`] bytes).
    pub name: String,
    /// The driver's name (`tcp_inet`, `spawn`, `fd`...).
    pub driver: String,
    /// `port_info(P, connected)`: the owning process.
    pub connected: String,
    #[serde(skip)]
    pub connected_pid: Option<Pid>,
    /// Its registered name, if it has one.
    pub connected_name: Option<String>,
    /// `port_info(P, queue_size)`: bytes in the driver's queue (for a socket: sent by the
    /// VM, not yet accepted by the kernel).
    pub queue_bytes: u64,
    /// The driver said it is busy (`set_busy_port`): senders to it are suspended.
    pub busy: bool,
    /// The port's task queue is over its limit (`ERTS_PTS_FLG_BUSY_PORT_Q`).
    pub busy_queue: bool,
    /// `port_info(P, input | output)`: bytes read from and written to the port.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// `port_info(P, os_pid)`: the OS process of a spawned port.
    pub os_pid: Option<i64>,
    /// The socket behind an inet driver's port, when it could be found.
    pub socket: Option<Socket>,
}

#[derive(Debug, Default, Serialize)]
pub struct PortSnapshot {
    pub ports: Vec<PortRecord>,
    /// Slots of the port table.
    pub slots: u64,
    /// Records skipped because they changed or vanished while being read.
    pub torn: u64,
    /// Ports left out because they are closing or not yet open (`port_info` says
    /// `undefined` for them too).
    pub closing: u64,
    /// Inet ports whose socket could not be found (closed meanwhile, or its descriptor
    /// not readable from here).
    pub sockets_unresolved: u64,
    #[serde(skip)]
    pub elapsed: Duration,
}

/// The span of `Port` a record needs.
fn record_span(p: &PortLayout) -> u64 {
    let words = [p.id, p.connected, p.bytes_in, p.bytes_out, p.ioq_size, p.name, p.drv_ptr, p.drv_data, p.os_pid];
    let words32 = [p.sched_flags, p.state];
    words.into_iter().map(|o| o + 8).chain(words32.into_iter().map(|o| o + 4)).max().unwrap_or(0)
}

/// The decoder of port ids: the build's port id layout with the port table's own index
/// masks (read from the VM when the layout needs them).
fn port_id_decoder(t: &BuildTable, ports: &ProcessTable<'_>) -> Result<PidDecoder> {
    let indexing = match t.port_id.index {
        PidIndex::PixData => ports.pid_encoder()?.indexing,
        PidIndex::Above { .. } => PtabIndexing::default(),
    };
    Ok(PidDecoder::new(t.port_id, indexing))
}

/// Every open port of a VM now, the fullest queues first.
pub fn of(target: &crate::BeamTarget) -> Result<PortSnapshot> {
    target.require_port_table()?;
    let mut snap = ports(&target.process_table(), target.port_table_address().unwrap_or(0))?;
    snap.ports.sort_by(|a, b| b.queue_bytes.cmp(&a.queue_bytes).then(a.number.cmp(&b.number)));
    Ok(snap)
}

/// Takes a snapshot of every open port. `port_table` is the runtime address of the port
/// table (`BeamTarget::port_table_address`); `table` reads the process table (connected
/// processes' names).
pub fn ports(table: &ProcessTable<'_>, port_table: u64) -> Result<PortSnapshot> {
    let started = Instant::now();
    let t = table.build();
    let p = &t.port;
    let mem = table.memory();
    // The port table is an ErtsPTab like the process table: the same reader serves.
    let ptab = ProcessTable::new(mem, t, port_table, 0);
    let (tab, max) = ptab.slots().map_err(|e| Error::Corrupt(format!("port table: {e}")))?;
    let ids = port_id_decoder(t, &ptab)?;
    let pids = table.pid_decoder()?;
    let span = record_span(p) as usize;
    let mut snap = PortSnapshot { slots: u64::from(max), ..Default::default() };
    let mut cache = PageCache::new(mem, CACHE_BYTES);
    let mut drivers: HashMap<u64, Option<String>> = HashMap::new();
    let mut names: HashMap<u64, Option<String>> = HashMap::new();
    let mut sockets = SocketTables::new(mem.pid());
    let mut buf = vec![0u8; BATCH * span];

    let mut slot = 0u64;
    while slot < u64::from(max) {
        let n = SLOT_CHUNK.min(u64::from(max) - slot);
        let ptrs = mem.read_vec(tab + slot * 8, n as usize * 8, "port table")?;
        let live: Vec<(u64, u64)> = ptrs
            .chunks_exact(8)
            .enumerate()
            .map(|(i, c)| (slot + i as u64, u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))))
            .filter(|(_, ptr)| *ptr != 0)
            .collect();
        for batch in live.chunks(BATCH) {
            let ranges: Vec<(u64, usize)> = batch.iter().map(|(_, ptr)| (*ptr, span)).collect();
            let ok = read_many(&mem, &ranges, &mut buf);
            let mut records = Vec::new();
            for (i, &(ix, addr)) in batch.iter().enumerate() {
                let rec = &buf[i * span..][..span];
                match ok[i].then(|| decode(t, &ids, &pids, rec, ix)).flatten() {
                    Some(Decoded::Closing) => snap.closing += 1,
                    Some(Decoded::Open(mut r)) => {
                        let strings = read_strings(p, &mut cache, &mut drivers, rec);
                        let Some((name, driver)) = strings else {
                            snap.torn += 1;
                            continue;
                        };
                        r.name = name;
                        r.driver = driver;
                        records.push((ix, addr, r, u64_at(rec, p.drv_data)));
                    }
                    None => snap.torn += 1,
                }
            }
            // The slot must still hold the same port: one freed while it was read may have
            // had its name or driver pointers reused.
            let again: Vec<(u64, usize)> = records.iter().flat_map(|(ix, addr, _, _)| [(tab + ix * 8, 8), (addr + p.id, 8)]).collect();
            let mut again_buf = vec![0u8; again.len() * 8];
            let again_ok = read_many(&mem, &again, &mut again_buf);
            for (k, (_, addr, mut r, drv_data)) in records.into_iter().enumerate() {
                let still = again_ok[2 * k]
                    && again_ok[2 * k + 1]
                    && u64_at(&again_buf, 16 * k as u64) == addr
                    && u64_at(&again_buf, 16 * k as u64 + 8) == r.term;
                if !still {
                    snap.torn += 1;
                    continue;
                }
                if let Some(pid) = r.connected_pid {
                    r.connected_name = names.entry(pid.term).or_insert_with(|| table.registered_name(pid.term).ok().flatten()).clone();
                }
                if p.inet_drivers.contains(&r.driver.as_str()) {
                    r.socket = inet_socket(p, &mut cache, addr, drv_data).and_then(|fd| sockets.find(fd));
                    if r.socket.is_none() {
                        snap.sockets_unresolved += 1;
                    }
                }
                snap.ports.push(r);
            }
        }
        slot += n;
    }
    snap.elapsed = started.elapsed();
    Ok(snap)
}

enum Decoded {
    Open(PortRecord),
    Closing,
}

/// Decodes one `Port` image read from table slot `ix`; `None` when it does not hold together.
fn decode(t: &BuildTable, ids: &PidDecoder, pids: &PidDecoder, rec: &[u8], ix: u64) -> Option<Decoded> {
    let p = &t.port;
    let term = u64_at(rec, p.id);
    let id = ids.decode(term)?;
    if ids.table_index(term) != ix {
        return None;
    }
    if u32_at(rec, p.state) & p.not_alive != 0 {
        return Some(Decoded::Closing);
    }
    let (bytes_in, bytes_out, queue) = (u64_at(rec, p.bytes_in), u64_at(rec, p.bytes_out), u64_at(rec, p.ioq_size));
    let os_pid = u64_at(rec, p.os_pid) as i64;
    if bytes_in > MAX_IO_BYTES || bytes_out > MAX_IO_BYTES || queue > MAX_QUEUE_BYTES || !(-1..=MAX_OS_PID).contains(&os_pid) {
        return None;
    }
    // An open port is always connected to a local process.
    let connected = pids.decode(u64_at(rec, p.connected))?;
    let flags = u32_at(rec, p.sched_flags);
    Some(Decoded::Open(PortRecord {
        term,
        id: format!("#Port<0.{}>", id.number),
        number: id.number,
        name: String::new(),
        driver: String::new(),
        connected: connected.to_string(),
        connected_pid: Some(connected),
        connected_name: None,
        queue_bytes: queue,
        busy: flags & p.busy_port != 0,
        busy_queue: flags & p.busy_port_queue != 0,
        bytes_in,
        bytes_out,
        os_pid: (os_pid >= 0).then_some(os_pid),
        socket: None,
    }))
}

/// The port's name and its driver's name (cached per driver), or `None` when a pointer does
/// not lead to a string.
fn read_strings(p: &PortLayout, cache: &mut PageCache, drivers: &mut HashMap<u64, Option<String>>, rec: &[u8]) -> Option<(String, String)> {
    let name = cstr(cache, u64_at(rec, p.name), MAX_NAME, true)?;
    let drv = u64_at(rec, p.drv_ptr);
    if drv == 0 || !drv.is_multiple_of(8) {
        return None;
    }
    let driver = drivers
        .entry(drv)
        .or_insert_with(|| cache.u64(drv + p.driver_name).and_then(|s| cstr(cache, s, MAX_DRIVER_NAME, false)))
        .clone()?;
    Some((name, driver))
}

/// A NUL-terminated string at `addr`, read page by page (it may end just before an unmapped
/// page). Past `max` bytes it is cut when `cut` (with `…`), else rejected; `None` when
/// unreadable or not UTF-8 (lossy: a command line may be in any encoding).
fn cstr(cache: &mut PageCache, addr: u64, max: usize, cut: bool) -> Option<String> {
    if addr == 0 {
        return None;
    }
    let mut bytes = Vec::new();
    while bytes.len() < max {
        let at = addr.checked_add(bytes.len() as u64)?;
        let chunk = ((4096 - at % 4096) as usize).min(max - bytes.len());
        let mut b = vec![0u8; chunk];
        cache.read(at, &mut b)?;
        if let Some(end) = b.iter().position(|&c| c == 0) {
            bytes.extend_from_slice(&b[..end]);
            return Some(String::from_utf8_lossy(&bytes).into_owned());
        }
        bytes.extend_from_slice(&b);
    }
    cut.then(|| format!("{}…", String::from_utf8_lossy(&bytes)))
}

/// The socket descriptor of an inet driver's port: its descriptor must point back at the
/// port, and the socket must be open.
fn inet_socket(p: &PortLayout, cache: &mut PageCache, port: u64, drv_data: u64) -> Option<i32> {
    if drv_data == 0 || !drv_data.is_multiple_of(8) {
        return None;
    }
    let back = cache.u64(drv_data + p.inet_port)?;
    let fd = cache.u32(drv_data + p.inet_socket)? as i32;
    (back == port && fd >= 0).then_some(fd)
}

/// The VM's sockets as the kernel lists them in its network namespace (`/proc/PID/net/*`),
/// read once per snapshot, when the first socket is looked up.
struct SocketTables {
    pid: u32,
    by_inode: Option<HashMap<u64, Socket>>,
}

/// The kernel's TCP states (include/net/tcp_states.h), numbered from 1.
const TCP_STATES: [&str; 12] = [
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "NEW_SYN_RECV",
];

/// Lines of `/proc/net/*` read at most, all tables together (a host with a million sockets
/// is read up to here; sockets beyond stay unresolved).
const MAX_NET_LINES: usize = 4_000_000;

impl SocketTables {
    fn new(pid: u32) -> Self {
        SocketTables { pid, by_inode: None }
    }

    fn find(&mut self, fd: i32) -> Option<Socket> {
        let link = std::fs::read_link(format!("/proc/{}/fd/{fd}", self.pid)).ok()?;
        let inode: u64 = link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()?;
        let pid = self.pid;
        let table = self.by_inode.get_or_insert_with(|| read_net_tables(pid));
        Some(match table.get(&inode) {
            Some(s) => Socket { fd, ..s.clone() },
            None => Socket { fd, protocol: None, inode, local: None, peer: None, state: None, send_queue: 0, recv_queue: 0 },
        })
    }
}

fn read_net_tables(pid: u32) -> HashMap<u64, Socket> {
    let mut out = HashMap::new();
    let mut lines = 0;
    for protocol in ["tcp", "tcp6", "udp", "udp6"] {
        let Ok(file) = std::fs::File::open(format!("/proc/{pid}/net/{protocol}")) else { continue };
        for line in std::io::BufReader::new(file).lines().skip(1) {
            let Ok(line) = line else { break };
            lines += 1;
            if lines > MAX_NET_LINES {
                return out;
            }
            if let Some(s) = parse_net_line(protocol, &line) {
                out.insert(s.inode, s);
            }
        }
    }
    out
}

/// One line of `/proc/net/{tcp,tcp6,udp,udp6}`:
/// `sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...`.
fn parse_net_line(protocol: &'static str, line: &str) -> Option<Socket> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 10 {
        return None;
    }
    let local = parse_address(f[1])?;
    let remote = parse_address(f[2])?;
    let st = usize::from_str_radix(f[3], 16).ok()?;
    let (tx, rx) = f[4].split_once(':')?;
    let inode = f[9].parse().ok()?;
    let unconnected = remote.ip().is_unspecified() && remote.port() == 0;
    Some(Socket {
        fd: -1,
        protocol: Some(protocol),
        inode,
        local: Some(local.to_string()),
        peer: (!unconnected).then(|| remote.to_string()),
        state: st.checked_sub(1).and_then(|i| TCP_STATES.get(i)).copied(),
        send_queue: u64::from_str_radix(tx, 16).ok()?,
        recv_queue: u64::from_str_radix(rx, 16).ok()?,
    })
}

/// `0100007F:1F90` (IPv4: one 32-bit word in host order) or 32 hex digits (IPv6: four such
/// words) and a port in hex.
fn parse_address(s: &str) -> Option<std::net::SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Option<Vec<[u8; 4]>> =
        (0..addr.len() / 8).map(|i| u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok().map(u32::to_le_bytes)).collect();
    let bytes: Vec<u8> = words?.concat();
    let ip = match (addr.len(), bytes.len()) {
        (8, 4) => std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        (32, 16) => {
            let v6 = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?);
            // A v4 socket on a dual-stack listener reads as ::ffff:a.b.c.d: show it as v4.
            v6.to_ipv4_mapped().map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4)
        }
        _ => return None,
    };
    Some(std::net::SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builds::{DEBIAN12_OTP25, DEBIAN13_OTP27};

    #[test]
    fn parses_proc_net_lines() {
        let l = "   1: 0100007F:A1B2 0100007F:0D3D 01 0001E240:00000010 01:00000014 00000000     0        0 424242 1 0000000000000000 20 4 30 10 -1";
        let s = parse_net_line("tcp", l).unwrap();
        assert_eq!(s.local.as_deref(), Some("127.0.0.1:41394"));
        assert_eq!(s.peer.as_deref(), Some("127.0.0.1:3389"));
        assert_eq!(s.state, Some("ESTABLISHED"));
        assert_eq!((s.send_queue, s.recv_queue, s.inode), (123456, 16, 424242));
        let l = "   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 100 0 0 10 0";
        let s = parse_net_line("tcp6", l).unwrap();
        assert_eq!(s.local.as_deref(), Some("[::]:8080"));
        assert_eq!(s.peer, None);
        assert_eq!(s.state, Some("LISTEN"));
        let l = "   0: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 78 1";
        let s = parse_net_line("tcp6", l).unwrap();
        assert_eq!(s.local.as_deref(), Some("127.0.0.1:8080"), "a v4-mapped address reads as v4");
        assert_eq!(s.peer.as_deref(), Some("127.0.0.1:54321"));
        assert!(parse_net_line("tcp", "  sl  local_address rem_address   st").is_none());
    }

    #[test]
    fn decodes_port_ids_like_erlang_prints_them() {
        // OTP 25: #Port<0.5> in slot 5: (5 << 32) | (5 << 4) | 7.
        let d = PidDecoder::new(DEBIAN12_OTP25.port_id, PtabIndexing::default());
        let term = (5u64 << 32) | (5 << 4) | 7;
        assert_eq!(d.decode(term).map(|p| p.number), Some(5));
        assert_eq!(d.table_index(term), 5);
        assert!(d.decode((5u64 << 32) | (5 << 4) | 3).is_none(), "a pid is not a port");
        // OTP 27: the default port table (65,536 slots, 8 per cache line) permutes the low
        // bits of the number into the slot index.
        let ix = PtabIndexing { pix_mask: (1 << 16) - 1, pix_cl_mask: (1 << 13) - 1, pix_cl_shift: 3, pix_cli_mask: 7, pix_cli_shift: 13 };
        let d = PidDecoder::new(DEBIAN13_OTP27.port_id, ix);
        for n in [0u64, 1, 5, 8191, 8192, 70_000, (1 << 40) + 3] {
            let term = d.encode(n, 0).unwrap();
            assert_eq!(term & 0xf, 7);
            assert_eq!(d.decode(term).map(|p| (p.number, p.serial)), Some((n, 0)));
        }
    }
}
