//! What a client gets back through Envoy: either the app's echo ([`AppSaw`]) or veto's
//! denial, checked against SPEC §4 to the byte, because clients and their OAuth
//! libraries parse exactly these headers and bodies.

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderName, WWW_AUTHENTICATE};
use serde_json::{Value, json};

/// The request as the app behind Envoy saw it (see `upstream.rs` for the shape).
pub struct AppSaw(Value);

impl AppSaw {
    /// Reads the echo app's answer; panics with the status and body when the request did
    /// not reach the app.
    pub async fn read(response: reqwest::Response) -> AppSaw {
        AppSaw::read_for(response, "the request").await
    }

    /// As [`AppSaw::read`], naming `what` was sent in the failure message (for loops over
    /// many cases).
    pub async fn read_for(response: reqwest::Response, what: &str) -> AppSaw {
        let status = response.status();
        let body = response.text().await.expect("read the response body");
        assert_eq!(
            status,
            StatusCode::OK,
            "expected {what} to reach the app, got {status}: {body}"
        );
        AppSaw(
            serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("a 200 that is not the echo app's JSON ({e}): {body}")),
        )
    }

    /// Every copy of header `name` the app received, in order; empty when it got none.
    pub fn header(&self, name: &str) -> Vec<String> {
        self.0["headers"][name]
            .as_array()
            .map(|copies| {
                copies
                    .iter()
                    .map(|copy| copy.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn path(&self) -> &str {
        self.0["path"].as_str().unwrap_or_default()
    }

    pub fn method(&self) -> &str {
        self.0["method"].as_str().unwrap_or_default()
    }
}

/// Asserts that `response` is veto's denial for `reason`, exactly as SPEC §4 defines it:
/// 401, one `WWW-Authenticate: Bearer realm="veto", error="invalid_token",
/// error_description="<reason>"`, `content-type: application/json`, and the body
/// `{"error":"invalid_token","error_description":"<reason>"}`.
pub async fn assert_denied(response: reqwest::Response, reason: &str) {
    Denial::read(response).await.assert_is(reason);
}

/// Asserts that `response` is veto's denial of a request that carried no token: as
/// [`assert_denied`] with `missing_token`, except that `WWW-Authenticate` is only
/// `Bearer realm="veto"` (RFC 6750 §3.1: no error attributes when no credentials were sent).
pub async fn assert_denied_as_missing_token(response: reqwest::Response) {
    let denial = Denial::read(response).await;
    denial.assert_status_and_body("missing_token");
    assert_eq!(
        denial.www_authenticate,
        [r#"Bearer realm="veto""#],
        "WWW-Authenticate of a request without a token (body: {})",
        denial.body
    );
}

/// Asserts that `response` is a well-formed veto denial (as [`assert_denied`]) and returns
/// its reason, for cases where more than one reason is acceptable.
pub async fn denial_reason(response: reqwest::Response) -> String {
    let denial = Denial::read(response).await;
    let reason = serde_json::from_str::<Value>(&denial.body)
        .ok()
        .and_then(|body| body["error_description"].as_str().map(str::to_owned))
        .unwrap_or_else(|| {
            panic!(
                "expected a denial with a JSON body carrying error_description, got {}: {}",
                denial.status, denial.body
            )
        });
    denial.assert_is(&reason);
    reason
}

/// The parts of a response that make up a denial, read once so every assertion message
/// can show the body.
struct Denial {
    status: StatusCode,
    www_authenticate: Vec<String>,
    content_type: Vec<String>,
    body: String,
}

impl Denial {
    async fn read(response: reqwest::Response) -> Denial {
        let all = |name: HeaderName| {
            response
                .headers()
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect::<Vec<_>>()
        };
        let www_authenticate = all(WWW_AUTHENTICATE);
        let content_type = all(CONTENT_TYPE);
        Denial {
            status: response.status(),
            www_authenticate,
            content_type,
            body: response.text().await.expect("read the response body"),
        }
    }

    fn assert_is(&self, reason: &str) {
        self.assert_status_and_body(reason);
        let expected =
            format!(r#"Bearer realm="veto", error="invalid_token", error_description="{reason}""#);
        assert_eq!(
            self.www_authenticate,
            [expected],
            "WWW-Authenticate of a {reason} denial (body: {})",
            self.body
        );
    }

    fn assert_status_and_body(&self, reason: &str) {
        assert_eq!(
            self.status,
            StatusCode::UNAUTHORIZED,
            "expected a 401 {reason} denial, body: {}",
            self.body
        );
        assert_eq!(
            self.content_type,
            ["application/json"],
            "content-type of a {reason} denial (body: {})",
            self.body
        );
        let body: Value = serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!("a {reason} denial's body is not JSON ({e}): {}", self.body)
        });
        assert_eq!(
            body,
            json!({"error": "invalid_token", "error_description": reason}),
            "body of a {reason} denial"
        );
    }
}
