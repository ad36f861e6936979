//! Contact details both services accept: e-mail addresses and international phone numbers.

mod email;
mod phone;

pub use email::Email;
pub use phone::Phone;
