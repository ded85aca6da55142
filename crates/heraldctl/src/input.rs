//! What flags and files hand in, checked before any call is made: payload files (or standard
//! input), "Name: value" headers, schemes, statuses, times and webhook secrets. Every refusal
//! says what was given and what is expected.

use std::collections::HashMap;
use std::io::Read;

use anyhow::{Context, anyhow, bail};
use herald_core::signing::Scheme;
use herald_proto::v1 as pb;

/// The bytes of `path`, or of standard input for `None` and `-`.
pub fn read_input(path: Option<&str>) -> anyhow::Result<Vec<u8>> {
    match path {
        None | Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read standard input")?;
            Ok(buf)
        }
        Some(p) => std::fs::read(p).with_context(|| format!("cannot read {p}")),
    }
}

/// "Name: value" pairs, names and values trimmed.
pub fn parse_headers(list: &[String]) -> anyhow::Result<HashMap<String, String>> {
    list.iter()
        .map(|h| {
            let (k, v) = h
                .split_once(':')
                .with_context(|| format!("header {h:?} is not \"Name: value\""))?;
            Ok((k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

pub fn parse_scheme(s: &str) -> anyhow::Result<pb::SigningScheme> {
    Ok(match s.parse::<Scheme>()? {
        Scheme::Standard => pb::SigningScheme::Standard,
        Scheme::Timestamped => pb::SigningScheme::Timestamped,
        Scheme::Hex => pb::SigningScheme::Hex,
    })
}

/// Retry delays such as "1m,5m,1h" in milliseconds.
pub fn parse_schedule(s: &str) -> anyhow::Result<Vec<u32>> {
    Ok(herald_core::schedule::RetrySchedule::parse(s)?.as_millis())
}

pub fn parse_status(s: &str) -> anyhow::Result<pb::DeliveryStatus> {
    Ok(match s {
        "pending" => pb::DeliveryStatus::Pending,
        "success" => pb::DeliveryStatus::Success,
        "retrying" => pb::DeliveryStatus::Retrying,
        "failed" => pb::DeliveryStatus::Failed,
        other => bail!("unknown status {other:?} (pending, success, retrying, failed)"),
    })
}

/// An RFC 3339 time as a protobuf timestamp.
pub fn parse_time(s: &str) -> anyhow::Result<prost_types::Timestamp> {
    let t = chrono::DateTime::parse_from_rfc3339(s)
        .map_err(|e| anyhow!("{s:?} is not an RFC 3339 time (e.g. 2026-11-23T08:00:00Z): {e}"))?;
    Ok(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    })
}

/// A webhook secret given to `listen` or `verify`: one line (a trailing line break, as
/// `$(cat file)` or a here-string leaves it, is dropped). Several lines usually mean several
/// secrets captured at once, e.g. `--get secret` over more than one endpoint.
pub fn webhook_secret(raw: &str) -> anyhow::Result<String> {
    let secret = raw.trim_end_matches(['\r', '\n']);
    if secret.trim().is_empty() {
        bail!("the webhook secret is empty (--secret or HERALD_WEBHOOK_SECRET)");
    }
    let lines = secret.lines().count();
    if lines > 1 {
        bail!(
            "the webhook secret spans {lines} lines; give exactly one secret (--secret or \
             HERALD_WEBHOOK_SECRET), e.g. the output of `heraldctl --get secret endpoint secret ID`"
        );
    }
    Ok(secret.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_split_at_the_first_colon() {
        let h = parse_headers(&["X-A: b:c".into(), "X-D:e".into()]).unwrap();
        assert_eq!(h["X-A"], "b:c");
        assert_eq!(h["X-D"], "e");
        let err = parse_headers(&["nocolon".into()]).unwrap_err().to_string();
        assert_eq!(err, "header \"nocolon\" is not \"Name: value\"");
    }

    #[test]
    fn statuses_and_times_are_checked() {
        assert_eq!(parse_status("failed").unwrap(), pb::DeliveryStatus::Failed);
        assert!(
            parse_status("done")
                .unwrap_err()
                .to_string()
                .contains("pending, success")
        );
        let t = parse_time("2026-11-23T08:00:00.5Z").unwrap();
        assert_eq!((t.seconds, t.nanos), (1_795_420_800, 500_000_000));
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn schedules_and_schemes_parse() {
        assert_eq!(parse_schedule("1m,5s").unwrap(), vec![60_000, 5_000]);
        assert_eq!(parse_scheme("hex").unwrap(), pb::SigningScheme::Hex);
        assert!(parse_scheme("md5").is_err());
    }

    #[test]
    fn a_secret_is_one_line() {
        assert_eq!(webhook_secret("whsec_abc\n").unwrap(), "whsec_abc");
        let err = webhook_secret("whsec_a\nwhsec_b\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("the webhook secret spans 2 lines"), "{err}");
        assert!(webhook_secret("\n").is_err());
    }
}
