//! Folded stacks: one line per distinct stack, `root;child;leaf count`.

use std::io::Write;

use crate::aggregate::stacks::Profile;

/// Frames may not contain the separators of the format.
pub fn clean(frame: &str) -> String {
    frame.replace([';', '\n'], "_")
}

pub fn lines(profile: &Profile) -> Vec<String> {
    profile
        .sorted()
        .into_iter()
        .map(|(stack, n)| {
            let frames: Vec<String> = stack.iter().map(|f| clean(f).replace(' ', "\u{a0}")).collect();
            format!("{} {n}", frames.join(";"))
        })
        .collect()
}

pub fn write(profile: &Profile, out: &mut dyn Write) -> std::io::Result<()> {
    for line in lines(profile) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}
