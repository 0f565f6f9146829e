//! Users and groups by name or number, as `--default-owner` and `--socket-owner` give them.
//!
//! A specification is `id:N`, a bare number, or a name looked up in `/etc/passwd` (users) or
//! `/etc/group` (groups) of the machine the endpoint runs on. Names served only by other NSS
//! sources (LDAP...) are not found: give their number. `sid:` specifications are Windows
//! security identifiers and are refused here.

/// Which database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Account {
    /// `/etc/passwd`.
    User,
    /// `/etc/group`.
    Group,
}

impl Account {
    fn database(self) -> &'static str {
        match self {
            Account::User => "/etc/passwd",
            Account::Group => "/etc/group",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Account::User => "user",
            Account::Group => "group",
        }
    }
}

/// Checks a specification's form without looking anything up.
///
/// # Errors
/// A message naming the specification.
pub fn check_specification(kind: Account, spec: &str) -> Result<(), String> {
    if spec.starts_with("sid:") {
        return Err(format!("invalid {} {spec:?}: sid: names exist only on windows", kind.name()));
    }
    match spec.strip_prefix("id:") {
        Some(number) if number.parse::<u32>().is_ok() => Ok(()),
        Some(_) => Err(format!("invalid {} {spec:?}: expected id:<number>", kind.name())),
        None if spec.is_empty() || spec.contains([':', '\n']) => {
            Err(format!("invalid {} {spec:?}", kind.name()))
        }
        None => Ok(()),
    }
}

/// Resolves a specification to an id on this machine.
///
/// # Errors
/// A malformed specification, an unreadable database, or an unknown name.
pub fn resolve(kind: Account, spec: &str) -> Result<u32, String> {
    let number = spec.strip_prefix("id:").unwrap_or(spec);
    if let Ok(id) = number.parse() {
        return Ok(id);
    }
    check_specification(kind, spec)?;
    let database = kind.database();
    let text = std::fs::read_to_string(database)
        .map_err(|e| format!("unable to look {spec} up in {database}: {e}"))?;
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let entry = fields.next()?;
            let id = fields.nth(1)?.parse().ok()?;
            (entry == spec).then_some(id)
        })
        .next()
        .ok_or_else(|| format!("no such {} {spec:?}", kind.name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specifications() {
        assert_eq!(resolve(Account::User, "id:1234"), Ok(1234));
        assert_eq!(resolve(Account::Group, "42"), Ok(42));
        assert_eq!(resolve(Account::User, "root"), Ok(0));
        assert_eq!(resolve(Account::Group, "root"), Ok(0));
        assert!(
            resolve(Account::User, "no-such-user-here")
                .expect_err("unknown")
                .contains("no such user")
        );
        assert!(check_specification(Account::User, "id:7").is_ok());
        for bad in ["id:x", "sid:S-1-5-18", "", "a:b"] {
            assert!(check_specification(Account::User, bad).is_err(), "{bad}");
        }
    }
}
