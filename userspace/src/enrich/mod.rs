//! What raw samples and events need before people read them: addresses named (JIT, native and
//! kernel code), C frames unwound, Erlang frames found on the process's stack, both put
//! together with whom the sample was for, and processes named by who they are.

pub mod erlang_stack;
pub mod names;
pub mod process_view;
pub mod stack;
pub mod symbolize;
pub mod unwind;
