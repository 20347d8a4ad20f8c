//! The recording format's own tests: what is written reads back; files cut short, corrupted,
//! foreign or random give clear errors and keep what is intact; and, as a bounded fuzz run on
//! stable Rust, the reader never panics on arbitrary or mutated bytes and never yields an
//! entry that was not written.

use proptest::prelude::*;

use super::FORMAT_NAME;
use super::format::{self, Entry, Meta, Owner, ProcessRow, VmMeta, What};
use super::reader::{ReadError, Reader};

fn meta() -> Meta {
    Meta {
        format: FORMAT_NAME.into(),
        scope_probe: "test".into(),
        started_unix: 1.0e9,
        started_monotonic_ns: 1_000,
        vm: VmMeta { os_pid: 42, node: "a@b".into(), otp_release: "27".into(), erts_version: "15.2".into(), build: "b".into() },
        mode: "trace".into(),
        overhead_budget: 0.01,
        frequency: 99,
        gc_functions: vec!["erts_garbage_collect".into()],
        boot_id: String::new(),
        vms: Vec::new(),
        clock: None,
    }
}

/// A few entries of every kind, distinct from block to block.
fn entries(block: u64) -> Vec<Entry> {
    let ts = 1_000 + block * 1_000_000;
    vec![
        Entry::Name { id: block as u32, text: format!("m:f/{block}") },
        Entry::Pid { term: 0x100 + block, text: format!("<0.{block}.0>") },
        Entry::Event { ts, tid: 7, what: What::Send { from: 0x100, to: 0x100 + block } },
        Entry::Event { ts, tid: 7, what: What::SendToAlias { from: 0x100 + block, to: 0x100 } },
        Entry::Event { ts: ts + 1, tid: 7, what: What::Gc { pid: 0x100, duration_ns: 500 + block } },
        Entry::Sample {
            ts: ts + 2,
            tid: 8,
            owner: Owner::Process(0x100),
            frames: vec![0, block as u32],
            erlang_leaf: Some(0),
            native_leaf: None,
            scheduler: Some((0, 1)),
            working: true,
        },
        Entry::Table {
            ts: ts + 3,
            processes: vec![ProcessRow {
                pid: 0x100,
                name: Some(0),
                label: None,
                initial_call: None,
                ancestor: None,
                current: Some(0),
                message_queue_len: block,
                memory_bytes: 1000,
                heap_bytes: 800,
                reductions: 5,
                status: 0,
                system: false,
            }],
            waits: vec![(0x100, vec![0x101])],
        },
        Entry::Proc { ts: ts + 4, cpu: vec![(0, 1, 0.5)], resident_bytes: Some(1 << 20), run_queues: vec![0, 1] },
        Entry::Window { ts: ts + 5, capabilities: vec![0, 2], open: block % 2 == 0 },
        Entry::Finding { ts: ts + 6, json: "{\"kind\":\"mailbox_buildup\"}".into() },
        Entry::Lost { ts: ts + 7, entries: 3 },
    ]
}

/// A recording of `blocks` blocks, and the byte offset each block starts at.
fn file(blocks: u64) -> (Vec<u8>, Vec<usize>, Vec<Vec<Entry>>) {
    let mut bytes = format::header(&meta());
    let mut starts = Vec::new();
    let mut written = Vec::new();
    for b in 0..blocks {
        let e = entries(b);
        let mut raw = Vec::new();
        for x in &e {
            format::encode_entry(x, &mut raw);
        }
        starts.push(bytes.len());
        bytes.extend(format::block(&raw));
        written.push(e);
    }
    (bytes, starts, written)
}

/// Everything a reader yields: the entries and the errors.
fn read(bytes: &[u8]) -> Result<(Vec<Entry>, Vec<ReadError>), ReadError> {
    let reader = Reader::new(bytes)?;
    let (mut ok, mut errors) = (Vec::new(), Vec::new());
    for item in reader {
        match item {
            Ok(e) => ok.push(e),
            Err(e) => errors.push(e),
        }
        assert!(errors.len() <= 1 + bytes.len() / 16, "the reader keeps yielding errors");
    }
    Ok((ok, errors))
}

#[test]
fn what_is_written_reads_back() {
    let (bytes, _, written) = file(3);
    let (got, errors) = read(&bytes).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(got, written.concat());
    assert_eq!(Reader::new(&bytes[..]).unwrap().meta, meta());
}

#[test]
fn the_writer_writes_what_the_reader_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.scope");
    let mut w = super::writer::Writer::create(&path, meta()).unwrap();
    let written: Vec<Entry> = (0..50).flat_map(entries).collect();
    for chunk in written.chunks(7) {
        w.push(chunk.to_vec());
    }
    w.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let (got, errors) = read(&bytes).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(got, written);
}

