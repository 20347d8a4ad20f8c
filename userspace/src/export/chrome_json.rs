//! A recording's timeline in Chrome's JSON trace event format (chrome://tracing, and Perfetto
//! as a legacy format): the VM a process, each track a thread of it, written event by event.

use std::io::Write;

use serde_json::{Value, json};

use super::timeline::{Item, Timeline, TrackKind};

/// Microseconds, the format's unit.
fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn args(a: &[(String, String)]) -> Value {
    Value::Object(a.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
}

pub fn write(tl: &Timeline, out: &mut dyn Write) -> anyhow::Result<()> {
    let pid = tl.vm_pid;
    let mut first = true;
    let mut put = |out: &mut dyn Write, v: Value| -> std::io::Result<()> {
        out.write_all(if first { b"\n" } else { b",\n" })?;
        first = false;
        serde_json::to_writer(&mut *out, &v).map_err(std::io::Error::other)
    };
    out.write_all(b"{\"displayTimeUnit\":\"ms\",\"traceEvents\":[")?;
    put(out, json!({"ph": "M", "name": "process_name", "pid": pid, "args": {"name": tl.vm_name}}))?;
    // Every track but the VM's and the counters' is a thread, its id the track's.
    let counter_names: std::collections::HashMap<u64, (&str, &str)> = tl
        .tracks
        .iter()
        .filter_map(|t| match t.kind {
            TrackKind::Counter { unit } => Some((t.id, (t.name.as_str(), unit))),
            _ => None,
        })
        .collect();
    for t in &tl.tracks {
        if matches!(t.kind, TrackKind::Thread { .. } | TrackKind::Process { .. }) {
            put(out, json!({"ph": "M", "name": "thread_name", "pid": pid, "tid": t.id, "args": {"name": t.name}}))?;
            put(out, json!({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": t.id, "args": {"sort_index": t.id}}))?;
        }
    }
    for item in &tl.items {
        match item {
            Item::Slice { track, start, end, name, category, args: a } => put(
                out,
                json!({"ph": "X", "pid": pid, "tid": track, "ts": us(*start), "dur": us(end.saturating_sub(*start)), "name": name, "cat": category, "args": args(a)}),
            )?,
            Item::Instant { track, t, name, category, args: a } => put(
                out,
                json!({"ph": "i", "s": "t", "pid": pid, "tid": track, "ts": us(*t), "name": name, "cat": category, "args": args(a)}),
            )?,
            Item::Counter { track, t, value } => {
                let (name, unit) = counter_names.get(track).copied().unwrap_or(("counter", "value"));
                put(out, json!({"ph": "C", "pid": pid, "ts": us(*t), "name": name, "args": {unit: value}}))?
            }
            Item::Flow { id, from, to, t, t_end, name } => {
                // Flow events bind to slices: a short one on each end.
                put(
                    out,
                    json!({"ph": "X", "pid": pid, "tid": from, "ts": us(*t), "dur": 0.001, "name": format!("send {name}"), "cat": "message"}),
                )?;
                put(out, json!({"ph": "s", "pid": pid, "tid": from, "ts": us(*t), "id": id, "name": "message", "cat": "message"}))?;
                put(
                    out,
                    json!({"ph": "X", "pid": pid, "tid": to, "ts": us(*t_end), "dur": 0.001, "name": format!("receive {name}"), "cat": "message"}),
                )?;
                put(
                    out,
                    json!({"ph": "f", "bp": "e", "pid": pid, "tid": to, "ts": us(*t_end), "id": id, "name": "message", "cat": "message"}),
                )?;
            }
        }
    }
    out.write_all(b"\n]}\n")?;
    Ok(())
}
