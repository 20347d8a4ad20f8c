//! `scope-probe top`: a live view of the VM's processes (ratatui), read from outside the VM at
//! each refresh: no shell, no cookie, no code change. Several VMs are shown grouped by node: a
//! table each, under a line that names the node. With `--calls`, the servers view also times
//! the calls (`calls.rs`).

mod calls;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use beam_probes::BeamTarget;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table, TableState};
use ratatui::{DefaultTerminal, Frame};

use crate::cli::TopArgs;
use crate::enrich::process_view::{self, ProcessRow, ProcessTableView};
use crate::enrich::symbolize::Symbolizer;
use crate::source::procstat::{self, ThreadKind};
use crate::source::table::call_waits;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Pid,
    Name,
    Current,
    Queue,
    Memory,
    Heap,
    ReductionsPerSec,
    Status,
}

/// Columns: title and sort key. NAME is who the process is: its registered name, else its
/// label, else its initial call.
const COLUMNS: [(Column, &str, char); 8] = [
    (Column::Pid, "PID", 'p'),
    (Column::Name, "NAME / INITIAL CALL", 'n'),
    (Column::Current, "CURRENT FUNCTION", 'c'),
    (Column::Queue, "MSGQ", 'm'),
    (Column::Memory, "MEMORY", 'M'),
    (Column::Heap, "HEAP", 'h'),
    (Column::ReductionsPerSec, "REDS/S", 'r'),
    (Column::Status, "STATUS", 's'),
];

struct App {
    vms: Vec<Vm>,
    /// What is shown (`tab` cycles).
    view: View,
    /// What the supervision tree is coloured by (`o` cycles).
    heat: Heat,
    /// The VM whose table the arrow keys move in (←/→ change it).
    focus: usize,
    interval: Duration,
    show_system: bool,
    sort: Column,
    descending: bool,
    filter: String,
    editing_filter: bool,
    last_refresh: Option<Instant>,
}

/// One VM's table and what its rates are computed from.
struct Vm {
    target: Arc<BeamTarget>,
    symbolizer: Symbolizer,
    view: Option<ProcessTableView>,
    /// Reductions per pid at the previous refresh, for the rate.
    prev_reductions: HashMap<u64, u64>,
    rates: HashMap<u64, f64>,
    prev_cpu: Option<(Instant, f64)>,
    scheduler_utilisation: Option<f64>,
    resident_bytes: Option<u64>,
    last_refresh: Option<Instant>,
    error: Option<String>,
    table: TableState,
    /// Callers blocked in a call, by (caller, server): since when they have been seen waiting.
    waits: HashMap<(u64, u64), Instant>,
    /// With --calls: the servers' calls, timed in windows.
    timing: Option<calls::CallTiming>,
    /// Calls paired per server, and the send hooks' attached seconds, at the refresh the rates
    /// were last computed; calls per second of attached time since (windows see a part of the
    /// time: the rate is of the calls in them).
    prev_calls: (HashMap<u64, u64>, f64),
    call_rates: HashMap<u64, f64>,
    /// Each ETS table's bytes at the last refresh (by id), and its growth per second since.
    prev_ets: HashMap<String, u64>,
    ets_rates: HashMap<String, f64>,
    /// Memory by kind at the last refresh, and each kind's change per second since.
    prev_memory: Option<beam_probes::vm_memory::VmMemory>,
    memory_rates: Vec<f64>,
}

/// What top shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    Processes,
    /// Who callers are blocked on now (and with --calls, call latency).
    Servers,
    /// Supervisors and what they started.
    Tree,
    /// ETS tables, largest first.
    Ets,
    /// Ports and sockets, the fullest queues first.
    Ports,
    /// Memory by kind, as `erlang:memory()` groups it.
    Memory,
}

impl View {
    fn next(self) -> View {
        match self {
            View::Processes => View::Servers,
            View::Servers => View::Tree,
            View::Tree => View::Ets,
            View::Ets => View::Ports,
            View::Ports => View::Memory,
            View::Memory => View::Processes,
        }
    }
}

/// What the supervision tree's rows are coloured by: their share of the largest shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Heat {
    Reductions,
    Memory,
    Mailbox,
}

impl Heat {
    fn next(self) -> Heat {
        match self {
            Heat::Reductions => Heat::Memory,
            Heat::Memory => Heat::Mailbox,
            Heat::Mailbox => Heat::Reductions,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Heat::Reductions => "reductions/s",
            Heat::Memory => "memory",
            Heat::Mailbox => "mailbox",
        }
    }
}

/// Servers with timed calls shown beside those callers are blocked on.
const TIMED_SERVERS: usize = 20;

