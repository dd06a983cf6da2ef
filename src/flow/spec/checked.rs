//! Values checked as they are read, so a bad one fails the parse with
//! serde_yaml's line, column and key path (`line 5 column 22:
//! pods[0].timeout_request: ...`), in `flow check` as in `flow`. The checks
//! run inside the value's own visitor: that is where serde_yaml marks the
//! error with the value's position. The field keeps its text (or number);
//! `resolve::resolve` turns it into the typed setting.

use std::fmt;

use serde::Deserializer;
use serde::de::{Error, Visitor};
use serde_json::Value;

/// A scalar (text or number; `null` is absent) checked by `check`.
struct Scalar {
    expecting: &'static str,
    check: fn(&str) -> Result<(), String>,
}

impl<'de> Visitor<'de> for Scalar {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
        (self.check)(v).map_err(E::custom)?;
        Ok(Some(Value::String(v.to_string())))
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<Self::Value, E> {
        (self.check)(&v.to_string()).map_err(E::custom)?;
        Ok(Some(Value::from(v)))
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<Self::Value, E> {
        (self.check)(&v.to_string()).map_err(E::custom)?;
        Ok(Some(Value::from(v)))
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<Self::Value, E> {
        (self.check)(&v.to_string()).map_err(E::custom)?;
        Ok(Some(Value::from(v)))
    }
}

fn text(value: Option<Value>) -> Option<String> {
    value.map(|v| match v {
        Value::String(s) => s,
        other => other.to_string(),
    })
}

pub fn limit_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_any(Scalar {
        expecting: "a duration (`30s`, `500ms`, a bare number of seconds; `-1`: no limit)",
        check: |v| crate::units::parse_limit_duration(v).map(drop),
    })
    .map(text)
}

pub fn limit_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    d.deserialize_any(Scalar {
        expecting: "a size (`64MiB`, `1GiB`, a bare number of GiB; `-1`: no limit)",
        check: |v| crate::units::parse_limit_size(v).map(drop),
    })
}

pub fn dump_interval<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    d.deserialize_any(Scalar {
        expecting: "a duration, `0` (durable) or `never`",
        check: |v| v.parse::<crate::pea::DumpPolicy>().map(drop),
    })
}

pub fn on_error_strategy<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_any(Scalar {
        expecting: "an error strategy",
        check: |v| {
            <crate::pea::OnError as clap::ValueEnum>::from_str(v, true)
                .map(drop)
                .map_err(|_| {
                    format!("`{v}` is not an error strategy: use IGNORE, SKIP_EXECUTOR, SKIP_HANDLE or THROW_EARLY (any case)")
                })
        },
    })
    .map(text)
}
