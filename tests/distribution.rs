//! Erlang distribution seen from both sides: three nodes on loopback exchange known numbers of
//! messages along known pid pairs; scope-probe, observing the three VMs at once, counts each
//! flow on the sending node (the send handed to the connection) and on the receiving node (the
//! message queued to the process), and both sides name the same two pids.

use std::path::Path;
use std::time::Duration;

use scope_probe_tests::{Beam, Probe, wait_stable};

const DRAIN: Duration = Duration::from_secs(20);
const SETTLE: Duration = Duration::from_millis(500);

struct Node {
    beam: Beam,
    name: String,
}

fn node(short: &str) -> Node {
    // Names of this test run's own: CI may run another copy of the suite beside it.
    let sname = format!("{short}_{}", std::process::id());
    // The test target's erl (the host's, or a chroot's on the extra targets).
    let mut beam = Beam::start_with(Path::new("erl"), &["-sname", &sname], &[]);
    let name = beam.call("node()")["value"].trim_matches('\'').to_owned();
    beam.call("scope_dist:sink(scope_dist_sink)");
    Node { beam, name }
}

#[test]
fn messages_between_three_nodes_are_counted_on_both_sides() {
    let mut nodes = [node("scope_dist_a"), node("scope_dist_b"), node("scope_dist_c")];
    let pids: Vec<u32> = nodes.iter().map(|n| n.beam.os_pid).collect();
    let probe = Probe::attach_several(&pids, &["--mode", "trace"]);
    // (from, to, messages): every direction of a ring, and one more pair.
    let flows = [(0, 1, 3000u64), (1, 2, 2000), (2, 0, 1000), (0, 2, 500)];
    let mut sent = Vec::new();
    for (from, to, n) in flows {
        let target = nodes[to].name.clone();
        let r = nodes[from].beam.call(&format!("scope_dist:send('{target}', scope_dist_sink, {n})"));
        sent.push((from, to, n, r["a"].clone(), r["sink"].trim_matches('"').to_owned()));
    }
    // The VMs' own truth: each sink got what was sent to it.
    for (i, expected) in [(0, 1000u64), (1, 3000), (2, 2500)] {
        let got: u64 = nodes[i].beam.call("scope_dist:count(scope_dist_sink)")["count"].parse().unwrap();
        assert_eq!(got, expected, "messages in the sink of {}", nodes[i].name);
    }
    let row = |vm: u32, direction: &str, sender: &str, receiver: &str, peer: &str| -> Option<u64> {
        let rows: Vec<serde_json::Value> = probe
            .pairs()
            .into_iter()
            .filter(|r| {
                r["os_pid"].as_u64() == Some(vm as u64)
                    && r["direction"] == direction
                    && r["sender"] == sender
                    && r["receiver"] == receiver
                    && r["peer"] == peer
            })
            .collect();
        assert!(rows.len() <= 1, "one row per pair: {rows:?}");
        rows.first().and_then(|r| r["messages"].as_u64())
    };
    for (from, to, n, a, sink) in &sent {
        let (from_vm, to_vm) = (pids[*from], pids[*to]);
        let (from_node, to_node) = (&nodes[*from].name, &nodes[*to].name);
        let on_sender = wait_stable(DRAIN, SETTLE, || row(from_vm, "sent", a, sink, to_node));
        assert_eq!(on_sender, Some(*n), "{a} on {from_node} -> {sink} on {to_node}, as the sender counts it");
        let on_receiver = wait_stable(DRAIN, SETTLE, || row(to_vm, "received", a, sink, from_node));
        assert_eq!(on_receiver, Some(*n), "{a} on {from_node} -> {sink} on {to_node}, as the receiver counts it");
    }
    // Per node pair: at least the flows (rpc's own messages ride along), and on both sides.
    let m = probe.metrics();
    for (from, to) in [(0, 1), (1, 2), (2, 0), (0, 2)] {
        let flows: u64 = sent.iter().filter(|s| s.0 == from && s.1 == to).map(|s| s.2).sum();
        let (from_pid, to_pid) = (pids[from].to_string(), pids[to].to_string());
        let out = m
            .get("beam_distribution_messages_sent_total", &[("os_pid", &from_pid), ("peer", &nodes[to].name)])
            .expect("sent to the peer");
        let inn = m
            .get("beam_distribution_messages_received_total", &[("os_pid", &to_pid), ("peer", &nodes[from].name)])
            .expect("received from the peer");
        for (side, v) in [("sent", out), ("received", inn)] {
            assert!(v >= flows as f64 && v < (flows + 500) as f64, "{side} {} -> {}: {v}, flows {flows}", nodes[from].name, nodes[to].name);
        }
    }
    for n in &mut nodes {
        assert_eq!(m.get("scope_probe_attached", &[("node", n.name.as_str())]), Some(1.0));
    }
    let (status, stderr) = probe.stop();
    assert!(status.success(), "{status:?} {stderr:?}");
}
