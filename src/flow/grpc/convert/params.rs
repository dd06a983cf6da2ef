//! `google.protobuf.Struct` parameters as JSON object text (the envelope's form).

use std::fmt::Write as _;

use super::{json_f64, json_str};

/// `google.protobuf.Struct` parameters as JSON object text. Numbers are
/// doubles in a Struct (`3` arrives as `3.0`): integral ones below 2^53 are
/// written as integers (`3`), others as they are (`0.5`). Nesting is bounded
/// by prost's decoding recursion limit.
pub fn struct_json(parameters: Option<&prost_types::Struct>) -> String {
    let mut out = String::new();
    match parameters {
        None => out.push_str("{}"),
        Some(s) => struct_fields_json(s, &mut out),
    }
    out
}

fn struct_fields_json(s: &prost_types::Struct, out: &mut String) {
    out.push('{');
    // Sorted, so the same parameters give the same text.
    let mut fields: Vec<_> = s.fields.iter().collect();
    fields.sort_by(|a, b| a.0.cmp(b.0));
    for (i, (key, value)) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(key, out);
        out.push(':');
        value_json(value, out);
    }
    out.push('}');
}

fn value_json(value: &prost_types::Value, out: &mut String) {
    use prost_types::value::Kind;
    match &value.kind {
        None | Some(Kind::NullValue(_)) => out.push_str("null"),
        // A Struct carries every number as a double; integral ones are
        // written as integers, so `top_k: 3` reads as an integer in an
        // executor, as it does over HTTP (docs/grpc.md, "Parameters").
        Some(Kind::NumberValue(v)) if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 => {
            let _ = write!(out, "{}", *v as i64);
        }
        // Parameters keep the old rule: NaN and the infinities are `null`
        // (as serde_json writes them; documents' tags refuse them).
        Some(Kind::NumberValue(v)) => {
            if json_f64(*v, out).is_err() {
                out.push_str("null");
            }
        }
        Some(Kind::StringValue(s)) => json_str(s, out),
        Some(Kind::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(Kind::StructValue(s)) => struct_fields_json(s, out),
        Some(Kind::ListValue(list)) => {
            out.push('[');
            for (i, v) in list.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                value_json(v, out);
            }
            out.push(']');
        }
    }
}
