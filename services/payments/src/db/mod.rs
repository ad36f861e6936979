//! Queries, one function per statement.

pub mod idempotency;
pub mod payments;
pub mod transactions;
pub mod webhooks;

use sqlx::{
    Decode, Encode, Postgres, Type,
    encode::IsNull,
    error::BoxDynError,
    postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef},
};

use crate::domain::{Currency, PaymentMethod, PaymentState};

/// Text columns that hold a domain type: decoded once, when a row is read (a value the type
/// does not know is an error, never a silent fallback), and written as the type's text.
macro_rules! text_column {
    ($($ty:ty => $text:ident),* $(,)?) => {$(
        impl Type<Postgres> for $ty {
            fn type_info() -> PgTypeInfo {
                <&str as Type<Postgres>>::type_info()
            }

            fn compatible(ty: &PgTypeInfo) -> bool {
                <&str as Type<Postgres>>::compatible(ty)
            }
        }

        impl<'r> Decode<'r, Postgres> for $ty {
            fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                let text = <&str as Decode<Postgres>>::decode(value)?;
                Ok(<$ty>::parse(text)?)
            }
        }

        impl Encode<'_, Postgres> for $ty {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <&str as Encode<Postgres>>::encode_by_ref(&self.$text(), buf)
            }
        }
    )*};
}

text_column!(
    PaymentState => as_str,
    PaymentMethod => as_str,
    Currency => code,
);
