//! Passwords: 8 to 72 bytes, bcrypt's limit, so none is ever silently truncated.

/// Shortest accepted password, in bytes.
pub const MIN_BYTES: usize = 8;
/// bcrypt reads at most this many bytes.
pub const MAX_BYTES: usize = 72;

/// A password whose length bcrypt can hash without truncation.
pub struct Password(String);

impl Password {
    pub fn parse(raw: String) -> Result<Self, String> {
        let len = raw.len();
        if len < MIN_BYTES {
            return Err(format!("must be at least {MIN_BYTES} bytes long"));
        }
        if len > MAX_BYTES {
            return Err(format!(
                "must be at most {MAX_BYTES} bytes long (multi-byte characters count as several)"
            ));
        }
        Ok(Self(raw))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// The OpenAPI schema of what [`Password::parse`] accepts. JSON Schema counts characters, not
/// bytes, so the rule is a custom format, `bcrypt-password` (8 to 72 bytes of UTF-8); the length
/// bounds are those the bytes imply (a character is 1 to 4 bytes).
pub fn schema() -> utoipa::openapi::Object {
    use utoipa::openapi::{ObjectBuilder, SchemaFormat, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::Custom("bcrypt-password".to_owned())))
        .min_length(Some(MIN_BYTES.div_ceil(4)))
        .max_length(Some(MAX_BYTES))
        .description(Some(format!(
            "{MIN_BYTES} to {MAX_BYTES} bytes of UTF-8 (bcrypt's limit: longer is refused, \
             never truncated)."
        )))
        .build()
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_counts_bytes_not_characters() {
        // "é" is two bytes in UTF-8: 36 of them are 72 bytes, 36 and one "a" are 73.
        assert!(Password::parse("é".repeat(36)).is_ok());
        assert!(Password::parse(format!("{}a", "é".repeat(36))).is_err());
        assert!(Password::parse("a".repeat(7)).is_err());
        assert!(Password::parse("a".repeat(8)).is_ok());
    }
}
