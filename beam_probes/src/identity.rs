//! Who a process is, read from outside the way observer, etop and recon show it: its initial
//! call (`$initial_call` in its dictionary when proc_lib started it, else the MFA it was
//! spawned with), its first ancestor (`$ancestors`) and, on OTP 27+, its label
//! (`proc_lib:set_label/1`, `$process_label`). Only those dictionary keys are read; no other
//! value ever is. And whether it is one of OTP's own processes, decided by what it is (its
//! name, initial call and group leader), never by where it happens to be blocked.

use std::collections::HashMap;
use std::sync::Arc;

use crate::builds::{BuildTable, OtpProcesses};
use crate::code_names::display_name;
use crate::remote_terms::{Term, TermReader};

/// Dictionary slots looked at (a dictionary with more keys is not a proc_lib identity's).
const MAX_SLOTS: u32 = 4096;
/// Elements of one slot's collision list looked at.
const MAX_CHAIN: usize = 8;

pub const INITIAL_CALL_KEY: &str = "$initial_call";
pub const ANCESTORS_KEY: &str = "$ancestors";
pub const LABEL_KEY: &str = "$process_label";

/// A module, function and arity, as atoms' texts, and how people read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mfa {
    pub module: String,
    pub function: String,
    pub arity: u64,
    /// `Module:function/arity`, Elixir modules the Elixir way.
    pub display: Arc<str>,
}

impl Mfa {
    pub fn new(module: String, function: String, arity: u64) -> Mfa {
        let display = display_name(&format!("{}:{}/{}", quote(&module), quote(&function), arity)).into();
        Mfa { module, function, arity, display }
    }

    fn is_fun_apply(&self) -> bool {
        self.module == "erlang" && self.function == "apply" && self.arity == 2
    }
}

/// What a process was spawned to run, told as its `$initial_call` would tell it: proc_lib
/// spawns through `proc_lib:init_p/5`, whose args carry the call it will run (`inner`), the one
/// proc_lib puts in the dictionary. (A gen_server's reads `gen:init_it/6` this way, where its
/// dictionary later says `Module:init/1`.)
pub fn spawned_call(call: Mfa, inner: Option<Mfa>) -> Mfa {
    match inner {
        Some(inner) if call.module == "proc_lib" && call.function == "init_p" && call.arity == 5 => inner,
        _ => call,
    }
}

/// Atoms that Erlang would print quoted, quoted (so `display_name` splits them right).
fn quote(atom: &str) -> String {
    let plain = atom.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && atom.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '@');
    if plain { atom.to_owned() } else { format!("'{}'", atom.replace('\'', "\\'")) }
}

/// MFAs by their three terms, made once per snapshot: 100,000 processes spawned the same way
/// share one.
#[derive(Default)]
pub struct Mfas(HashMap<(u64, u64, u64), Option<Arc<Mfa>>>);

impl Mfas {
    pub fn get(&mut self, r: &mut TermReader<'_, '_>, m: u64, f: u64, a: u64) -> Option<Arc<Mfa>> {
        if let Some(mfa) = self.0.get(&(m, f, a)) {
            return mfa.clone();
        }
        let mfa = r.mfa(m, f, a).map(|(module, function, arity)| Arc::new(Mfa::new(module, function, arity)));
        self.0.insert((m, f, a), mfa.clone());
        mfa
    }
}

/// What the dictionary says of a process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DictIdentity {
    pub initial_call: Option<Arc<Mfa>>,
    /// The first ancestor: a pid (`<0.80.0>`) or a registered name.
    pub ancestor: Option<String>,
    pub label: Option<String>,
}

/// Reads the identity keys of the dictionary at `dict` (a `ProcDict*`). A dictionary that
/// does not hold together gives what could be read before it stopped making sense.
pub fn read_dictionary(r: &mut TermReader<'_, '_>, mfas: &mut Mfas, dict: u64) -> DictIdentity {
    let l = r.t.proc_dict;
    let mut id = DictIdentity::default();
    let Some(used) = r.cache.u32(dict + l.used_slots) else { return id };
    let used = used.min(MAX_SLOTS);
    let mut slots = vec![0u8; used as usize * 8];
    if r.cache.read(dict + l.data, &mut slots).is_none() {
        return id;
    }
    for slot in slots.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))) {
        let entries = match r.decode(slot) {
            Term::Tuple(_) => vec![slot],
            Term::List(items, _) => items.into_iter().take(MAX_CHAIN).collect(),
            _ => continue,
        };
        for entry in entries {
            let Term::Tuple(kv) = r.decode(entry) else { continue };
            let [key, value] = kv[..] else { continue };
            match r.atom(key).as_deref() {
                Some(INITIAL_CALL_KEY) => {
                    if let Term::Tuple(mfa) = r.decode(value)
                        && let [m, f, a] = mfa[..]
                    {
                        id.initial_call = mfas.get(r, m, f, a);
                    }
                }
                Some(ANCESTORS_KEY) => {
                    if let Term::List(items, _) = r.decode(value) {
                        id.ancestor = items.first().map(|&first| match r.decode(first) {
                            Term::Pid(p) => p,
                            Term::Atom(a) => a,
                            _ => "…".to_owned(),
                        });
                    }
                }
                Some(LABEL_KEY) => id.label = Some(r.render(value)),
                _ => {}
            }
        }
    }
    id
}

