//! Recordings: everything a session observes, in one compact file that reads on another
//! machine (`format`, `writer`, `reader`), the recorder as a sink of the fan-out (`sink`), the
//! flight recorder's rotating segments (`flight`), and a recording read back for the commands
//! that work from one (`model`).

pub mod flight;
pub mod format;
pub mod model;
pub mod profile;
pub mod reader;
pub mod select;
pub mod sink;
pub mod writer;

#[cfg(test)]
mod tests;

/// What the recorder did, for the metrics: the writer's counts, and the flight recorder's.
pub struct RecordingStats {
    pub writer: std::sync::Arc<writer::WriterStats>,
    pub flight: Option<std::sync::Arc<flight::FlightStats>>,
}

/// What a recording's header says it is.
pub const FORMAT_NAME: &str = "scope-probe recording";
