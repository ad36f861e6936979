//! Input rules of the auth service, as types that can only hold valid values.

pub mod password;

pub use password::Password;
pub use svc_common::contact::{Email, Phone};
