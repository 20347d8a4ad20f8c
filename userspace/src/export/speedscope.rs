//! speedscope's file format (https://www.speedscope.app/file-format-schema.json): one sampled
//! profile whose samples are stacks of indices into a shared frame table, root first.

use std::collections::HashMap;
use std::io::Write;

use serde::Serialize;

use crate::aggregate::stacks::Profile;

#[derive(Serialize)]
struct File<'a> {
    #[serde(rename = "$schema")]
    schema: &'static str,
    shared: Shared<'a>,
    profiles: Vec<Sampled>,
    name: &'a str,
    #[serde(rename = "activeProfileIndex")]
    active_profile_index: usize,
    exporter: String,
}

#[derive(Serialize)]
struct Shared<'a> {
    frames: Vec<Frame<'a>>,
}

#[derive(Serialize)]
struct Frame<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct Sampled {
    #[serde(rename = "type")]
    kind: &'static str,
    name: String,
    unit: &'static str,
    #[serde(rename = "startValue")]
    start_value: u64,
    #[serde(rename = "endValue")]
    end_value: u64,
    samples: Vec<Vec<usize>>,
    weights: Vec<u64>,
}

pub fn write(profile: &Profile, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut frames: Vec<Frame<'_>> = Vec::new();
    let mut samples = Vec::new();
    let mut weights = Vec::new();
    for (stack, n) in profile.sorted() {
        let ids = stack
            .iter()
            .map(|f| {
                *index.entry(f.as_ref()).or_insert_with(|| {
                    frames.push(Frame { name: f.as_ref() });
                    frames.len() - 1
                })
            })
            .collect();
        samples.push(ids);
        weights.push(n);
    }
    let total: u64 = weights.iter().sum();
    let mut name = profile.title.clone();
    for note in &profile.notes {
        name.push_str(" · ");
        name.push_str(note);
    }
    let file = File {
        schema: "https://www.speedscope.app/file-format-schema.json",
        shared: Shared { frames },
        profiles: vec![Sampled {
            kind: "sampled",
            name: name.clone(),
            unit: "none",
            start_value: 0,
            end_value: total,
            samples,
            weights,
        }],
        name: &name,
        active_profile_index: 0,
        exporter: format!("scope-probe {}", env!("CARGO_PKG_VERSION")),
    };
    serde_json::to_writer(&mut *out, &file)?;
    writeln!(out)?;
    Ok(())
}