/// The module a process's code belongs to, for telling OTP's processes from the user's:
/// from `$initial_call`, where proc_lib's behaviours that run a callback module name it
/// second (`{supervisor, my_sup, 1}`), else from the spawn.
fn started_in<'a>(otp: &OtpProcesses, dict: Option<&'a Mfa>, spawned: Option<&'a Mfa>) -> Option<&'a str> {
    match (dict, spawned) {
        (Some(d), _) if otp.callback_second.contains(&d.module.as_str()) => Some(&d.function),
        (Some(d), _) => Some(&d.module),
        (None, Some(s)) => Some(&s.module),
        (None, None) => None,
    }
}

/// Whether `name` is one of `patterns` (exact, or a prefix ending in `*`).
fn matches(patterns: &[&str], name: &str) -> bool {
    patterns.iter().any(|m| match m.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == *m,
    })
}

/// Whether a process is one of OTP's own (the runtime's, or of OTP's applications): by its
/// registered name; else by the module of its initial call; a process spawned from a fun
/// (`erlang:apply/2` and no `$initial_call`) by its group leader being OTP's
/// (`otp_group_leader`, see [`OtpProcesses::group_leaders_of`]).
pub fn is_otp(
    t: &BuildTable,
    name: Option<&str>,
    dict_initial: Option<&Mfa>,
    spawned: Option<&Mfa>,
    otp_group_leader: bool,
) -> bool {
    let otp = &t.otp;
    if name.is_some_and(|n| matches(otp.names, n)) {
        return true;
    }
    if dict_initial.is_none() && spawned.is_none_or(Mfa::is_fun_apply) {
        return otp_group_leader;
    }
    started_in(otp, dict_initial, spawned).is_some_and(|m| matches(otp.modules, m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builds::DEBIAN12_OTP25;

    fn mfa(m: &str, f: &str, a: u64) -> Mfa {
        Mfa::new(m.into(), f.into(), a)
    }

    #[test]
    fn classified_by_what_a_process_is() {
        let t = &DEBIAN12_OTP25;
        let user_server = mfa("chat_conn", "init", 1);
        let proc_lib = mfa("proc_lib", "init_p", 5);
        // A user's gen_server, wherever it is blocked (its current function is not looked at).
        assert!(!is_otp(t, None, Some(&user_server), Some(&proc_lib), true));
        assert!(is_otp(t, None, Some(&mfa("inet_db", "init", 1)), Some(&proc_lib), false));
        // A user's supervisor: `$initial_call` is {supervisor, Module, 1}.
        assert!(!is_otp(t, None, Some(&mfa("supervisor", "chat_sup", 1)), Some(&proc_lib), false));
        assert!(is_otp(t, None, Some(&mfa("supervisor", "kernel", 1)), Some(&proc_lib), false));
        // Fun spawns go by their group leader.
        let apply = mfa("erlang", "apply", 2);
        assert!(!is_otp(t, None, None, Some(&apply), false));
        assert!(is_otp(t, None, None, Some(&apply), true));
        // A registered name of OTP's, and a plain spawn in OTP's code.
        assert!(is_otp(t, Some("code_server"), None, Some(&apply), false));
        assert!(is_otp(t, None, None, Some(&mfa("erts_code_purger", "start", 0)), false));
        assert!(is_otp(t, None, None, Some(&mfa("prim_file", "start", 0)), false));
        assert!(!is_otp(t, None, None, Some(&mfa("my_app", "start", 0)), false));
        // Other OTP applications, by name pattern or module.
        assert!(is_otp(t, Some("mnesia_event"), Some(&mfa("gen_event", "init_it", 6)), Some(&proc_lib), false));
        assert!(is_otp(t, None, Some(&mfa("ssl_manager", "init", 1)), Some(&proc_lib), false));
        assert!(!is_otp(t, Some("my_event"), Some(&mfa("gen_event", "init_it", 6)), Some(&proc_lib), false));
    }

    #[test]
    fn displayed_as_erlang_and_elixir_print_them() {
        assert_eq!(&*mfa("chat_conn", "init", 1).display, "chat_conn:init/1");
        assert_eq!(&*mfa("Elixir.MyApp.Worker", "init", 1).display, "MyApp.Worker.init/1");
        assert_eq!(&*mfa("m", "-f/0-fun-0-", 0).display, "m:'-f/0-fun-0-'/0");
    }
}
