//! SVG flame graph, rendered by inferno from the folded stacks.

use std::io::Write;

use anyhow::{Context, Result};
use inferno::flamegraph::{self, Options};

use super::folded;
use crate::aggregate::stacks::Profile;

pub fn write(profile: &Profile, out: &mut dyn Write) -> Result<()> {
    let mut opts = Options::default();
    opts.title = profile.title.clone();
    if !profile.notes.is_empty() {
        opts.subtitle = Some(profile.notes.join(" · "));
    }
    opts.count_name = "samples".into();
    opts.name_type = "Frame:".into();
    let lines = folded::lines(profile);
    if lines.is_empty() {
        // inferno refuses an empty profile; an empty graph with the title says the same.
        anyhow::bail!("no samples of the VM were taken (was it idle?): nothing to draw");
    }
    flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), out).context("rendering the flame graph")
}
