//! The audit log: one line under the `veto::audit` target for every admin request that
//! changes rules, and for every admin request refused (a missing or wrong token, a body that
//! is not JSON), so an operator sees who changed what and who tried. Tokens appear only as
//! hash prefixes.
//!
//! tracing records a field as a number, a bool or a string, never a list, and its
//! structured-value support (`valuable`) needs an unstable build flag. So a list field of
//! an audit line (`ids`) is recorded as JSON text with [`list`], and [`JsonLines`], the log
//! format, writes it into the line as a real JSON array.

use std::fmt;

use serde_json::Value;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The target of every audit line.
pub const TARGET: &str = "veto::audit";

/// Fields of audit lines that hold a list, recorded with [`list`].
const LIST_FIELDS: [&str; 1] = ["ids"];

/// A list as the JSON text [`JsonLines`] turns into an array.
pub fn list(items: &[String]) -> String {
    // Serializing strings cannot fail.
    serde_json::to_string(items).unwrap_or_default()
}

/// Wraps a JSON log format: audit lines get their list fields as JSON arrays; every other
/// line is written by the inner format untouched (and without the extra work).
pub struct JsonLines<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for JsonLines<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if event.metadata().target() != TARGET {
            return self.0.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        writer.write_str(&lists_as_arrays(line))
    }
}

/// Replaces `"ids":"[\"a\",\"b\"]"` with `"ids":["a","b"]` in a JSON log line, keeping the
/// order of its fields. A line that is not JSON, or a field that does not hold a JSON
/// array, is left as it is.
fn lists_as_arrays(mut line: String) -> String {
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(&line) else {
        return line;
    };
    for name in LIST_FIELDS {
        let Some(Value::String(text)) = fields.get(name) else {
            continue;
        };
        if !matches!(serde_json::from_str(text), Ok(Value::Array(_))) {
            continue;
        }
        // The log format serializes strings with serde_json too, so this is exactly how
        // the field appears in the line.
        let as_string = format!("\"{name}\":{}", Value::String(text.clone()));
        line = line.replacen(&as_string, &format!("\"{name}\":{text}"), 1);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_field_becomes_an_array_and_the_rest_stays() {
        let ids = list(&["sub:a".into(), "session:\"q\"@https://i".into()]);
        let line =
            serde_json::json!({"level": "INFO", "ids": ids, "who": "ab12"}).to_string() + "\n";
        let out = lists_as_arrays(line);
        let parsed: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            parsed["ids"],
            serde_json::json!(["sub:a", "session:\"q\"@https://i"])
        );
        assert_eq!(parsed["who"], "ab12");
        assert!(out.ends_with('\n'));
        let not_a_list = serde_json::json!({"ids": "sub:a"}).to_string();
        assert_eq!(lists_as_arrays(not_a_list.clone()), not_a_list);
    }
}
