//! E-mail addresses: trimmed, lower-cased, syntax checked.

use validator::ValidateEmail;

/// A syntactically valid e-mail address in its stored form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let normalised = raw.trim().to_lowercase();
        if normalised.is_empty() {
            return Err("is required".to_owned());
        }
        if normalised.len() > 254 || !normalised.validate_email() {
            return Err("must be a valid email address".to_owned());
        }
        Ok(Self(normalised))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_trims_and_lowercases() {
        assert_eq!(
            Email::parse("  Alice@Example.COM ").unwrap().as_str(),
            "alice@example.com"
        );
    }

    #[test]
    fn parse_rejects_invalid_addresses() {
        for (label, raw) in [
            ("empty", ""),
            ("no at", "alice.example.com"),
            ("no domain", "alice@"),
            ("spaces inside", "al ice@example.com"),
            ("sql", "' OR 1=1 --@x"),
            ("too long", &format!("{}@example.com", "a".repeat(250))),
        ] {
            assert!(Email::parse(raw).is_err(), "{label} should be rejected");
        }
    }
}
