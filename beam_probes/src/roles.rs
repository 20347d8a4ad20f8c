//! What well-known library processes are for, told by their initial call: the views show a
//! pool's callers apart (the wait at checkout, the time they hold what they checked out), and
//! time the requests of web servers that serve each in a process of its own. The only place
//! scope-probe names library code it recognises.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Hands out workers or connections: its callers wait at checkout, then hold one.
    Pool,
    /// Serves requests of a web server, one at a time.
    Request(RequestSpan),
}

/// How a request process's requests are told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestSpan {
    /// One request per process: the request is its life, spawn to exit.
    Lifetime,
    /// An acceptor that serves connection after connection: it tells the server that spawned
    /// it when it has accepted one (the request starts) and when it is done (it ends), and
    /// waits for the server's word before the next.
    ToServer,
}

/// Pools by initial call, as identities print them (Elixir modules without `Elixir.`):
/// poolboy (Debian's erlang-poolboy) and DBConnection's pool (Ecto's repos).
const POOLS: &[&str] = &["poolboy:init/1", "DBConnection.ConnectionPool.init/1"];

/// Request processes by initial call: Cowboy 2's (and so Phoenix's and Plug.Cowboy's), spawned
/// per request by its stream handler; yaws' acceptors (Debian's erlang-yaws 2.1.1,
/// yaws_server.erl: `Top ! {self(), next, Accepted}` after accept, `{self(), done_client, N}`
/// or `{self(), decrement}` when the connection ends, then `{Top, accept}` or exit), whose
/// span is a connection: a request when the client closes after each (`Connection: close`,
/// HTTP/1.0).
const REQUESTS: &[(&str, RequestSpan)] =
    &[("cowboy_stream_h:request_process/3", RequestSpan::Lifetime), ("yaws_server:acceptor0/2", RequestSpan::ToServer)];

/// The role of a process by its initial call.
pub fn role(initial_call: &str) -> Option<Role> {
    if POOLS.contains(&initial_call) {
        return Some(Role::Pool);
    }
    REQUESTS.iter().find(|(call, _)| *call == initial_call).map(|&(_, span)| Role::Request(span))
}

#[cfg(test)]
mod tests {
    use super::{RequestSpan, Role, role};

    #[test]
    fn pools_and_request_processes_are_known_by_their_initial_call() {
        assert_eq!(role("poolboy:init/1"), Some(Role::Pool));
        assert_eq!(role("DBConnection.ConnectionPool.init/1"), Some(Role::Pool));
        assert_eq!(role("yaws_server:acceptor0/2"), Some(Role::Request(RequestSpan::ToServer)));
        assert_eq!(role("cowboy_stream_h:request_process/3"), Some(Role::Request(RequestSpan::Lifetime)));
        assert_eq!(role("my_server:init/1"), None);
    }
}
