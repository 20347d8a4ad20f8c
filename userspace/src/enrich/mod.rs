//! What raw samples and events need before people read them: C frames unwound, Erlang frames
//! found on the process's stack, and both put together with whom the sample was for.

pub mod erlang_stack;
pub mod stack;
pub mod unwind;
