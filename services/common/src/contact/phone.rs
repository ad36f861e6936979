//! Phone numbers: international form, validated against libphonenumber's metadata, stored E.164.

use phonenumber::Mode;

/// A valid phone number in E.164 form (`+256772123456`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phone(String);

impl Phone {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err("is required".to_owned());
        }
        let invalid = || "must be a valid international number such as +256772123456".to_owned();
        // libphonenumber reads letters as keypad digits; a stored contact number has none.
        let allowed = |c: char| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')');
        if !raw.starts_with('+') || raw.len() > 32 || !raw[1..].chars().all(allowed) {
            return Err(invalid());
        }
        let number = phonenumber::parse(None, raw).map_err(|_| invalid())?;
        if !phonenumber::is_valid(&number) {
            return Err(invalid());
        }
        Ok(Self(number.format().mode(Mode::E164).to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_normalises_to_e164() {
        assert_eq!(
            Phone::parse("+256 772 123-456").unwrap().as_str(),
            "+256772123456"
        );
        assert_eq!(
            Phone::parse("+44 20 7946 0958").unwrap().as_str(),
            "+442079460958"
        );
    }

    #[test]
    fn parse_rejects_invalid_numbers() {
        for (label, raw) in [
            ("empty", ""),
            ("no plus", "0772123456"),
            ("letters", "+25677abc3456"),
            ("too short", "+2567"),
            ("unknown country", "+999123456789"),
        ] {
            assert!(Phone::parse(raw).is_err(), "{label} should be rejected");
        }
    }
}
