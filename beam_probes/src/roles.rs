//! What well-known library processes are for, told by their initial call: the views show a
//! pool's callers apart (the wait at checkout, the time they hold what they checked out). The
//! only place scope-probe names library code it recognises.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Hands out workers or connections: its callers wait at checkout, then hold one.
    Pool,
}

/// Pools by initial call, as identities print them (Elixir modules without `Elixir.`):
/// poolboy (Debian's erlang-poolboy) and DBConnection's pool (Ecto's repos).
const POOLS: &[&str] = &["poolboy:init/1", "DBConnection.ConnectionPool.init/1"];

/// The role of a process by its initial call.
pub fn role(initial_call: &str) -> Option<Role> {
    POOLS.contains(&initial_call).then_some(Role::Pool)
}

#[cfg(test)]
mod tests {
    #[test]
    fn pools_are_known_by_their_initial_call() {
        assert_eq!(super::role("poolboy:init/1"), Some(super::Role::Pool));
        assert_eq!(super::role("DBConnection.ConnectionPool.init/1"), Some(super::Role::Pool));
        assert_eq!(super::role("my_server:init/1"), None);
    }
}
