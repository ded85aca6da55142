//! Every failure as one clean line on standard error, and the exit code that goes with it.
//!
//! A gRPC status prints as its message and code name (`error: url must use https
//! (INVALID_ARGUMENT)`), not tonic's debug form. Transport errors nest the same words several
//! levels deep ("tcp connect error: tcp connect error: …"): the chain is walked once, repeats
//! dropped, and a socket error printed as its kind ("connection refused"). A closed standard
//! output (`heraldctl … | head`) ends the command quietly with status 0.

use std::error::Error as StdError;
use std::fmt;
use std::io::{self, Write};

use tonic::{Code, Status};

/// The command already printed why it failed (a test send that got no 2xx, a signature that
/// does not verify): exit 1 without another message.
#[derive(Debug)]
pub struct Reported;

impl fmt::Display for Reported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the command failed (see its output)")
    }
}

impl StdError for Reported {}

/// Prints `err` on standard error (unless there is nothing to add) and returns the exit code.
pub fn report(err: &anyhow::Error) -> i32 {
    if is_broken_pipe(err) {
        return 0;
    }
    if err.downcast_ref::<Reported>().is_some() {
        return 1;
    }
    let _ = writeln!(io::stderr(), "error: {}", describe(err));
    1
}

/// True when the failure is standard output closed by its reader.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// `err` in one line: its context, then the gRPC status or the root cause, without repeats.
pub fn describe(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in err.chain() {
        if let Some(status) = e.downcast_ref::<Status>() {
            push_new(&mut parts, status_line(status));
            break;
        }
        push_new(&mut parts, e.to_string());
    }
    parts.join(": ")
}

/// A gRPC status as `<message> (<CODE>)`; the transport's cause when the call never reached
/// the service.
pub fn status_line(status: &Status) -> String {
    let mut message = status.message().trim().to_owned();
    if let Some(source) = status.source() {
        let cause = cause(source);
        if message.is_empty() || message.contains("connect") || message == "transport error" {
            message = format!("cannot reach the service: {cause}");
        }
    }
    if message.is_empty() {
        message = status.code().description().to_lowercase();
    }
    format!("{message} ({})", code_name(status.code()))
}

/// Why a connection failed, in a few words: the deepest error of the chain, a socket error
/// by its kind (`connection refused`, `timed out`), other layers only when they add words.
pub fn cause(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            push_new(&mut parts, io_words(io));
            break;
        }
        let text = e.to_string();
        if !GENERIC.contains(&text.as_str()) {
            push_new(&mut parts, text);
        }
        next = e.source();
    }
    if parts.is_empty() {
        return err.to_string();
    }
    parts.join(": ")
}

/// Wrapper messages of the transport stack that say nothing the cause below them does not.
const GENERIC: &[&str] = &[
    "transport error",
    "tcp connect error",
    "error trying to connect",
    "client error (Connect)",
];

fn io_words(e: &io::Error) -> String {
    use io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused | ConnectionReset | ConnectionAborted | TimedOut | HostUnreachable
        | NetworkUnreachable | AddrNotAvailable | PermissionDenied | NotConnected => {
            e.kind().to_string()
        }
        _ => {
            let text = e.to_string();
            match text.find(" (os error") {
                Some(i) => text[..i].to_owned(),
                None => text,
            }
        }
    }
}

/// Adds `text` unless a part already says it (nested errors often repeat their source).
fn push_new(parts: &mut Vec<String>, text: String) {
    let text = text.trim().to_owned();
    if !text.is_empty() && !parts.iter().any(|p| p.ends_with(&text)) {
        parts.push(text);
    }
}

/// The code as the gRPC specification (and Herald's README) spells it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    use super::*;

    #[test]
    fn a_status_prints_its_message_and_code_name() {
        let err = anyhow::Error::from(Status::invalid_argument("url must use https"));
        assert_eq!(describe(&err), "url must use https (INVALID_ARGUMENT)");
    }

    #[test]
    fn a_status_without_a_message_prints_what_its_code_means() {
        let err = anyhow::Error::from(Status::new(Code::NotFound, ""));
        assert_eq!(
            describe(&err),
            "some requested entity was not found (NOT_FOUND)"
        );
    }

    #[test]
    fn context_comes_before_the_status() {
        let err = Err::<(), _>(Status::not_found("endpoint not found"))
            .context("cannot read the endpoint")
            .unwrap_err();
        assert_eq!(
            describe(&err),
            "cannot read the endpoint: endpoint not found (NOT_FOUND)"
        );
    }

    #[test]
    fn a_repeated_cause_prints_once() {
        let inner = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        let nested = Outer(
            "tcp connect error",
            Box::new(Outer("tcp connect error", Box::new(inner))),
        );
        assert_eq!(cause(&nested), "connection refused");
    }

    #[test]
    fn words_a_wrapper_adds_are_kept() {
        let inner =
            io::Error::other("failed to lookup address information: no such host (os error -2)");
        let nested = Outer("dns error", Box::new(inner));
        assert_eq!(
            cause(&nested),
            "dns error: failed to lookup address information: no such host"
        );
    }

    #[test]
    fn a_broken_pipe_is_quiet_and_successful() {
        let err = Err::<(), _>(io::Error::from(io::ErrorKind::BrokenPipe))
            .context("writing the table")
            .unwrap_err();
        assert!(is_broken_pipe(&err));
        assert_eq!(report(&err), 0);
        assert_eq!(report(&anyhow::Error::new(Reported)), 1);
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }

    #[derive(Debug)]
    struct Outer(&'static str, Box<dyn StdError + Send + Sync>);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl StdError for Outer {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&*self.1)
        }
    }
}
