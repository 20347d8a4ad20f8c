//! A recording's timeline as a Perfetto trace (its protobuf format, which the Perfetto UI
//! opens; its JSON format is legacy and does not scale): one sequence of track descriptors
//! and track events. What is on the timeline is `timeline`'s.
//!
//! The messages are the few fields of perfetto_trace.proto this needs, with its field numbers
//! (the tests parse the output with the `perfetto` package's own protos).

use std::io::Write;

use prost::Message;

use super::timeline::{Item, Timeline, TrackKind};

#[derive(Clone, PartialEq, Message)]
struct TracePacket {
    #[prost(uint64, optional, tag = "8")]
    timestamp: Option<u64>,
    #[prost(uint32, optional, tag = "10")]
    trusted_packet_sequence_id: Option<u32>,
    #[prost(message, optional, tag = "11")]
    track_event: Option<TrackEvent>,
    #[prost(uint32, optional, tag = "13")]
    sequence_flags: Option<u32>,
    #[prost(message, optional, tag = "60")]
    track_descriptor: Option<TrackDescriptor>,
}

#[derive(Clone, PartialEq, Message)]
struct TrackDescriptor {
    #[prost(uint64, optional, tag = "1")]
    uuid: Option<u64>,
    #[prost(string, optional, tag = "2")]
    name: Option<String>,
    #[prost(message, optional, tag = "3")]
    process: Option<ProcessDescriptor>,
    #[prost(uint64, optional, tag = "5")]
    parent_uuid: Option<u64>,
    #[prost(message, optional, tag = "8")]
    counter: Option<CounterDescriptor>,
}

#[derive(Clone, PartialEq, Message)]
struct ProcessDescriptor {
    #[prost(int32, optional, tag = "1")]
    pid: Option<i32>,
    #[prost(string, optional, tag = "6")]
    process_name: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct CounterDescriptor {
    #[prost(string, optional, tag = "6")]
    unit_name: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct TrackEvent {
    #[prost(message, repeated, tag = "4")]
    debug_annotations: Vec<DebugAnnotation>,
    #[prost(int32, optional, tag = "9")]
    r#type: Option<i32>,
    #[prost(uint64, optional, tag = "11")]
    track_uuid: Option<u64>,
    #[prost(string, repeated, tag = "22")]
    categories: Vec<String>,
    #[prost(string, optional, tag = "23")]
    name: Option<String>,
    #[prost(double, optional, tag = "44")]
    double_counter_value: Option<f64>,
    #[prost(fixed64, repeated, tag = "47")]
    flow_ids: Vec<u64>,
    #[prost(fixed64, repeated, tag = "48")]
    terminating_flow_ids: Vec<u64>,
}

#[derive(Clone, PartialEq, Message)]
struct DebugAnnotation {
    #[prost(string, optional, tag = "6")]
    string_value: Option<String>,
    #[prost(string, optional, tag = "10")]
    name: Option<String>,
}

const SLICE_BEGIN: i32 = 1;
const SLICE_END: i32 = 2;
const INSTANT: i32 = 3;
const COUNTER: i32 = 4;
/// SEQ_INCREMENTAL_STATE_CLEARED on the first packet of the (only) sequence.
const SEQ_CLEARED: u32 = 1;

fn packet(first: bool, timestamp: Option<u64>) -> TracePacket {
    TracePacket { timestamp, trusted_packet_sequence_id: Some(1), sequence_flags: first.then_some(SEQ_CLEARED), ..Default::default() }
}

fn annotations(args: &[(String, String)]) -> Vec<DebugAnnotation> {
    args.iter().map(|(k, v)| DebugAnnotation { name: Some(k.clone()), string_value: Some(v.clone()) }).collect()
}

/// A trace is `repeated TracePacket packet = 1`: each packet is written as that field as it
/// is made, so a large recording is never one message in memory.
struct Packets<'a> {
    out: &'a mut dyn Write,
    written: usize,
    error: Option<std::io::Error>,
}

impl Packets<'_> {
    fn push(&mut self, p: TracePacket) {
        if self.error.is_some() {
            return;
        }
        let mut buf = Vec::with_capacity(p.encoded_len() + 11);
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut buf);
        p.encode_length_delimited(&mut buf).expect("a Vec grows");
        if let Err(e) = self.out.write_all(&buf) {
            self.error = Some(e);
        }
        self.written += 1;
    }

    fn is_empty(&self) -> bool {
        self.written == 0
    }
}

/// Writes the timeline as a Perfetto trace.
pub fn write(tl: &Timeline, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut packets = Packets { out, written: 0, error: None };
    for track in &tl.tracks {
        let mut d = TrackDescriptor { uuid: Some(track.id), parent_uuid: track.parent, ..Default::default() };
        match &track.kind {
            TrackKind::Vm { os_pid } => {
                d.process = Some(ProcessDescriptor { pid: Some(*os_pid as i32), process_name: Some(track.name.clone()) })
            }
            // Named tracks rather than thread descriptors: a thread descriptor's tid is unique,
            // and a scheduler has two tracks (its slices, its samples).
            TrackKind::Thread { .. } | TrackKind::Process { .. } => d.name = Some(track.name.clone()),
            TrackKind::Counter { unit } => {
                d.name = Some(track.name.clone());
                d.counter = Some(CounterDescriptor { unit_name: Some((*unit).to_owned()) });
            }
        }
        let mut p = packet(packets.is_empty(), None);
        p.track_descriptor = Some(d);
        packets.push(p);
    }
    let mut event = |t: u64, e: TrackEvent| {
        let mut p = packet(false, Some(t));
        p.track_event = Some(e);
        packets.push(p);
    };
    for item in &tl.items {
        match item {
            Item::Slice { track, start, end, name, category, args } => {
                event(
                    *start,
                    TrackEvent {
                        r#type: Some(SLICE_BEGIN),
                        track_uuid: Some(*track),
                        name: Some(name.clone()),
                        categories: vec![(*category).to_owned()],
                        debug_annotations: annotations(args),
                        ..Default::default()
                    },
                );
                event(*end, TrackEvent { r#type: Some(SLICE_END), track_uuid: Some(*track), ..Default::default() });
            }
            Item::Instant { track, t, name, category, args } => event(
                *t,
                TrackEvent {
                    r#type: Some(INSTANT),
                    track_uuid: Some(*track),
                    name: Some(name.clone()),
                    categories: vec![(*category).to_owned()],
                    debug_annotations: annotations(args),
                    ..Default::default()
                },
            ),
            Item::Counter { track, t, value } => event(
                *t,
                TrackEvent { r#type: Some(COUNTER), track_uuid: Some(*track), double_counter_value: Some(*value), ..Default::default() },
            ),
            Item::Flow { id, from, to, t, t_end, name } => {
                event(
                    *t,
                    TrackEvent {
                        r#type: Some(INSTANT),
                        track_uuid: Some(*from),
                        name: Some(format!("send {name}")),
                        categories: vec!["message".into()],
                        flow_ids: vec![*id],
                        ..Default::default()
                    },
                );
                event(
                    *t_end,
                    TrackEvent {
                        r#type: Some(INSTANT),
                        track_uuid: Some(*to),
                        name: Some(format!("receive {name}")),
                        categories: vec!["message".into()],
                        terminating_flow_ids: vec![*id],
                        ..Default::default()
                    },
                );
            }
        }
    }
    match packets.error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