/// A server in the servers' view: callers blocked on it at the last refresh, or (with
/// --calls) calls timed.
struct ServerRow<'a> {
    server: &'a ProcessRow,
    waiting: usize,
    /// The longest a caller has been found blocked on it at every refresh since (one call, or
    /// several back to back: refreshes cannot tell them apart).
    longest: Duration,
    /// Calls timed since start.
    calls: u64,
}

pub fn run(args: TopArgs) -> Result<()> {
    if args.calls {
        // The send hooks: what the monitor needs.
        crate::privileges::check()?;
    } else {
        crate::privileges::check_ptrace()?;
    }
    let pids = if args.all_vms { beam_probes::target::running_vms() } else { args.pid.clone() };
    if pids.is_empty() {
        anyhow::bail!("no BEAM VM is running on this host");
    }
    let mut vms = Vec::new();
    for pid in pids {
        match Vm::open(&args, pid) {
            Ok(vm) => vms.push(vm),
            // With --all-vms, a VM that exits or cannot be read is said and skipped.
            Err(e) if args.all_vms => eprintln!("scope-probe: warning: pid {pid}: {e:#}"),
            Err(e) => return Err(e),
        }
    }
    anyhow::ensure!(!vms.is_empty(), "none of the BEAM VMs on this host could be read");
    // Grouped by node: the tables in the order of their nodes' names.
    vms.sort_by_cached_key(|vm| (vm.target.node_name().unwrap_or_default(), vm.target.pid));
    let mut app = App {
        vms,
        view: View::Processes,
        heat: Heat::Reductions,
        focus: 0,
        interval: args.interval.max(Duration::from_millis(200)),
        show_system: args.all,
        sort: Column::ReductionsPerSec,
        descending: true,
        filter: String::new(),
        editing_filter: false,
        last_refresh: None,
    };
    app.refresh();
    let mut terminal = ratatui::init();
    let result = app.run(&mut terminal);
    ratatui::restore();
    result
}

impl Vm {
    fn open(args: &TopArgs, pid: u32) -> Result<Vm> {
        let target = Arc::new(args.debug_info.open(pid)?);
        target.require_process_table()?;
        let symbolizer = Symbolizer::new(&target)?;
        let timing = if args.calls { Some(calls::CallTiming::start(target.clone(), args.overhead_budget)?) } else { None };
        Ok(Vm {
            target,
            symbolizer,
            view: None,
            prev_reductions: HashMap::new(),
            rates: HashMap::new(),
            prev_cpu: None,
            scheduler_utilisation: None,
            resident_bytes: None,
            last_refresh: None,
            error: None,
            table: TableState::default().with_selected(Some(0)),
            waits: HashMap::new(),
            timing,
            prev_calls: (HashMap::new(), 0.0),
            call_rates: HashMap::new(),
            prev_ets: HashMap::new(),
            ets_rates: HashMap::new(),
            prev_memory: None,
            memory_rates: Vec::new(),
        })
    }

    fn refresh(&mut self, now: Instant) {
        match process_view::read(&self.target, &mut self.symbolizer) {
            Ok(view) => {
                let dt = self.last_refresh.map(|t| now.duration_since(t).as_secs_f64());
                let mut reductions = HashMap::with_capacity(view.processes.len());
                self.rates.clear();
                for p in &view.processes {
                    reductions.insert(p.term, p.reductions);
                    if let (Some(dt), Some(prev)) = (dt, self.prev_reductions.get(&p.term)) {
                        self.rates.insert(p.term, p.reductions.saturating_sub(*prev) as f64 / dt.max(1e-3));
                    }
                }
                self.prev_reductions = reductions;
                let ets: HashMap<String, u64> = view.ets.tables.iter().map(|t| (t.table.id.clone(), t.table.memory_bytes)).collect();
                self.ets_rates = match dt {
                    Some(dt) => ets
                        .iter()
                        .filter_map(|(id, &b)| self.prev_ets.get(id).map(|&p| (id.clone(), (b as f64 - p as f64) / dt.max(1e-3))))
                        .collect(),
                    None => HashMap::new(),
                };
                self.prev_ets = ets;
                self.memory_rates = match (dt, &self.prev_memory, &view.memory) {
                    (Some(dt), Some(prev), Some(now)) => {
                        prev.kinds().iter().zip(now.kinds()).map(|(&(_, a), (_, b))| (b as f64 - a as f64) / dt.max(1e-3)).collect()
                    }
                    _ => Vec::new(),
                };
                self.prev_memory = view.memory;
                let blocked = call_waits(&self.target, view.processes.iter().map(|p| (p.term, p.status, p.current_function.as_ref())));
                let mut waits = HashMap::new();
                for (caller, on) in blocked {
                    // A gen_server call monitors its server: the first monitored is it.
                    if let Some(&server) = on.first() {
                        waits.insert((caller, server), self.waits.get(&(caller, server)).copied().unwrap_or(now));
                    }
                }
                self.waits = waits;
                if let Some(t) = &self.timing {
                    if !self.waits.is_empty() {
                        t.callers_blocked();
                    }
                    // Over at least half a second of windows, else the last rates stand.
                    let observed = t.observed().0;
                    let attached = observed - self.prev_calls.1;
                    if attached >= 0.5 {
                        let counts: HashMap<u64, u64> =
                            crate::aggregate::lock(&t.calls).servers.iter().map(|(&s, c)| (s, c.latency.count)).collect();
                        self.call_rates = counts
                            .iter()
                            .map(|(s, n)| (*s, n.saturating_sub(self.prev_calls.0.get(s).copied().unwrap_or(0)) as f64 / attached))
                            .collect();
                        self.prev_calls = (counts, observed);
                    }
                }
                self.view = Some(view);
                self.error = None;
            }
            Err(e) => self.error = Some(format!("{e:#}")),
        }
        if !self.target.is_alive() {
            self.error = Some(format!("pid {} exited", self.target.pid));
        }
        // Scheduler utilisation: CPU of the normal schedulers over their number and the time.
        let cpu = procstat::scheduler_cpu(self.target.pid, &self.target.table.threads);
        let normal: Vec<f64> = cpu.iter().filter(|((k, _), _)| *k == ThreadKind::Normal).map(|(_, v)| *v).collect();
        let total: f64 = normal.iter().sum();
        if let Some((t, prev)) = self.prev_cpu {
            let dt = now.duration_since(t).as_secs_f64();
            if dt > 0.0 && !normal.is_empty() {
                self.scheduler_utilisation = Some(((total - prev) / dt / normal.len() as f64).clamp(0.0, 1.0));
            }
        }
        self.prev_cpu = Some((now, total));
        self.resident_bytes = procstat::resident_bytes(self.target.pid);
        self.last_refresh = Some(now);
    }