#[test]
fn a_file_cut_anywhere_reads_up_to_its_last_whole_block() {
    let (bytes, starts, written) = file(3);
    for cut in (0..bytes.len()).step_by(7) {
        let r = read(&bytes[..cut]);
        let header = starts[0];
        if cut < header {
            let e = r.unwrap_err();
            assert!(matches!(e, ReadError::NotARecording | ReadError::Header(_)), "cut at {cut}: {e}");
            continue;
        }
        let (got, errors) = r.unwrap();
        let whole = starts.iter().skip(1).chain(std::iter::once(&bytes.len())).filter(|end| **end <= cut).count();
        assert_eq!(got, written[..whole].concat(), "cut at {cut}");
        let at_boundary = starts.contains(&cut) || cut == bytes.len();
        assert_eq!(errors.len(), usize::from(!at_boundary), "cut at {cut}: {errors:?}");
        if let Some(e) = errors.first() {
            assert!(e.to_string().contains("cut short"), "cut at {cut}: {e}");
        }
    }
}

#[test]
fn a_corrupt_block_is_skipped_and_said_where() {
    let (bytes, starts, written) = file(3);
    // A byte of the middle block's payload.
    let mut b = bytes.clone();
    b[starts[1] + 20] ^= 0x55;
    let (got, errors) = read(&b).unwrap();
    assert_eq!(got, [written[0].clone(), written[2].clone()].concat());
    assert_eq!(errors.len(), 1);
    let msg = errors[0].to_string();
    assert!(msg.contains(&format!("byte {}", starts[1])) && msg.contains("checksum"), "{msg}");
    // The middle block's magic: the reader finds the next block.
    let mut b = bytes.clone();
    b[starts[1]] = b'X';
    let (got, errors) = read(&b).unwrap();
    assert_eq!(got, [written[0].clone(), written[2].clone()].concat());
    assert!(errors[0].to_string().contains("not a block"), "{}", errors[0]);
    // A length in the middle block's header that cannot be.
    let mut b = bytes;
    b[starts[1] + 8..starts[1] + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    let (got, _) = read(&b).unwrap();
    assert_eq!(got, [written[0].clone(), written[2].clone()].concat());
}

#[test]
fn foreign_files_are_refused_clearly() {
    let (bytes, _, _) = file(1);
    let e = |b: &[u8]| Reader::new(b).err().expect("refused").to_string();
    assert!(e(b"").contains("not a scope-probe recording"));
    assert!(e(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0").contains("not a scope-probe recording"));
    assert!(e(b"{\"traceEvents\": []}").contains("not a scope-probe recording"));
    let mut v2 = bytes.clone();
    v2[8] = 2;
    assert!(e(&v2).contains("format version 2"), "{}", e(&v2));
    let mut other = bytes.clone();
    let at = other.windows(FORMAT_NAME.len()).position(|w| w == FORMAT_NAME.as_bytes()).unwrap();
    other[at] = b'S';
    assert!(e(&other).contains("header"), "{}", e(&other));
    assert!(e(&bytes[..20]).contains("header"), "{}", e(&bytes[..20]));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Arbitrary bytes, with and without a valid header in front: no panic, errors say why.
    #[test]
    fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..2048), with_header in any::<bool>()) {
        let mut bytes = if with_header { format::header(&meta()) } else { Vec::new() };
        bytes.extend(&tail);
        if let Ok((_, errors)) = read(&bytes) {
            for e in errors {
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }

    /// A valid recording with bytes changed: no panic, and nothing read that was not written.
    #[test]
    fn mutated_recordings_never_yield_what_was_not_written(changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let (mut bytes, starts, written) = file(3);
        for (at, v) in changes {
            let i = starts[0] + at.index(bytes.len() - starts[0]);
            bytes[i] = v;
        }
        let all: Vec<Entry> = written.concat();
        if let Ok((got, _)) = read(&bytes) {
            for e in got {
                prop_assert!(all.contains(&e), "read {e:?}, never written");
            }
        }
    }
}

/// Joined segments (a kept flight recording) define their ids again: each entry is named by
/// the definition before it.
#[test]
fn ids_defined_again_name_what_follows_them() {
    let sample = |ts: u64| Entry::Sample {
        ts,
        tid: 1,
        owner: Owner::Thread(0),
        frames: vec![0],
        erlang_leaf: None,
        native_leaf: None,
        scheduler: None,
        working: false,
    };
    let mut bytes = format::header(&meta());
    for (text, ts) in [("first", 2_000), ("second", 3_000)] {
        let mut raw = Vec::new();
        format::encode_entry(&Entry::Name { id: 0, text: text.into() }, &mut raw);
        format::encode_entry(&sample(ts), &mut raw);
        bytes.extend(format::block(&raw));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("joined.scope");
    std::fs::write(&path, bytes).unwrap();
    let rec = super::model::Recording::open(&path).unwrap();
    let names: Vec<&str> = rec.samples.iter().map(|s| rec.name(s.frames[0])).collect();
    assert_eq!(names, ["first", "second"]);
}
