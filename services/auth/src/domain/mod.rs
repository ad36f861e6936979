//! Input rules of the auth service, as types that can only hold valid values.

mod email;
pub mod password;
mod phone;

pub use email::Email;
pub use password::Password;
pub use phone::Phone;
