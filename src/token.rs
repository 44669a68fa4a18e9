//! Finding the bearer token in the headers Envoy forwards.
//!
//! Envoy sends headers either as a map of merged values (`headers`) or, with
//! `encode_raw_headers`, as a list of raw byte values (`header_map`). Both are read, and the
//! raw form wins when present. A header sent twice is ambiguous (which token is the real
//! one?) and rejected: in `headers` Envoy has joined the copies with a comma, which no JWT
//! contains; in `header_map` we see both entries.

use std::borrow::Cow;

use envoy_types::ext_authz::v3::pb::CheckRequest;

use crate::jwt::MAX_TOKEN_BYTES;

/// The bytes of a compact JWS: base64url and the dot. A table, because this runs over every
/// byte of every token on every Check.
static COMPACT_JWS: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.';
        b += 1;
    }
    t
};

/// Why no usable token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// No credentials, or credentials of another scheme (RFC 6750 §3.1).
    Missing,
    /// Something is there but it is not a single well-formed compact JWS.
    Malformed(&'static str),
}

/// The bearer token of a Check request, read from `header` (lower-case).
///
/// For `authorization` the value must be `Bearer <token>` (scheme case-insensitive, RFC 7235
/// §2.1); a custom header may also carry the bare token.
pub fn bearer<'a>(req: &'a CheckRequest, header: &str) -> Result<Cow<'a, str>, TokenError> {
    match header_value(req, header)?.ok_or(TokenError::Missing)? {
        Cow::Borrowed(value) => from_value(value, header).map(Cow::Borrowed),
        Cow::Owned(value) => from_value(&value, header).map(|t| Cow::Owned(t.to_owned())),
    }
}

/// The token inside one header value.
fn from_value<'v>(value: &'v str, header: &str) -> Result<&'v str, TokenError> {
    if value.len() > MAX_TOKEN_BYTES + 16 {
        return Err(TokenError::Malformed("header value too long"));
    }
    let trimmed = value.trim_matches([' ', '\t']);
    let token = match trimmed.split_once([' ', '\t']) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => {
            rest.trim_start_matches([' ', '\t'])
        }
        Some(_) => return Err(TokenError::Missing),
        None if trimmed.eq_ignore_ascii_case("bearer") => {
            return Err(TokenError::Malformed("bearer scheme without a token"));
        }
        None if header == "authorization" => return Err(TokenError::Missing),
        None => trimmed,
    };
    if token.is_empty() {
        return Err(TokenError::Malformed("empty token"));
    }
    // A compact JWS is base64url segments joined by dots (RFC 7515 §7.1); anything else,
    // such as the comma of a duplicated header, is not a token.
    if !token.bytes().all(|b| COMPACT_JWS[usize::from(b)]) {
        return Err(TokenError::Malformed("characters outside base64url"));
    }
    Ok(token)
}

/// The value of `header`, from `header_map` when Envoy sent raw headers, else `headers`.
fn header_value<'a>(
    req: &'a CheckRequest,
    header: &str,
) -> Result<Option<Cow<'a, str>>, TokenError> {
    let Some(http) = req
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
    else {
        return Ok(None);
    };
    if let Some(map) = http.header_map.as_ref().filter(|m| !m.headers.is_empty()) {
        let mut found = map
            .headers
            .iter()
            .filter(|h| h.key.eq_ignore_ascii_case(header));
        let Some(first) = found.next() else {
            return Ok(None);
        };
        if found.next().is_some() {
            return Err(TokenError::Malformed("the header is sent more than once"));
        }
        return if first.raw_value.is_empty() {
            Ok(Some(Cow::Borrowed(first.value.as_str())))
        } else {
            std::str::from_utf8(&first.raw_value)
                .map(|v| Some(Cow::Borrowed(v)))
                .map_err(|_| TokenError::Malformed("the header is not UTF-8"))
        };
    }
    Ok(http.headers.get(header).map(|v| Cow::Borrowed(v.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::ext_authz::v3::pb::HeaderValue;
    use envoy_types::pb::envoy::config::core::v3::HeaderMap;
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};

    fn with_http(http: HttpRequest) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(Request {
                    http: Some(http),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> CheckRequest {
        with_http(HttpRequest {
            headers: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        })
    }

    fn raw(pairs: &[(&str, &[u8])]) -> CheckRequest {
        with_http(HttpRequest {
            header_map: Some(HeaderMap {
                headers: pairs
                    .iter()
                    .map(|(k, v)| HeaderValue {
                        key: k.to_string(),
                        raw_value: v.to_vec(),
                        ..Default::default()
                    })
                    .collect(),
            }),
            ..Default::default()
        })
    }

    const AUTH: &str = "authorization";

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for v in [
            "Bearer a.b.c",
            "bearer a.b.c",
            "BEARER   a.b.c ",
            "\tBearer a.b.c",
        ] {
            assert_eq!(
                bearer(&headers(&[(AUTH, v)]), AUTH).as_deref(),
                Ok("a.b.c"),
                "{v}"
            );
        }
    }

    #[test]
    fn no_header_or_another_scheme_is_a_missing_token() {
        assert_eq!(bearer(&headers(&[]), AUTH), Err(TokenError::Missing));
        assert_eq!(
            bearer(&CheckRequest::default(), AUTH),
            Err(TokenError::Missing)
        );
        assert_eq!(
            bearer(&headers(&[(AUTH, "Basic dXNlcjpwYXNz")]), AUTH),
            Err(TokenError::Missing)
        );
        assert_eq!(
            bearer(&headers(&[(AUTH, "a.b.c")]), AUTH),
            Err(TokenError::Missing)
        );
    }

    #[test]
    fn empty_joined_or_odd_tokens_are_malformed() {
        for v in [
            "Bearer",
            "Bearer ",
            "Bearer a.b.c,Bearer d.e.f",
            "Bearer a b",
            "Bearer a\u{e9}",
        ] {
            assert!(
                matches!(
                    bearer(&headers(&[(AUTH, v)]), AUTH),
                    Err(TokenError::Malformed(_))
                ),
                "{v:?}"
            );
        }
        let huge = format!("Bearer {}", "a".repeat(40_000));
        assert!(matches!(
            bearer(&headers(&[(AUTH, &huge)]), AUTH),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn raw_headers_are_read_and_duplicates_or_non_utf8_are_malformed() {
        assert_eq!(
            bearer(&raw(&[("Authorization", b"Bearer a.b.c")]), AUTH).as_deref(),
            Ok("a.b.c")
        );
        assert!(matches!(
            bearer(
                &raw(&[(AUTH, b"Bearer a.b.c"), (AUTH, b"Bearer d.e.f")]),
                AUTH
            ),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            bearer(&raw(&[(AUTH, b"Bearer \xff\xfe")]), AUTH),
            Err(TokenError::Malformed(_))
        ));
        assert_eq!(
            bearer(&raw(&[("x-other", b"1")]), AUTH),
            Err(TokenError::Missing)
        );
    }

    #[test]
    fn a_custom_header_may_carry_the_bare_token() {
        let req = headers(&[("x-token", "a.b.c")]);
        assert_eq!(bearer(&req, "x-token").as_deref(), Ok("a.b.c"));
    }
}
