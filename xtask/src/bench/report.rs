//! What a benchmark run found, as it goes (tables printed as markdown) and at the end (one
//! markdown file and one JSON file under bench/results/, with the machine and the commit).

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Value, json};

/// One table: a title (what was measured, how often, on what), columns, rows of text cells,
/// and the raw numbers behind it for the JSON.
pub struct Table {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub data: Value,
}

impl Table {
    pub fn new(title: impl Into<String>, columns: &[&str]) -> Table {
        Table { title: title.into(), columns: columns.iter().map(|c| (*c).to_owned()).collect(), rows: Vec::new(), data: Value::Null }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn markdown(&self) -> String {
        let mut s = format!("{}\n\n| {} |\n|", self.title, self.columns.join(" | "));
        for (i, _) in self.columns.iter().enumerate() {
            // Text in the first columns, numbers right-aligned after.
            s.push_str(if i < 2 { "---|" } else { "---:|" });
        }
        s.push('\n');
        for r in &self.rows {
            s.push_str(&format!("| {} |\n", r.join(" | ")));
        }
        s
    }
}

/// The run's tables, printed as they complete.
pub struct Report {
    tables: Vec<Table>,
    /// One line per goal: (goal, measured, met).
    goals: Vec<(String, String, bool)>,
}

impl Report {
    pub fn new() -> Report {
        Report { tables: Vec::new(), goals: Vec::new() }
    }

    pub fn add(&mut self, table: Table) {
        println!("\n{}", table.markdown());
        self.tables.push(table);
    }

    pub fn goal(&mut self, goal: &str, measured: String, met: bool) {
        self.goals.push((goal.to_owned(), measured, met));
    }

    /// Writes `latest.md` and `latest.json` into `dir`.
    pub fn write(&self, dir: &Path, machine: &str, args: &str) -> Result<()> {
        self.write_as(dir, "latest", machine, args)
    }

    /// Writes `<stem>.md` and `<stem>.json` into `dir`.
    pub fn write_as(&self, dir: &Path, stem: &str, machine: &str, args: &str) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let commit = std::process::Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let date = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let mut md = format!(
            "# scope-probe {}\n\n`cargo xtask {args}` at commit {commit}, {date}.\n\nMachine: {machine}.\n\n## Goals\n\n\
             | goal | measured | met |\n|---|---|---|\n",
            if stem == "soak" { "soak" } else { "benchmark" }
        );
        for (goal, measured, met) in &self.goals {
            md.push_str(&format!("| {goal} | {measured} | {} |\n", if *met { "yes" } else { "**no**" }));
        }
        for t in &self.tables {
            md.push_str(&format!("\n{}", t.markdown()));
        }
        std::fs::write(dir.join(format!("{stem}.md")), md)?;
        let json = json!({
            "commit": commit,
            "date": date,
            "machine": machine,
            "args": args,
            "goals": self.goals.iter().map(|(g, m, met)| json!({"goal": g, "measured": m, "met": met})).collect::<Vec<_>>(),
            "tables": self.tables.iter().map(|t| json!({"title": t.title, "columns": t.columns, "rows": t.rows, "data": t.data})).collect::<Vec<_>>(),
        });
        std::fs::write(dir.join(format!("{stem}.json")), serde_json::to_string_pretty(&json)? + "\n")?;
        eprintln!("xtask: wrote {} and {stem}.json", dir.join(format!("{stem}.md")).display());
        Ok(())
    }
}
