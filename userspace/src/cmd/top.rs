//! `scope-probe top`: a live view of the VM's processes (ratatui), read from outside the VM at
//! each refresh: no shell, no cookie, no code change.

use std::collections::HashMap;
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
    target: BeamTarget,
    symbolizer: Symbolizer,
    interval: Duration,
    show_system: bool,
    sort: Column,
    descending: bool,
    filter: String,
    editing_filter: bool,
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
}

pub fn run(args: TopArgs) -> Result<()> {
    crate::privileges::check_ptrace()?;
    let target = args.debug_info.open(args.pid)?;
    target.require_process_table()?;
    let symbolizer = Symbolizer::new(&target)?;
    let mut app = App {
        target,
        symbolizer,
        interval: args.interval.max(Duration::from_millis(200)),
        show_system: args.all,
        sort: Column::ReductionsPerSec,
        descending: true,
        filter: String::new(),
        editing_filter: false,
        view: None,
        prev_reductions: HashMap::new(),
        rates: HashMap::new(),
        prev_cpu: None,
        scheduler_utilisation: None,
        resident_bytes: None,
        last_refresh: None,
        error: None,
        table: TableState::default().with_selected(Some(0)),
    };
    app.refresh();
    let mut terminal = ratatui::init();
    let result = app.run(&mut terminal);
    ratatui::restore();
    result
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
                if !self.target.is_alive() {
                    self.error = Some(format!("pid {} exited", self.target.pid));
                }
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
            KeyCode::Char('/') => self.editing_filter = true,
            KeyCode::Char('a') => self.show_system = !self.show_system,
            KeyCode::Char('+') => self.interval = (self.interval * 2).min(Duration::from_secs(60)),
            KeyCode::Char('-') => self.interval = (self.interval / 2).max(Duration::from_millis(250)),
            KeyCode::Down | KeyCode::Char('j') => self.table.select_next(),
            KeyCode::Up | KeyCode::Char('k') => self.table.select_previous(),
            KeyCode::PageDown => self.table.scroll_down_by(20),
            KeyCode::PageUp => self.table.scroll_up_by(20),
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
                self.view = Some(view);
                self.error = None;
            }
            Err(e) => self.error = Some(format!("{e:#}")),
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

    fn visible(&self) -> Vec<&ProcessRow> {
        let Some(view) = &self.view else {
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
        let rate = |p: &ProcessRow| self.rates.get(&p.term).copied().unwrap_or(0.0);
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

    fn draw(&mut self, f: &mut Frame) {
        let [header, keys, body] = Layout::vertical([Constraint::Length(1), Constraint::Length(1), Constraint::Min(3)]).areas(f.area());
        let rows = self.visible();
        let (count, torn) = self.view.as_ref().map_or((0, 0), |v| (v.process_count, v.torn));
        let node = self.view.as_ref().map_or(String::new(), |v| v.node.clone());
        let util = self.scheduler_utilisation.map_or("-".into(), |u| format!("{:.0}%", u * 100.0));
        let mem = self.resident_bytes.map_or("-".into(), |b| format!("{} MiB", b >> 20));
        let mut head = format!(
            " {node} · OTP {} (ERTS {}) · pid {} · {count} processes ({} shown) · schedulers {util} · memory {mem} · every {}",
            self.target.otp_release,
            self.target.erts_version,
            self.target.pid,
            rows.len(),
            humantime::format_duration(self.interval),
        );
        if torn > 0 {
            head.push_str(&format!(" · {torn} changed while read"));
        }
        if let Some(e) = &self.error {
            head.push_str(&format!(" · {e}"));
        }
        f.render_widget(Paragraph::new(Line::from(head).bold()), header);
        let help = if self.editing_filter {
            format!(" filter: {}▏ (Enter keeps, Esc clears)", self.filter)
        } else {
            format!(
                " sort: p/n/c/m/M/h/r/s or 1-8 (again: reverse) · / filter{} · a {} system · +/- interval · q quit",
                if self.filter.is_empty() { String::new() } else { format!(" [{}]", self.filter) },
                if self.show_system { "hide" } else { "show" }
            )
        };
        f.render_widget(Paragraph::new(help).dim(), keys);

        let header_cells = COLUMNS.iter().map(|(col, title, _)| {
            if *col == self.sort { format!("{title} {}", if self.descending { "▼" } else { "▲" }) } else { title.to_string() }
        });
        let table_rows = rows.iter().map(|p| {
            Row::new(vec![
                p.pid.clone(),
                p.identity.as_deref().unwrap_or_default().to_owned(),
                p.current_function.to_string(),
                p.message_queue_len.to_string(),
                crate::units::bytes(p.memory_bytes),
                crate::units::bytes(p.heap_bytes),
                format!("{:.0}", self.rates.get(&p.term).copied().unwrap_or(0.0)),
                p.status.label().to_string(),
            ])
        });
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
        let table = Table::new(table_rows, widths)
            .header(Row::new(header_cells).style(Style::new().add_modifier(Modifier::REVERSED)))
            .row_highlight_style(Style::new().add_modifier(Modifier::BOLD))
            .block(Block::new());
        f.render_stateful_widget(table, body, &mut self.table);
    }
}
