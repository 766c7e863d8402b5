//! The grammar of the ids that name records, keys and events: what a path segment of the
//! admin API may carry. Org, sandbox and campaign ids are parts of config keys
//! (`webhook/{imsOrg}/{sandboxId}`), so they never hold `/`; an event id is what the event
//! schema allows (visible ASCII). All are 1 to 256 characters, as in the schemas.

/// Which id a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Id {
    Org,
    Sandbox,
    Campaign,
    Event,
}

/// Longest id, in characters (the schemas' `maxLength`).
pub const MAX_CHARS: usize = 256;

impl Id {
    fn name(self) -> &'static str {
        match self {
            Id::Org => "org",
            Id::Sandbox => "sandbox",
            Id::Campaign => "campaign",
            Id::Event => "event id",
        }
    }

    /// `value`, if it has this id's grammar; otherwise why not.
    pub fn check(self, value: &str) -> Result<&str, String> {
        let chars = value.chars().count();
        let fits = match self {
            Id::Event => value.bytes().all(|b| (b'!'..=b'~').contains(&b)),
            _ => !value.contains('/'),
        };
        if (1..=MAX_CHARS).contains(&chars) && fits {
            return Ok(value);
        }
        let rule = match self {
            Id::Event => "visible ASCII characters",
            _ => "characters other than /",
        };
        Err(format!("{}: must be 1 to {MAX_CHARS} {rule}", self.name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_the_record_grammar() {
        assert_eq!(Id::Org.check("acme"), Ok("acme"));
        assert_eq!(Id::Sandbox.check("068abf40 prod é"), Ok("068abf40 prod é"));
        assert_eq!(
            Id::Event.check("e-1/2"),
            Ok("e-1/2"),
            "the event schema allows /"
        );
        for (id, bad) in [
            (Id::Org, "acme/sb1"),
            (Id::Sandbox, ""),
            (Id::Campaign, "a/b"),
            (Id::Event, "has space"),
            (Id::Event, "é"),
        ] {
            assert!(id.check(bad).is_err(), "{id:?} {bad:?}");
        }
        assert!(Id::Org.check(&"a".repeat(257)).is_err());
        assert!(
            Id::Org.check(&"é".repeat(256)).is_ok(),
            "characters, not bytes"
        );
        assert_eq!(
            Id::Org.check("a/b").unwrap_err(),
            "org: must be 1 to 256 characters other than /"
        );
    }
}
