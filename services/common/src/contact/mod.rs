//! Contact details both services accept: e-mail addresses and international phone numbers.

mod email;
mod phone;

pub use email::Email;
pub use phone::Phone;

use utoipa::openapi::{
    KnownFormat, Object, ObjectBuilder, RefOr, Schema, SchemaFormat, Type, schema::AnyOfBuilder,
};

/// The OpenAPI schema of what [`Email::parse`] accepts.
pub fn email_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Email)))
        .max_length(Some(254))
        .examples(["alice@example.com"])
        .build()
}

/// The OpenAPI schema of what [`Phone::parse`] accepts. JSON Schema cannot say which numbers a
/// country's numbering plan holds, so the format is a custom one, `phone`: an international
/// number that libphonenumber's metadata finds valid. The pattern is the part a regular
/// expression can say (surrounding white space is trimmed).
pub fn phone_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::Custom("phone".to_owned())))
        .pattern(Some(r"^\s*\+[0-9 ().-]+\s*$"))
        .description(Some(
            "An international number (`+<country><number>`) valid in its country's numbering \
             plan (libphonenumber); stored in E.164 form.",
        ))
        .examples(["+256772123456"])
        .build()
}

/// An e-mail address or a phone number, as a log-in identifier.
pub fn email_or_phone_schema() -> RefOr<Schema> {
    Schema::AnyOf(
        AnyOfBuilder::new()
            .item(email_schema())
            .item(phone_schema())
            .description(Some(
                "E-mail address, or phone number in international format (`+<country><number>`).",
            ))
            .build(),
    )
    .into()
}

/// An e-mail address that may be left out: null or blank mean none.
pub fn optional_email_schema() -> RefOr<Schema> {
    let blank = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(r"^\s*$"));
    Schema::AnyOf(
        AnyOfBuilder::new()
            .item(email_schema())
            .item(blank)
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .build(),
    )
    .into()
}
