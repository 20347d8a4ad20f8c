//! The supervision tree, from outside: each process under the process that started it (its
//! first `$ancestors`: a pid, or a registered name), as proc_lib records it for every
//! supervisor, gen_server, gen_statem and Task. Supervisors (initial call `supervisor:Module/1`)
//! head their children; a tree starts at a supervisor started by something that is not one (an
//! application master, a shell). A process without ancestors hangs under a supervisor it is
//! linked to (the snapshot reads its links). Processes under no supervisor are grouped apart.

use std::collections::HashMap;

use serde::Serialize;

/// A process as the tree needs it (from a snapshot's records or a view's rows).
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    /// As Erlang prints it.
    pub pid: &'a str,
    pub name: Option<&'a str>,
    pub initial_call: Option<&'a str>,
    /// The first of `$ancestors` (a pid or a registered name), else a supervisor it is linked
    /// to.
    pub ancestor: Option<&'a str>,
    /// Registered name, label or initial call.
    pub identity: Option<&'a str>,
    /// One of OTP's own.
    pub system: bool,
}

/// Depth of a tree kept at most (deeper children are cut: a cycle of ancestors cannot loop).
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Node {
    pub pid: String,
    pub system: bool,
    /// Registered name, label or initial call.
    pub identity: Option<String>,
    pub supervisor: bool,
    pub children: Vec<Node>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Tree {
    /// The top supervisors, each with everything started under it.
    pub trees: Vec<Node>,
    /// Processes under no supervisor (no ancestor, or ancestors that lead to none), by pid.
    pub unsupervised: Vec<String>,
}

/// Whether the initial call is a supervisor's: OTP's `supervisor` behaviour runs every
/// supervisor (Elixir's too) as `supervisor:Module/1`.
pub fn is_supervisor(initial_call: &str) -> bool {
    initial_call.starts_with("supervisor:")
}

impl Tree {
    pub fn of(processes: &[Member<'_>]) -> Tree {
        let index: HashMap<&str, usize> = processes.iter().enumerate().map(|(i, p)| (p.pid, i)).collect();
        let by_name: HashMap<&str, usize> = processes.iter().enumerate().filter_map(|(i, p)| Some((p.name?, i))).collect();
        // Each process's parent, when that parent is in the table.
        let parent: Vec<Option<usize>> = processes
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let a = p.ancestor?;
                index.get(a).or_else(|| by_name.get(a)).copied().filter(|&j| j != i)
            })
            .collect();
        let supervisor = |i: usize| processes[i].initial_call.is_some_and(is_supervisor);
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); processes.len()];
        for (i, p) in parent.iter().enumerate() {
            if let Some(p) = p {
                children[*p].push(i);
            }
        }
        // Under a supervisor: some ancestor up the chain is one.
        let supervised = |mut i: usize| {
            for _ in 0..MAX_DEPTH {
                match parent[i] {
                    Some(p) if supervisor(p) => return true,
                    Some(p) => i = p,
                    None => return false,
                }
            }
            false
        };
        let node = |i: usize| -> Node { build(processes, &children, i, 0) };
        let trees = (0..processes.len()).filter(|&i| supervisor(i) && !parent[i].is_some_and(supervisor)).map(node).collect();
        let unsupervised =
            (0..processes.len()).filter(|&i| !supervisor(i) && !supervised(i)).map(|i| processes[i].pid.to_owned()).collect();
        Tree { trees, unsupervised }
    }

    /// The tree of a snapshot's processes.
    pub fn of_records(processes: &[crate::snapshot::ProcessRecord]) -> Tree {
        let pids: Vec<String> = processes.iter().map(|p| p.pid.to_string()).collect();
        let members: Vec<Member> = processes
            .iter()
            .zip(&pids)
            .map(|(p, pid)| Member {
                pid,
                name: p.name.as_deref(),
                initial_call: p.initial_call.as_deref(),
                ancestor: p.ancestor.as_deref().or(p.linked_supervisor.as_deref()),
                identity: p.identity(),
                system: p.system,
            })
            .collect();
        Tree::of(&members)
    }

    /// Every (parent, child) edge under the supervisors, by pid text.
    pub fn edges(&self) -> Vec<(String, String)> {
        fn walk(n: &Node, out: &mut Vec<(String, String)>) {
            for c in &n.children {
                out.push((n.pid.clone(), c.pid.clone()));
                walk(c, out);
            }
        }
        let mut out = Vec::new();
        for t in &self.trees {
            walk(t, &mut out);
        }
        out
    }
}

fn build(processes: &[Member<'_>], children: &[Vec<usize>], i: usize, depth: usize) -> Node {
    let p = &processes[i];
    let kids = if depth < MAX_DEPTH { children[i].iter().map(|&c| build(processes, children, c, depth + 1)).collect() } else { Vec::new() };
    Node {
        pid: p.pid.to_owned(),
        system: p.system,
        identity: p.identity.map(str::to_owned),
        supervisor: p.initial_call.is_some_and(is_supervisor),
        children: kids,
    }
}

#[cfg(test)]
mod tests {
    use super::{Member, Tree};

    fn m<'a>(pid: &'a str, name: Option<&'a str>, call: &'a str, ancestor: Option<&'a str>) -> Member<'a> {
        Member { pid, name, initial_call: Some(call), ancestor, identity: name.or(Some(call)), system: false }
    }

    #[test]
    fn children_hang_under_the_supervisor_that_started_them() {
        let ps = [
            m("<0.80.0>", None, "application_master:start_it/4", None),
            m("<0.81.0>", Some("top_sup"), "supervisor:top_sup/1", Some("<0.80.0>")),
            m("<0.82.0>", None, "worker:init/1", Some("top_sup")),
            m("<0.83.0>", None, "supervisor:inner_sup/1", Some("<0.81.0>")),
            m("<0.84.0>", None, "worker:init/1", Some("<0.83.0>")),
            m("<0.85.0>", None, "helper:run/0", Some("<0.84.0>")),
            m("<0.86.0>", None, "lonely:run/0", Some("<0.99.0>")),
        ];
        let t = Tree::of(&ps);
        assert_eq!(t.trees.len(), 1);
        assert_eq!(t.trees[0].pid, "<0.81.0>");
        let edges = t.edges();
        for e in [("<0.81.0>", "<0.82.0>"), ("<0.81.0>", "<0.83.0>"), ("<0.83.0>", "<0.84.0>"), ("<0.84.0>", "<0.85.0>")] {
            assert!(edges.contains(&(e.0.to_owned(), e.1.to_owned())), "{e:?} in {edges:?}");
        }
        assert_eq!(edges.len(), 4);
        assert_eq!(t.unsupervised, vec!["<0.80.0>".to_owned(), "<0.86.0>".to_owned()]);
    }

    #[test]
    fn a_cycle_of_ancestors_ends() {
        let ps = [m("<0.1.0>", None, "supervisor:a/1", Some("<0.2.0>")), m("<0.2.0>", None, "supervisor:b/1", Some("<0.1.0>"))];
        let t = Tree::of(&ps);
        assert!(t.trees.is_empty() && t.unsupervised.is_empty());
    }
}