    /// The line that says which VM this is and how it fares.
    fn header(&self, shown: usize) -> String {
        let (count, torn) = self.view.as_ref().map_or((0, 0), |v| (v.process_count, v.torn));
        let node = self.view.as_ref().map_or(String::new(), |v| v.node.clone());
        let util = self.scheduler_utilisation.map_or("-".into(), |u| format!("{:.0}%", u * 100.0));
        let mem = self.resident_bytes.map_or("-".into(), |b| format!("{} MiB", b >> 20));
        let mut head = format!(
            " {node} · OTP {} (ERTS {}) · pid {} · {count} processes ({shown} shown) · schedulers {util} · memory {mem}",
            self.target.otp_release, self.target.erts_version, self.target.pid,
        );
        if torn > 0 {
            head.push_str(&format!(" · {torn} changed while read"));
        }
        if let Some(e) = &self.error {
            head.push_str(&format!(" · {e}"));
        }
        head
    }
}

impl App {
    fn run(&mut self, terminal: &mut DefaultTerminal) -> Result<()> {
        loop {
            terminal.draw(|f| self.draw(f)).context("drawing")?;
            let due = self.last_refresh.map_or(Duration::ZERO, |t| self.interval.saturating_sub(t.elapsed()));
            if event::poll(due)? {
                if let Event::Key(k) = event::read()?
                    && k.kind == KeyEventKind::Press
                    && !self.key(k.code, k.modifiers)
                {
                    return Ok(());
                }
            } else {
                self.refresh();
            }
        }
    }

    /// Handles a key; false to quit.
    fn key(&mut self, code: KeyCode, mods: KeyModifiers) -> bool {
        if mods.contains(KeyModifiers::CONTROL) && code == KeyCode::Char('c') {
            return false;
        }
        if self.editing_filter {
            match code {
                KeyCode::Enter => self.editing_filter = false,
                KeyCode::Esc => {
                    self.editing_filter = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) => self.filter.push(c),
                _ => {}
            }
            return true;
        }
        match code {
            KeyCode::Char('q') | KeyCode::Esc => return false,
            KeyCode::Tab => self.view = self.view.next(),
            KeyCode::Char('o') if self.view == View::Tree => self.heat = self.heat.next(),
            KeyCode::Char('/') => self.editing_filter = true,
            KeyCode::Char('a') => self.show_system = !self.show_system,
            KeyCode::Char('+') => self.interval = (self.interval * 2).min(Duration::from_secs(60)),
            KeyCode::Char('-') => self.interval = (self.interval / 2).max(Duration::from_millis(250)),
            KeyCode::Down | KeyCode::Char('j') => self.vms[self.focus].table.select_next(),
            KeyCode::Up | KeyCode::Char('k') => self.vms[self.focus].table.select_previous(),
            KeyCode::PageDown => self.vms[self.focus].table.scroll_down_by(20),
            KeyCode::PageUp => self.vms[self.focus].table.scroll_up_by(20),
            KeyCode::Right => self.focus = (self.focus + 1) % self.vms.len(),
            KeyCode::Left => self.focus = (self.focus + self.vms.len() - 1) % self.vms.len(),
            KeyCode::Char(c) => {
                let by_key = COLUMNS.iter().find(|(_, _, k)| *k == c).map(|(col, _, _)| *col);
                let by_number = c.to_digit(10).and_then(|d| COLUMNS.get((d as usize).wrapping_sub(1))).map(|(col, _, _)| *col);
                if let Some(col) = by_key.or(by_number) {
                    if self.sort == col {
                        self.descending = !self.descending;
                    } else {
                        self.sort = col;
                        // Numbers read best largest first, names alphabetically.
                        self.descending = matches!(col, Column::Queue | Column::Memory | Column::Heap | Column::ReductionsPerSec);
                    }
                }
            }
            _ => {}
        }
        true
    }

