//! Reading recordings for answers: rates per process and function (`stats`), what changed
//! between two (`diff`), where a process's time went (`why`), hypotheses checked against one
//! (`check`).

pub mod check;
pub mod diff;
pub mod stats;
pub mod why;
