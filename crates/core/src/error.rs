//! The core crate's error: always a problem with caller input, phrased so the caller can fix it.

/// Invalid input to one of the domain functions; the message says what to fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("{0}")]
    Invalid(String),
    /// A payload filter needed more evaluation steps than it was given (see
    /// `filter::Budget`): the outcome is the same every time for this filter and payload.
    #[error(
        "filter: ran out of its budget of {steps} steps on this payload (a step is one value \
         compared or one path segment followed); shorten its $in/$nin lists, use fewer \
         conditions, or match fields that are not large arrays"
    )]
    StepBudget { steps: u64 },
}

/// Result alias of the core crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}
