//! A Check's outcome and its wire form (SPEC §4): the `CheckResponse` Envoy acts on.
//!
//! Envoy 1.40 does not map the gRPC status of a denial to an HTTP status, so every denial
//! carries an explicit `denied_response.status`. Headers of an allowed request are set with
//! `OVERWRITE_IF_EXISTS_OR_ADD`, never the deprecated `append: true`, which would let a
//! client's forged copy through next to ours.

use envoy_types::ext_authz::v3::pb::{
    CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue, HeaderValueOption,
    HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::rpc;

/// Why a request was denied: exactly the codes of SPEC §4, which are also the `reason`
/// label of `veto_checks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    MissingToken,
    MalformedToken,
    UnknownIssuer,
    UnknownKey,
    AlgorithmNotAllowed,
    InvalidSignature,
    Expired,
    NotYetValid,
    WrongAudience,
    Revoked,
}

impl Reason {
    pub const ALL: [Reason; 10] = [
        Reason::MissingToken,
        Reason::MalformedToken,
        Reason::UnknownIssuer,
        Reason::UnknownKey,
        Reason::AlgorithmNotAllowed,
        Reason::InvalidSignature,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::WrongAudience,
        Reason::Revoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MissingToken => "missing_token",
            Reason::MalformedToken => "malformed_token",
            Reason::UnknownIssuer => "unknown_issuer",
            Reason::UnknownKey => "unknown_key",
            Reason::AlgorithmNotAllowed => "algorithm_not_allowed",
            Reason::InvalidSignature => "invalid_signature",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::WrongAudience => "wrong_audience",
            Reason::Revoked => "revoked",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What veto answers for one Check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let the request through, setting and removing these upstream headers.
    Allow {
        set: Vec<(String, String)>,
        remove: Vec<String>,
    },
    Deny(Reason),
    /// veto cannot decide; Envoy applies its failure mode (SPEC §4).
    Unavailable(String),
}

/// gRPC status codes (google.rpc.Code) used in CheckResponse.status.
const GRPC_OK: i32 = 0;
const GRPC_UNAUTHENTICATED: i32 = 16;

/// HTTP 401 as envoy.type.v3.StatusCode.
const HTTP_UNAUTHORIZED: i32 = 401;

impl Decision {
    /// The wire answer: a CheckResponse, or a gRPC error status for `Unavailable`.
    pub fn into_response(self) -> Result<CheckResponse, tonic::Status> {
        match self {
            Decision::Allow { set, remove } => Ok(allowed(set, remove)),
            Decision::Deny(reason) => Ok(denied(reason)),
            Decision::Unavailable(why) => Err(tonic::Status::unavailable(why)),
        }
    }
}

fn header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.to_owned(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

fn allowed(set: Vec<(String, String)>, remove: Vec<String>) -> CheckResponse {
    CheckResponse {
        status: Some(rpc::Status {
            code: GRPC_OK,
            ..Default::default()
        }),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers: set.iter().map(|(k, v)| header(k, v)).collect(),
            headers_to_remove: remove,
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn denied(reason: Reason) -> CheckResponse {
    // RFC 6750 §3.1: a request with no token gets the challenge without an error code.
    let challenge = match reason {
        Reason::MissingToken => r#"Bearer realm="veto""#.to_string(),
        r => format!(r#"Bearer realm="veto", error="invalid_token", error_description="{r}""#),
    };
    let body = format!(r#"{{"error":"invalid_token","error_description":"{reason}"}}"#);
    CheckResponse {
        status: Some(rpc::Status {
            code: GRPC_UNAUTHENTICATED,
            message: reason.as_str().to_owned(),
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: HTTP_UNAUTHORIZED,
            }),
            headers: vec![
                header("www-authenticate", &challenge),
                header("content-type", "application/json"),
            ],
            body,
        })),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied_parts(r: Reason) -> (i32, Vec<(String, String)>, String) {
        let resp = Decision::Deny(r).into_response().unwrap();
        let Some(HttpResponse::DeniedResponse(d)) = resp.http_response else {
            panic!("not a denial");
        };
        let headers = d
            .headers
            .into_iter()
            .filter_map(|h| h.header.map(|h| (h.key, h.value)))
            .collect();
        (d.status.unwrap().code, headers, d.body)
    }

    #[test]
    fn a_denial_is_a_401_with_the_rfc_6750_challenge_and_a_json_body() {
        let (status, headers, body) = denied_parts(Reason::Revoked);
        assert_eq!(status, 401);
        assert!(headers.contains(&(
            "www-authenticate".into(),
            r#"Bearer realm="veto", error="invalid_token", error_description="revoked""#.into()
        )));
        assert!(headers.contains(&("content-type".into(), "application/json".into())));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error":"invalid_token","error_description":"revoked"})
        );
    }

    #[test]
    fn a_missing_token_gets_only_the_realm() {
        let (_, headers, _) = denied_parts(Reason::MissingToken);
        assert!(headers.contains(&("www-authenticate".into(), r#"Bearer realm="veto""#.into())));
    }

    #[test]
    #[allow(deprecated)] // reads `append` to prove it is never set
    fn allowed_headers_overwrite_and_absent_claims_are_removed() {
        let resp = Decision::Allow {
            set: vec![("x-jwt-sub".into(), "alice".into())],
            remove: vec!["x-jwt-azp".into()],
        }
        .into_response()
        .unwrap();
        assert_eq!(resp.status.unwrap().code, 0);
        let Some(HttpResponse::OkResponse(ok)) = resp.http_response else {
            panic!("not ok");
        };
        assert_eq!(ok.headers_to_remove, vec!["x-jwt-azp".to_string()]);
        assert_eq!(
            ok.headers[0].append_action,
            HeaderAppendAction::OverwriteIfExistsOrAdd as i32
        );
        assert_eq!(ok.headers[0].append, None);
    }

    #[test]
    fn undecidable_is_grpc_unavailable() {
        let status = Decision::Unavailable("keys".into())
            .into_response()
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }
}