    fn refresh(&mut self) {
        let now = Instant::now();
        for vm in &mut self.vms {
            vm.refresh(now);
        }
        self.last_refresh = Some(now);
    }

    /// The VM's rows as filtered and sorted.
    fn visible<'a>(&self, vm: &'a Vm) -> Vec<&'a ProcessRow> {
        let Some(view) = &vm.view else {
            return Vec::new();
        };
        let filter = self.filter.to_lowercase();
        let mut rows: Vec<&ProcessRow> = view
            .processes
            .iter()
            .filter(|p| self.show_system || !p.system)
            .filter(|p| {
                let has = |s: Option<&str>| s.is_some_and(|s| s.to_lowercase().contains(&filter));
                filter.is_empty()
                    || has(p.name.as_deref())
                    || has(p.label.as_deref())
                    || has(p.initial_call.as_deref())
                    || p.pid.contains(&filter)
                    || p.current_function.to_lowercase().contains(&filter)
            })
            .collect();
        let rate = |p: &ProcessRow| vm.rates.get(&p.term).copied().unwrap_or(0.0);
        rows.sort_by(|a, b| {
            let ord = match self.sort {
                Column::Pid => a.number.cmp(&b.number),
                Column::Name => a.identity.cmp(&b.identity),
                Column::Current => a.current_function.cmp(&b.current_function),
                Column::Queue => a.message_queue_len.cmp(&b.message_queue_len),
                Column::Memory => a.memory_bytes.cmp(&b.memory_bytes),
                Column::Heap => a.heap_bytes.cmp(&b.heap_bytes),
                Column::ReductionsPerSec => rate(a).total_cmp(&rate(b)),
                Column::Status => a.status.label().cmp(b.status.label()),
            };
            let ord = if self.descending { ord.reverse() } else { ord };
            ord.then(a.number.cmp(&b.number))
        });
        rows
    }

    /// The servers callers are blocked on, most waited on first.
    fn servers<'a>(&self, vm: &'a Vm) -> Vec<ServerRow<'a>> {
        let Some(view) = &vm.view else {
            return Vec::new();
        };
        let by_term: HashMap<u64, &ProcessRow> = view.processes.iter().map(|p| (p.term, p)).collect();
        let mut servers: HashMap<u64, ServerRow<'a>> = HashMap::new();
        let now = vm.last_refresh.unwrap_or_else(Instant::now);
        for (&(_, server), &since) in &vm.waits {
            let Some(&p) = by_term.get(&server) else { continue };
            let row = servers.entry(server).or_insert(ServerRow { server: p, waiting: 0, longest: Duration::ZERO, calls: 0 });
            row.waiting += 1;
            row.longest = row.longest.max(now.duration_since(since));
        }
        // The servers whose calls were timed, those gone from the table aside.
        if let Some(t) = &vm.timing {
            for (server, s) in crate::aggregate::lock(&t.calls).busiest(TIMED_SERVERS) {
                let Some(&p) = by_term.get(&server) else { continue };
                servers.entry(server).or_insert(ServerRow { server: p, waiting: 0, longest: Duration::ZERO, calls: 0 }).calls = s.latency.count;
            }
        }
        let mut rows: Vec<ServerRow> = servers.into_values().collect();
        rows.sort_by(|a, b| {
            b.waiting.cmp(&a.waiting).then(b.longest.cmp(&a.longest)).then(b.calls.cmp(&a.calls)).then(a.server.number.cmp(&b.server.number))
        });
        rows
    }

    fn servers_table(&self, vm: &Vm, focused: bool) -> Table<'static> {
        let titles = ["PID", "SERVER", "WAITING", "BLOCKED FOR", "CALLS/S", "P50", "P99", "TOP CALLER", "MSGQ", "CURRENT FUNCTION", "STATUS"];
        let servers = self.servers(vm);
        // Locked after `servers`, which locks the calls itself.
        let calls = vm.timing.as_ref().map(|t| crate::aggregate::lock(&t.calls));
        let rows: Vec<Row> = servers
            .iter()
            .map(|r| {
                let p = r.server;
                let timed = calls.as_ref().and_then(|c| c.servers.get(&p.term));
                let q = timed.map_or(vec![None, None], |s| s.latency.quantiles(&[0.5, 0.99]));
                let ms = |ns: Option<u64>| ns.map_or("-".to_owned(), crate::units::duration_ns);
                let top = timed.and_then(|s| s.top_callers(1).first().copied());
                let pid = |term: u64| self.pid_text(vm, term);
                Row::new(vec![
                    p.pid.clone(),
                    p.identity.as_deref().unwrap_or_default().to_owned(),
                    r.waiting.to_string(),
                    if r.waiting == 0 {
                        "-".into()
                    } else if r.longest.is_zero() {
                        "new".into()
                    } else {
                        format!("≥ {:.1} s", r.longest.as_secs_f64())
                    },
                    vm.call_rates.get(&p.term).map_or("-".into(), |r| format!("{r:.0}")),
                    ms(q[0]),
                    ms(q[1]),
                    top.map_or("-".into(), |(c, n)| format!("{} ×{n}", pid(c))),
                    p.message_queue_len.to_string(),
                    p.current_function.to_string(),
                    p.status.label().to_string(),
                ])
            })
            .collect();
        let widths = [
            Constraint::Length(14),
            Constraint::Length(30),
            Constraint::Length(8),
            Constraint::Length(12),
            Constraint::Length(8),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(20),
            Constraint::Length(7),
            Constraint::Min(24),
            Constraint::Length(16),
        ];
        self.styled(Table::new(rows, widths), Row::new(titles), focused)
    }

    /// The supervision tree as indented rows: each tree under its top supervisor, then the
    /// processes under no supervisor (OTP's own only with `a`).
    fn tree_table(&self, vm: &Vm, focused: bool) -> Table<'static> {
        let Some(view) = &vm.view else {
            return self.message("no table read yet".into(), focused);
        };
        let by_pid: HashMap<&str, &ProcessRow> = view.processes.iter().map(|p| (p.pid.as_str(), p)).collect();
        let mut lines: Vec<(String, &ProcessRow)> = Vec::new();
        fn walk<'a>(n: &beam_probes::supervision::Node, depth: usize, by_pid: &HashMap<&str, &'a ProcessRow>, out: &mut Vec<(String, &'a ProcessRow)>) {
            if let Some(&p) = by_pid.get(n.pid.as_str()) {
                let mark = if n.supervisor { "▾ " } else { "· " };
                out.push((format!("{}{mark}{}", "  ".repeat(depth), p.identity.as_deref().unwrap_or(&p.pid)), p));
            }
            for c in &n.children {
                walk(c, depth + 1, by_pid, out);
            }
        }
        for t in view.supervision.trees.iter().filter(|t| self.show_system || !t.system) {
            walk(t, 0, &by_pid, &mut lines);
        }
        let loose: Vec<&ProcessRow> =
            view.supervision.unsupervised.iter().filter_map(|p| by_pid.get(p.as_str()).copied()).filter(|p| self.show_system || !p.system).collect();
        if !loose.is_empty() {
            lines.extend(loose.into_iter().map(|p| (format!("(no supervisor) {}", p.identity.as_deref().unwrap_or(&p.pid)), p)));
        }
        let value = |p: &ProcessRow| match self.heat {
            Heat::Reductions => vm.rates.get(&p.term).copied().unwrap_or(0.0),
            Heat::Memory => p.memory_bytes as f64,
            Heat::Mailbox => p.message_queue_len as f64,
        };
        let max = lines.iter().map(|(_, p)| value(p)).fold(0.0, f64::max);
        let rows: Vec<Row> = lines
            .iter()
            .map(|(label, p)| {
                let share = if max > 0.0 { value(p) / max } else { 0.0 };
                let style = match share {
                    s if s >= 0.5 => Style::new().red().bold(),
                    s if s >= 0.1 => Style::new().yellow(),
                    _ => Style::new(),
                };
                Row::new(vec![
                    label.clone(),
                    p.pid.clone(),
                    p.message_queue_len.to_string(),
                    crate::units::bytes(p.memory_bytes),
                    format!("{:.0}", vm.rates.get(&p.term).copied().unwrap_or(0.0)),
                    p.status.label().to_string(),
                ])
                .style(style)
            })
            .collect();
        let widths = [Constraint::Min(50), Constraint::Length(14), Constraint::Length(9), Constraint::Length(10), Constraint::Length(10), Constraint::Length(18)];
        self.styled(Table::new(rows, widths), Row::new(["SUPERVISOR / CHILD", "PID", "MSGQ", "MEMORY", "REDS/S", "STATUS"]), focused)
    }

    /// The ETS tables, largest first, with how fast each grew since the last refresh (OTP's
    /// own only with `a`; `/` filters by table or owner).
    fn ets_table(&self, vm: &Vm, focused: bool) -> Table<'static> {
        let Some(view) = &vm.view else {
            return self.message("no table read yet".into(), focused);
        };
        if let Some(e) = &view.ets.error {
            return self.message(format!("ETS tables not read: {e}"), focused);
        }
        let filter = self.filter.to_lowercase();
        let rows: Vec<Row> = view
            .ets
            .tables
            .iter()
            .filter(|t| self.show_system || !t.owner_system)
            .filter(|t| {
                filter.is_empty()
                    || t.table.name.to_lowercase().contains(&filter)
                    || t.owner_identity.as_deref().is_some_and(|o| o.to_lowercase().contains(&filter))
            })
            .map(|t| {
                let e = &t.table;
                let growth = vm.ets_rates.get(&e.id).copied().unwrap_or(0.0);
                let style = if growth > 0.0 { Style::new().yellow() } else { Style::new() };
                Row::new(vec![
                    e.name.clone(),
                    e.id.clone(),
                    e.owner.to_string(),
                    t.owner_identity.as_deref().unwrap_or_default().to_owned(),
                    e.table_type.label().to_owned(),
                    e.protection.label().to_owned(),
                    e.size.to_string(),
                    crate::units::bytes(e.memory_bytes),
                    bytes_per_second(growth),
                ])
                .style(style)
            })
            .collect();
        let widths = [
            Constraint::Min(24),
            Constraint::Length(36),
            Constraint::Length(14),
            Constraint::Length(30),
            Constraint::Length(13),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(12),
        ];
        let header = Row::new(["TABLE", "ID", "OWNER", "OWNER IDENTITY", "TYPE", "PROTECTION", "OBJECTS", "MEMORY", "GROWTH"]);
        self.styled(Table::new(rows, widths), header, focused)
    }

    /// The ports, the fullest queues first: who is connected, what waits in the VM's queue and,
    /// for a socket, in the kernel's (`/` filters by name, driver, process or address).
    fn ports_table(&self, vm: &Vm, focused: bool) -> Table<'static> {
        let Some(view) = &vm.view else {
            return self.message("no table read yet".into(), focused);
        };
        let Some(ports) = &view.ports else {
            let why = view.ports_error.as_deref().unwrap_or("not read");
            return self.message(format!("ports not read: {why}"), focused);
        };
        let filter = self.filter.to_lowercase();
        let rows: Vec<Row> = ports
            .ports
            .iter()
            .map(|p| {
                let owner = format!("{} {}", p.connected, p.connected_name.as_deref().unwrap_or(""));
                let socket = p.socket.as_ref().map(|s| {
                    format!("{} → {} {}", s.local.as_deref().unwrap_or("?"), s.peer.as_deref().unwrap_or("*"), s.state.unwrap_or(""))
                });
                (p, owner, socket)
            })
            .filter(|(p, owner, socket)| {
                filter.is_empty()
                    || [p.name.as_str(), p.driver.as_str(), owner.as_str(), socket.as_deref().unwrap_or("")]
                        .iter()
                        .any(|t| t.to_lowercase().contains(&filter))
            })
            .map(|(p, owner, socket)| {
                let style = if p.busy || p.busy_queue { Style::new().red().bold() } else if p.queue_bytes > 0 { Style::new().yellow() } else { Style::new() };
                Row::new(vec![
                    p.id.clone(),
                    p.name.clone(),
                    p.driver.clone(),
                    owner,
                    crate::units::bytes(p.queue_bytes),
                    if p.busy { "busy".into() } else { String::new() },
                    crate::units::bytes(p.bytes_in),
                    crate::units::bytes(p.bytes_out),
                    socket.unwrap_or_else(|| p.os_pid.map(|o| format!("os pid {o}")).unwrap_or_default()),
                    p.socket.as_ref().map(|s| crate::units::bytes(s.send_queue)).unwrap_or_default(),
                ])
                .style(style)
            })
            .collect();
        let widths = [
            Constraint::Length(16),
            Constraint::Length(20),
            Constraint::Length(12),
            Constraint::Length(30),
            Constraint::Length(10),
            Constraint::Length(5),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Min(30),
            Constraint::Length(10),
        ];
        let header = Row::new(["PORT", "NAME", "DRIVER", "CONNECTED", "QUEUE", "BUSY", "IN", "OUT", "SOCKET (LOCAL → PEER)", "KERNEL Q"]);
        self.styled(Table::new(rows, widths), header, focused)
    }

    /// Memory by kind, as `erlang:memory()` groups it: each kind's bytes, share of the total
    /// and change per second since the last refresh.
    fn memory_table(&self, vm: &Vm, focused: bool) -> Table<'static> {
        let Some(view) = &vm.view else {
            return self.message("no table read yet".into(), focused);
        };
        let Some(m) = &view.memory else {
            let why = view.memory_error.as_deref().unwrap_or("not read");
            return self.message(format!("memory not read: {why}"), focused);
        };
        let rows: Vec<Row> = m
            .kinds()
            .iter()
            .enumerate()
            .map(|(i, &(kind, bytes))| {
                let rate = vm.memory_rates.get(i).copied().unwrap_or(0.0);
                let style = if rate > 0.0 { Style::new().yellow() } else { Style::new() };
                Row::new(vec![
                    kind.to_owned(),
                    crate::units::bytes(bytes),
                    if m.total > 0 { format!("{:.1}%", bytes as f64 * 100.0 / m.total as f64) } else { String::new() },
                    bytes_per_second(rate),
                ])
                .style(style)
            })
            .collect();
        let widths = [Constraint::Length(16), Constraint::Length(12), Constraint::Length(8), Constraint::Min(12)];
        self.styled(Table::new(rows, widths), Row::new(["KIND", "BYTES", "SHARE", "CHANGE"]), focused)
    }

    /// How Erlang prints a pid of this VM's table (the table's own text; `?` for a process gone).
    fn pid_text(&self, vm: &Vm, term: u64) -> String {
        vm.view.as_ref().and_then(|v| v.processes.iter().find(|p| p.term == term)).map_or_else(|| vm.target.format_pid(term), |p| p.pid.clone())
    }

    /// The selected server's latency histogram since start, one line (with --calls).
    fn histogram(&self, vm: &Vm) -> Option<String> {
        let t = vm.timing.as_ref()?;
        let rows = self.servers(vm);
        let row = rows.get(vm.table.selected()?)?;
        let calls = crate::aggregate::lock(&t.calls);
        let s = calls.servers.get(&row.server.term)?;
        let bound = |b: f64| if b < 1.0 { format!("≤{}ms", (b * 1e5).round() / 1e2) } else { format!("≤{b}s") };
        let bounds = crate::aggregate::calls::BUCKETS.iter().map(|&b| bound(b)).chain([">10s".to_owned()]);
        let bars: Vec<String> = bounds.zip(s.latency.buckets.iter()).filter(|(_, n)| **n > 0).map(|(b, n)| format!("{b} {n}")).collect();
        let (observed, cost) = t.observed();
        Some(format!(
            " {} {}: {} calls timed since start: {} · send hooks attached {observed:.1} s, cost {:.2}% of the VM's CPU",
            row.server.pid,
            row.server.identity.as_deref().unwrap_or_default(),
            s.latency.count,
            bars.join(" · "),
            cost * 100.0
        ))
    }

    /// A table with no rows whose header says why (nothing read yet, or what could not be read).
    fn message(&self, text: String, focused: bool) -> Table<'static> {
        self.styled(Table::new(Vec::<Row>::new(), [Constraint::Min(10)]), Row::new([text]), focused)
    }

    /// Reversed header; the selected row bold in the focused VM's table.
    fn styled(&self, table: Table<'static>, header: Row<'static>, focused: bool) -> Table<'static> {
        let highlight = if focused || self.vms.len() == 1 { Style::new().add_modifier(Modifier::BOLD) } else { Style::new() };
        table.header(header.style(Style::new().add_modifier(Modifier::REVERSED))).row_highlight_style(highlight).block(Block::new())
    }

    fn draw(&mut self, f: &mut Frame) {
        let several = self.vms.len() > 1;
        let timed = self.view == View::Servers && self.vms.iter().any(|vm| vm.timing.is_some());
        let [header, keys, body, foot] =
            Layout::vertical([Constraint::Length(1), Constraint::Length(1), Constraint::Min(3), Constraint::Length(u16::from(timed))])
                .areas(f.area());
        if timed {
            let line = self.histogram(&self.vms[self.focus]).unwrap_or_else(|| " (select a timed server for its latency histogram)".into());
            f.render_widget(Paragraph::new(line).dim(), foot);
        }
        let every = humantime::format_duration(self.interval);
        let head = if several {
            let processes: usize = self.vms.iter().filter_map(|vm| vm.view.as_ref()).map(|v| v.process_count).sum();
            format!(" {} VMs · {processes} processes · every {every}", self.vms.len())
        } else {
            format!("{} · every {every}", self.vms[0].header(self.visible(&self.vms[0]).len()))
        };
        f.render_widget(Paragraph::new(Line::from(head).bold()), header);
        let help = if self.editing_filter {
            format!(" filter: {}▏ (Enter keeps, Esc clears)", self.filter)
        } else if self.view == View::Tree {
            format!(
                " supervision tree (from each process's first ancestor), coloured by {} (o changes) · a {} OTP's · tab ETS · q quit{}",
                self.heat.name(),
                if self.show_system { "hide" } else { "show" },
                if several { " · ←/→ node" } else { "" }
            )
        } else if self.view == View::Ets {
            format!(
                " ETS tables, largest first; GROWTH: bytes per second since the last refresh · / filter{} · a {} OTP's · tab ports · q quit{}",
                if self.filter.is_empty() { String::new() } else { format!(" [{}]", self.filter) },
                if self.show_system { "hide" } else { "show" },
                if several { " · ←/→ node" } else { "" }
            )
        } else if self.view == View::Ports {
            format!(
                " ports, the fullest queues first (red: busy); KERNEL Q: a socket's bytes the peer has not taken · / filter{} · tab memory · q quit{}",
                if self.filter.is_empty() { String::new() } else { format!(" [{}]", self.filter) },
                if several { " · ←/→ node" } else { "" }
            )
        } else if self.view == View::Memory {
            format!(
                " memory by kind, as erlang:memory() groups it; CHANGE: per second since the last refresh · tab processes · q quit{}",
                if several { " · ←/→ node" } else { "" }
            )
        } else if self.view == View::Servers {
            format!(
                " servers callers are blocked on now{}; BLOCKED FOR: found blocked at every refresh since · tab tree · q quit{}",
                if self.vms.iter().any(|vm| vm.timing.is_some()) {
                    ", and whose calls were timed (in windows of send hooks)"
                } else {
                    " (--calls times their calls)"
                },
                if several { " · ←/→ node" } else { "" }
            )
        } else {
            format!(
                " sort: p/n/c/m/M/h/r/s or 1-8 (again: reverse) · / filter{} · a {} system{} · tab servers · +/- interval · q quit",
                if self.filter.is_empty() { String::new() } else { format!(" [{}]", self.filter) },
                if self.show_system { "hide" } else { "show" },
                if several { " · ←/→ node" } else { "" }
            )
        };
        f.render_widget(Paragraph::new(help).dim(), keys);
        // Grouped by node: a table each, one above the other, each under its VM's line.
        let areas = Layout::vertical(self.vms.iter().map(|_| Constraint::Fill(1))).split(body);
        for i in 0..self.vms.len() {
            let area = areas[i];
            let rows = self.visible(&self.vms[i]);
            let focused = several && i == self.focus;
            let table = match self.view {
                View::Servers => self.servers_table(&self.vms[i], focused),
                View::Tree => self.tree_table(&self.vms[i], focused),
                View::Ets => self.ets_table(&self.vms[i], focused),
                View::Ports => self.ports_table(&self.vms[i], focused),
                View::Memory => self.memory_table(&self.vms[i], focused),
                View::Processes => self.table(&self.vms[i], &rows, focused),
            };
            let area = if several {
                let [line, rest] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
                let style = if i == self.focus { Style::new().bold() } else { Style::new() };
                f.render_widget(Paragraph::new(Line::from(self.vms[i].header(rows.len())).style(style)), line);
                rest
            } else {
                area
            };
            // An empty table leaves nothing selected: the first row is again once there are rows.
            if self.vms[i].table.selected().is_none() {
                self.vms[i].table.select(Some(0));
            }
            f.render_stateful_widget(table, area, &mut self.vms[i].table);
        }
    }

    fn table(&self, vm: &Vm, rows: &[&ProcessRow], focused: bool) -> Table<'static> {
        let header_cells = COLUMNS.iter().map(|(col, title, _)| {
            if *col == self.sort { format!("{title} {}", if self.descending { "▼" } else { "▲" }) } else { title.to_string() }
        });
        let table_rows: Vec<Row> = rows
            .iter()
            .map(|p| {
                Row::new(vec![
                    p.pid.clone(),
                    p.identity.as_deref().unwrap_or_default().to_owned(),
                    p.current_function.to_string(),
                    p.message_queue_len.to_string(),
                    crate::units::bytes(p.memory_bytes),
                    crate::units::bytes(p.heap_bytes),
                    format!("{:.0}", vm.rates.get(&p.term).copied().unwrap_or(0.0)),
                    p.status.label().to_string(),
                ])
            })
            .collect();
        let widths = [
            Constraint::Length(14),
            Constraint::Length(34),
            Constraint::Min(30),
            Constraint::Length(9),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(18),
        ];
        self.styled(Table::new(table_rows, widths), Row::new(header_cells), focused)
    }
}

/// A change in bytes per second as the ETS and memory views show it: `+1.2 MiB/s`, `-3 KiB/s`,
/// nothing when there was none.
fn bytes_per_second(rate: f64) -> String {
    if rate == 0.0 { String::new() } else { format!("{}{}/s", if rate < 0.0 { "-" } else { "+" }, crate::units::bytes(rate.abs() as u64)) }
}
