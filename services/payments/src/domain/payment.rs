//! Payment methods and the payment state machine.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentMethod {
    MobileMoney,
    Card,
    BankTransfer,
}

impl PaymentMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MobileMoney => "MOBILE_MONEY",
            Self::Card => "CARD",
            Self::BankTransfer => "BANK_TRANSFER",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        [Self::MobileMoney, Self::Card, Self::BankTransfer]
            .into_iter()
            .find(|m| m.as_str() == raw)
            .ok_or_else(|| "must be one of MOBILE_MONEY, CARD, BANK_TRANSFER".to_owned())
    }
}

/// `INITIATED → PENDING → SUCCESS | FAILED`, and `INITIATED → FAILED` (cancel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentState {
    Initiated,
    Pending,
    Success,
    Failed,
}

impl PaymentState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initiated => "INITIATED",
            Self::Pending => "PENDING",
            Self::Success => "SUCCESS",
            Self::Failed => "FAILED",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        [Self::Initiated, Self::Pending, Self::Success, Self::Failed]
            .into_iter()
            .find(|s| s.as_str() == raw)
            .ok_or_else(|| "must be one of INITIATED, PENDING, SUCCESS, FAILED".to_owned())
    }

    /// Whether a payment in `self` may move to `next`.
    pub fn can_become(self, next: Self) -> bool {
        matches!(
            (self, next),
            (Self::Initiated, Self::Pending)
                | (Self::Initiated, Self::Failed)
                | (Self::Pending, Self::Success)
                | (Self::Pending, Self::Failed)
        )
    }
}

impl fmt::Display for PaymentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::PaymentState::{self, *};

    #[test]
    fn only_the_documented_transitions_are_allowed() {
        let all = [Initiated, Pending, Success, Failed];
        let allowed = [
            (Initiated, Pending),
            (Initiated, Failed),
            (Pending, Success),
            (Pending, Failed),
        ];
        for from in all {
            for to in all {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for s in [Initiated, Pending, Success, Failed] {
            assert_eq!(PaymentState::parse(s.as_str()), Ok(s));
        }
        assert!(PaymentState::parse("success").is_err());
    }
}
