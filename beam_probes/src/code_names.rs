//! How Erlang code is named for people: `Module:function/arity`, with Elixir modules shown the
//! way Elixir prints them (`Elixir.MyApp.Repo:query/4` -> `MyApp.Repo.query/4`).

use std::borrow::Cow;

/// The display form of a JIT symbol name as OTP writes it (perf map or JIT debug records):
/// a leading `$` (perf map marker) and quotes around module atoms are dropped; Elixir modules
/// lose their `Elixir.` prefix and join the function with `.` as Elixir does.
pub fn display_name(raw: &str) -> Cow<'_, str> {
    let name = raw.strip_prefix('$').unwrap_or(raw);
    let Some((module, rest)) = split_module(name) else {
        return Cow::Borrowed(name);
    };
    let module = module.trim_matches('\'');
    match module.strip_prefix("Elixir.") {
        Some(elixir) => Cow::Owned(format!("{elixir}.{rest}")),
        None if module.len() + 1 + rest.len() == name.len() => Cow::Borrowed(name),
        None => Cow::Owned(format!("{module}:{rest}")),
    }
}

/// Splits `module:function/arity` at the colon that separates module and function (module
/// atoms may be quoted and contain colons).
fn split_module(name: &str) -> Option<(&str, &str)> {
    if let Some(quoted) = name.strip_prefix('\'') {
        let end = quoted.find('\'')?;
        let rest = quoted[end + 1..].strip_prefix(':')?;
        return Some((&name[..end + 2], rest));
    }
    let (module, rest) = name.split_once(':')?;
    // `global::name` style helper names of the JIT are not MFAs.
    if rest.starts_with(':') || !rest.contains('/') {
        return None;
    }
    Some((module, rest))
}

#[cfg(test)]
mod tests {
    use super::display_name;

    #[test]
    fn erlang_and_elixir_names() {
        assert_eq!(display_name("$lists:seq/2"), "lists:seq/2");
        assert_eq!(display_name("$Elixir.MyApp.Repo:query/4"), "MyApp.Repo.query/4");
        assert_eq!(display_name("'Elixir.MyApp.Repo':query/4"), "MyApp.Repo.query/4");
        assert_eq!(display_name("'odd:mod':f/0"), "odd:mod:f/0");
        assert_eq!(display_name("$global::call_nif_early"), "global::call_nif_early");
        assert_eq!(display_name("erts_beamasm:x"), "erts_beamasm:x");
    }
}
