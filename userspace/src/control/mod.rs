//! Control: which sources run and which per-event hooks are attached when, within what cost.

pub mod adaptive;
pub mod calibrate;
pub mod mode;
