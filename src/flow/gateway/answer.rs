//! An answer as the HTTP gateway writes it: Jina's shape (`header`, `status`,
//! `routes`, `data`), and a failure's (the reason first, capped, never the
//! documents).

use super::*;

/// Jina's status code for a failed request (SUCCESS is 0).
pub(super) const ERROR: u8 = 1;

/// The longest reason an error answer carries (bytes; longer ones are cut at
/// a character boundary, saying how much was cut). An executor's message and a
/// JSON parser's (which may quote the input) are not bounded otherwise, and
/// Jina's client puts the whole body into the exception it raises.
pub const MAX_REASON: usize = 1024;

/// An answer in Jina's shape: only these four keys (the Python `jina` client
/// parses answers strictly into its protobuf request).
#[derive(Serialize)]
pub(super) struct Answer<'a, D> {
    pub(super) header: Header<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) parameters: Option<&'a Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) routes: Option<Vec<RouteJson<'a>>>,
    /// The documents: a list of them, as JSON.
    pub(super) data: D,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Header<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) request_id: Option<&'a str>,
    pub(super) exec_endpoint: &'a str,
    pub(super) status: StatusJson<'a>,
}

/// Jina's status: `{"code": 0, "description": "success"}`, or a failure with
/// its exception.
#[derive(Serialize)]
pub(super) struct StatusJson<'a> {
    pub(super) code: u8,
    pub(super) description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) exception: Option<Exception<'a>>,
}

#[derive(Serialize)]
pub(super) struct Exception<'a> {
    pub(super) name: &'a str,
    pub(super) args: [&'a str; 1],
    pub(super) executor: &'a str,
}

/// Jina's RouteProto: RFC 3339 timestamps, a status code.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RouteJson<'a> {
    pub(super) executor: &'a str,
    pub(super) start_time: String,
    pub(super) end_time: String,
    pub(super) status: RouteStatus,
}

#[derive(Serialize)]
pub(super) struct RouteStatus {
    pub(super) code: u8,
}

/// Jina's status of a failed request: which executor, what kind, why.
pub(super) fn failure<'a>(executor: &'a str, kind: ErrorKind, message: &'a str) -> StatusJson<'a> {
    StatusJson {
        code: ERROR,
        description: format!("executor `{executor}` failed ({kind}): {message}"),
        exception: Some(Exception {
            name: kind.as_str(),
            args: [message],
            executor,
        }),
    }
}

pub(super) fn error(
    code: StatusCode,
    endpoint: &str,
    request_id: Option<&str>,
    executor: &str,
    kind: ErrorKind,
    message: &str,
) -> Response {
    failed(code, endpoint, request_id, (executor, kind, message), None)
}

/// A failed request's answer (docs/gateway.md, "Errors"): Jina's status
/// (`code`, `description`) first, then the header with the full status and
/// the routes; never the documents, and a reason of at most [`MAX_REASON`]
/// bytes, so any client that prints the body prints the reason first.
#[derive(Serialize)]
pub(super) struct FailureAnswer<'a> {
    pub(super) code: u8,
    pub(super) description: &'a str,
    pub(super) header: Header<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) routes: Option<Vec<RouteJson<'a>>>,
}

/// Answers `code` with a [`FailureAnswer`] for `(executor, kind, message)`.
pub(super) fn failed(
    code: StatusCode,
    endpoint: &str,
    request_id: Option<&str>,
    (executor, kind, message): (&str, ErrorKind, &str),
    routes: Option<Vec<RouteJson<'_>>>,
) -> Response {
    let message = cap(message);
    let status = failure(executor, kind, &message);
    let description = status.description.clone();
    let answer = FailureAnswer {
        code: ERROR,
        description: &description,
        header: Header {
            request_id,
            exec_endpoint: endpoint,
            status,
        },
        routes,
    };
    answered(
        (code, Json(answer)).into_response(),
        endpoint,
        request_id,
        kind.as_str(),
    )
}

/// `text` cut to at most [`MAX_REASON`] bytes at a character boundary, saying
/// how many bytes were cut.
pub(super) fn cap(text: &str) -> std::borrow::Cow<'_, str> {
    crate::wire::cut_reason(text, MAX_REASON)
}

/// Microseconds since the Unix epoch as RFC 3339 UTC
/// (`2026-11-24T21:00:00.000100Z`); past the year 9999, its last microsecond.
///
/// Written digit by digit into a fixed buffer rather than with humantime's
/// `Display` (which the tests check it against): an answer carries two per
/// route, and going through `fmt` and a growing `String` was 1% of a 1-doc
/// request's CPU.
pub(super) fn rfc3339(us: u64) -> String {
    /// 9999-12-31T23:59:59.999999Z: the last instant RFC 3339 can write.
    const LAST: u64 = 253_402_300_800_000_000 - 1;
    let us = us.min(LAST);
    let (secs, micros) = (us / 1_000_000, us % 1_000_000);
    let (days, secs) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    let mut out = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut value: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, secs / 3600);
    put(14, 2, secs / 60 % 60);
    put(17, 2, secs % 60);
    put(20, 6, micros);
    out.iter().map(|&b| char::from(b)).collect()
}

/// The proleptic Gregorian date of a day counted from 1970-01-01: Howard
/// Hinnant's `civil_from_days`, for days on or after the epoch.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z / 146_097;
    let doe = z % 146_097; // day of the 400-year era
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // from March 1st
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}
