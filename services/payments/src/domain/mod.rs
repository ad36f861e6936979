//! Payment rules as types: money, methods, the state machine, references.

mod money;
mod payment;
mod reference;

pub use money::{Amount, Currency, MAX_WHOLE};
pub use payment::{PaymentMethod, PaymentState};
pub use reference::new_reference;
pub use svc_common::contact::{Email, Phone};
