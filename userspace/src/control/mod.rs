//! Control: which sources run and which per-event hooks are attached when.

pub mod mode;
