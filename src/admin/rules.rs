//! The rules API: push, list, get, delete, explain, and the session-blacklist endpoints of
//! the Reactive Interaction Gateway (`/v3/session-blacklist`), so a user of that gateway can
//! point the same calls at veto.
//!
//! Bodies are validated with the same code as the rules file; a batch is applied whole or
//! not at all. Every change writes one audit line: who (a hash prefix of the admin token),
//! what (rule ids), and the result; so does every request refused (see [`audit`]).

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::audit;
use super::auth::Caller;
use super::{AdminState, ApiError, MAX_BODY_BYTES};
use crate::decision::Decision;
use crate::revocation::parse::{Origin, RawRule, Scalar};
use crate::revocation::{Rule, Selector, Snapshot, Source, id_candidates};
use crate::state::{DeleteOutcome, unix_now};

/// Size of the pieces a rule listing is sent in.
const LIST_CHUNK_BYTES: usize = 64 * 1024;

/// Whether an endpoint changes rules (403 without a configured token) or only reads them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

/// Checks the admin token; the `Ok` value names the caller for the audit log. A refusal
/// writes its own audit line: who tried (a hash prefix of the token presented), what, and
/// why it was refused.
fn authorize(
    s: &AdminState,
    headers: &HeaderMap,
    access: Access,
    action: &'static str,
) -> Result<String, ApiError> {
    let refused = |who: Option<String>, result: &'static str, error: ApiError| {
        let who = who.as_deref().unwrap_or("-");
        tracing::warn!(target: audit::TARGET, who, action, result, status = error.status.as_u16(), "admin request refused");
        error
    };
    match s
        .auth
        .caller(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()))
    {
        Caller::Admin(who) => Ok(who),
        Caller::NoTokenConfigured if access == Access::Read => Ok("anonymous".into()),
        Caller::NoTokenConfigured => Err(refused(
            None,
            "forbidden",
            ApiError::new(
                StatusCode::FORBIDDEN,
                "writes are disabled because no admin token is configured: set admin.token_file in the veto config to a file holding a bearer token, then send it as Authorization: Bearer <token>",
            ),
        )),
        Caller::Unauthenticated { presented } => Err(refused(
            presented,
            "unauthorized",
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong admin token: send Authorization: Bearer <the token in admin.token_file>",
            ),
        )),
    }
}

/// Writes the audit line of a change refused for its body (not JSON, too large, invalid)
/// and passes the error on.
fn rejected(who: &str, action: &'static str, error: ApiError) -> ApiError {
    tracing::info!(target: audit::TARGET, who, action, result = "invalid", status = error.status.as_u16(), error = error.message(), "change rejected");
    error
}

fn now_ms() -> i64 {
    crate::clock::unix_now_ms()
}

/// Reads a JSON body of at most 1 MiB. Called after the caller is authorized, so an
/// unauthenticated client gets its 401 without veto reading what it sent. An oversized body
/// is read on (and thrown away) up to a few MiB before the 413, so an ordinary client sees
/// the 413 rather than a connection reset in the middle of its upload.
async fn json_body(body: Body) -> Result<Value, ApiError> {
    use tokio_stream::StreamExt;
    const DRAIN_LIMIT: usize = 4 * MAX_BODY_BYTES;
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            )
        })?;
        seen = seen.saturating_add(chunk.len());
        if seen <= MAX_BODY_BYTES {
            bytes.extend_from_slice(&chunk);
        } else if seen > DRAIN_LIMIT {
            break;
        }
    }
    if seen > MAX_BODY_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {MAX_BODY_BYTES} bytes"),
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the body is not JSON: {e}"),
        )
    })
}

/// 400 naming every invalid field; `errors` lists them one by one as well.
fn invalid(errors: Vec<String>) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        body: json!({ "error": errors.join("; "), "errors": errors }),
    }
}

/// A rule as the API shows it: its id, where it came from, and its fields.
fn rule_view(rule: &Rule, source: Source) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), rule.id().into());
    m.insert("source".into(), source.as_str().into());
    m.extend(rule.to_json());
    Value::Object(m)
}

/// `POST /v1/rules`: a rule, or `{"rules": [...], "ttl_seconds": N}`.
pub async fn push(
    State(s): State<AdminState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let who = authorize(&s, &headers, Access::Write, "push")?;
    let body = json_body(body)
        .await
        .map_err(|e| rejected(&who, "push", e))?;
    let known = |iss: &str| s.authz.verifier.issuer(iss).is_some();
    let rules = rules_from_body(&body, now_ms(), s.max_token_lifetime, &known)
        .map_err(|errors| rejected(&who, "push", invalid(errors)))?;
    store(&s, &who, rules).await
}

/// Pushes validated rules and answers 201 with what is stored under their ids.
async fn store(s: &AdminState, who: &str, rules: Vec<Rule>) -> Result<Response, ApiError> {
    let ids: Vec<String> = rules.iter().map(Rule::id).collect();
    let keys: Vec<(Selector, Option<String>)> = rules
        .iter()
        .map(|r| {
            (
                r.selector.clone(),
                r.scope.iss.as_deref().map(str::to_owned),
            )
        })
        .collect();
    match s.state.push(rules).await {
        Ok(version) => {
            tracing::info!(target: audit::TARGET, who, action = "push", ids = %audit::list(&ids), version, result = "ok", "rules pushed");
            let snapshot = s.state.reader().load_full();
            let stored: Vec<Value> = keys
                .iter()
                .filter_map(|(sel, iss)| snapshot.pushed.get(sel, iss.as_deref()))
                .map(|r| rule_view(&r, Source::Pushed))
                .collect();
            Ok((
                StatusCode::CREATED,
                Json(json!({ "version": version, "rules": stored })),
            )
                .into_response())
        }
        Err(e) => {
            tracing::error!(target: audit::TARGET, who, action = "push", ids = %audit::list(&ids), result = "error", error = %e, "push failed");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                e.to_string(),
            ))
        }
    }
}

/// Validates a push body into rules, or every error with its field.
fn rules_from_body(
    body: &Value,
    now_ms: i64,
    max_token_lifetime: Option<i64>,
    known_issuer: &dyn Fn(&str) -> bool,
) -> Result<Vec<Rule>, Vec<String>> {
    let Some(obj) = body.as_object() else {
        return Err(vec![
            "expected a rule object or {\"rules\": [...]}".to_string(),
        ]);
    };
    let origin = Origin::Api { now_ms };
    let mut out = Vec::new();
    let mut errors = Vec::new();
    if let Some(list) = obj.get("rules") {
        for key in obj.keys().filter(|k| *k != "rules" && *k != "ttl_seconds") {
            errors.push(format!(
                "{key}: unknown field beside rules (expected rules, ttl_seconds)"
            ));
        }
        let batch_ttl = match obj.get("ttl_seconds") {
            None => None,
            Some(v) => match v.as_i64().filter(|n| *n > 0) {
                Some(n) => Some(n),
                None => {
                    errors.push("ttl_seconds: expected a positive whole number of seconds".into());
                    None
                }
            },
        };
        let Some(list) = list.as_array() else {
            errors.push("rules: expected a list of rules".into());
            return Err(errors);
        };
        if list.is_empty() {
            errors.push("rules: the list is empty".into());
        }
        for (i, item) in list.iter().enumerate() {
            let mut raw = raw_rule(item);
            if let Some(ttl) = batch_ttl
                && raw.ttl_seconds.is_none()
                && raw.expires_at.is_none()
            {
                raw.ttl_seconds = Some(Scalar::Int(ttl));
            }
            let path = format!("rules[{i}]");
            match raw
                .validate(&path, origin)
                .and_then(|r| can_match(r, &path, now_ms, known_issuer))
            {
                Ok(rule) => out.push(rule),
                Err(e) => errors.extend(e),
            }
        }
    } else {
        match raw_rule(body)
            .validate("", origin)
            .and_then(|r| can_match(r, "", now_ms, known_issuer))
        {
            Ok(rule) => out.push(rule),
            Err(e) => errors.extend(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if let Some(lifetime) = max_token_lifetime {
        let now = now_ms.div_euclid(1000);
        for rule in &mut out {
            // A session or exact-token rule can only match tokens that exist now, and none
            // of those outlives max_token_lifetime: the rule prunes itself after that.
            let bounded = matches!(
                rule.selector,
                Selector::Session(_) | Selector::TokenSha256(_)
            );
            if bounded && rule.scope.expires_at().is_none() {
                rule.scope
                    .set_expires_at(Some(now.saturating_add(lifetime)));
            }
        }
    }
    Ok(out)
}

/// A pushed rule that could never match anything is a mistake to report, not to store: an
/// `iss` no issuer has (a typo would leave the token it was meant for allowed), or an
/// `expires_at` already past.
fn can_match(
    rule: Rule,
    path: &str,
    now_ms: i64,
    known_issuer: &dyn Fn(&str) -> bool,
) -> Result<Rule, Vec<String>> {
    let at = |field: &str| {
        if path.is_empty() {
            field.to_string()
        } else {
            format!("{path}.{field}")
        }
    };
    let mut errors = Vec::new();
    if let Some(iss) = rule.scope.iss.as_deref()
        && !known_issuer(iss)
    {
        errors.push(format!(
            "{}: `{iss}` is not a configured issuer, so the rule could never match",
            at("iss")
        ));
    }
    if rule
        .scope
        .expires_at()
        .is_some_and(|t| t <= now_ms.div_euclid(1000))
    {
        errors.push(format!("{}: already in the past", at("expires_at")));
    }
    if errors.is_empty() {
        Ok(rule)
    } else {
        Err(errors)
    }
}

/// A JSON value as a raw rule; anything that is not an object becomes a rule that fails
/// validation with "expected a rule object".
fn raw_rule(v: &Value) -> RawRule {
    // RawRule accepts any JSON shape, so this cannot fail; a default (invalid) rule is a
    // safe fallback that validation rejects.
    serde_json::from_value(v.clone()).unwrap_or_default()
}

#[derive(serde::Deserialize)]
pub struct ListQuery {
    source: Option<String>,
}

/// `GET /v1/rules[?source=file|pushed]`: the effective snapshot.
pub async fn list(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    authorize(&s, &headers, Access::Read, "list")?;
    let wanted = match q.source.as_deref() {
        None => None,
        Some("file") => Some(Source::File),
        Some("pushed") => Some(Source::Pushed),
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("source: `{other}` is not file or pushed"),
            ));
        }
    };
    let snapshot = s.state.reader().load_full();
    // A snapshot may hold a million rules: the listing is written in chunks as the client
    // reads it, never built whole in memory.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let mut buf = format!(r#"{{"version":{},"rules":["#, snapshot.version).into_bytes();
        let mut first = true;
        for (source, table) in [
            (Source::File, &snapshot.file),
            (Source::Pushed, &snapshot.pushed),
        ] {
            if wanted.is_some_and(|w| w != source) {
                continue;
            }
            for rule in table.rules() {
                if !first {
                    buf.push(b',');
                }
                first = false;
                // Writing a Value into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut buf, &rule_view(&rule, source));
                if buf.len() >= LIST_CHUNK_BYTES {
                    let chunk = Bytes::from(std::mem::take(&mut buf));
                    if tx.blocking_send(Ok(chunk)).is_err() {
                        return; // the client went away
                    }
                }
            }
        }
        buf.extend_from_slice(b"]}");
        let _ = tx.blocking_send(Ok(Bytes::from(buf)));
    });
    let body = axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The rule an id names in this snapshot, and its layer.
fn find(snapshot: &Snapshot, id: &str) -> Option<(Rule, Source)> {
    id_candidates(id).into_iter().find_map(|(sel, iss)| {
        let iss = iss.as_deref();
        snapshot
            .pushed
            .get(&sel, iss)
            .map(|r| (r, Source::Pushed))
            .or_else(|| snapshot.file.get(&sel, iss).map(|r| (r, Source::File)))
    })
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no rule with id `{id}` (ids look like session:S, sub:S, sha256:H, claim:C=V or global, with @ISS when the rule has an iss)"
        ),
    )
}

/// `GET /v1/rules/{id}`.
pub async fn get_one(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&s, &headers, Access::Read, "get")?;
    let snapshot = s.state.reader().load_full();
    let (rule, source) = find(&snapshot, &id).ok_or_else(|| not_found(&id))?;
    Ok(Json(rule_view(&rule, source)).into_response())
}

/// `DELETE /v1/rules/{id}`: 204, 404, or 409 for a rule of the rules file.
pub async fn delete(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let who = authorize(&s, &headers, Access::Write, "delete")?;
    let snapshot = s.state.reader().load_full();
    let Some((rule, _)) = find(&snapshot, &id) else {
        tracing::info!(target: audit::TARGET, who, action = "delete", id, result = "not_found", "delete of an absent rule");
        return Err(not_found(&id));
    };
    let iss = rule.scope.iss.as_deref().map(str::to_owned);
    match s.state.delete(rule.selector, iss).await {
        Ok((DeleteOutcome::Deleted, version)) => {
            tracing::info!(target: audit::TARGET, who, action = "delete", id, version, result = "ok", "rule deleted");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Ok((DeleteOutcome::FromFile, _)) => {
            tracing::info!(target: audit::TARGET, who, action = "delete", id, result = "conflict", "delete of a file rule refused");
            Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("rule `{id}` comes from the rules file; remove it there"),
            ))
        }
        Ok((DeleteOutcome::NotFound, _)) => Err(not_found(&id)),
        Err(e) => {
            tracing::error!(target: audit::TARGET, who, action = "delete", id, result = "error", error = %e, "delete failed");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                e.to_string(),
            ))
        }
    }
}

/// `POST /v1/explain`: `{"token": "..."}` -> the decision, its reason and the matching rule.
pub async fn explain(
    State(s): State<AdminState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&s, &headers, Access::Read, "explain")?;
    let body = json_body(body).await?;
    let Some(token) = body.get("token").and_then(Value::as_str) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "token: expected the JWT as a string",
        ));
    };
    let token = token.trim();
    let token = token
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or(token, |(_, t)| t.trim());
    let snapshot = s.state.reader().load_full();
    let out = s.authz.decide_token(token, &snapshot, unix_now());
    let (decision, reason) = match &out.decision {
        Decision::Allow { .. } => ("allow", "ok"),
        Decision::Deny(r) => ("deny", r.as_str()),
        Decision::Unavailable(_) => ("unavailable", "unavailable"),
    };
    Ok(Json(json!({
        "decision": decision,
        "reason": reason,
        "rule": out.rule,
        "detail": out.detail,
        "iss": out.iss,
        "sub": out.sub,
        "version": snapshot.version,
    }))
    .into_response())
}

/// `POST /v3/session-blacklist`: `{"sessionId": S, "validityInSeconds": N}`.
pub async fn blacklist_session(
    State(s): State<AdminState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let who = authorize(&s, &headers, Access::Write, "push")?;
    let body = json_body(body)
        .await
        .map_err(|e| rejected(&who, "push", e))?;
    let mut errors = Vec::new();
    let session = match body.get("sessionId") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => {
            errors.push("sessionId: expected a non-empty string".to_string());
            None
        }
    };
    let validity = match body.get("validityInSeconds").and_then(Value::as_i64) {
        Some(n) if n > 0 => Some(n),
        _ => {
            errors.push("validityInSeconds: expected a positive whole number".to_string());
            None
        }
    };
    let (Some(session), Some(validity)) = (session, validity) else {
        return Err(rejected(&who, "push", invalid(errors)));
    };
    let raw = RawRule {
        session: Some(Scalar::Str(session)),
        ttl_seconds: Some(Scalar::Int(validity)),
        ..RawRule::default()
    };
    let rule = raw
        .validate("", Origin::Api { now_ms: now_ms() })
        .map_err(|errors| rejected(&who, "push", invalid(errors)))?;
    store(&s, &who, vec![rule]).await
}

/// `GET /v3/session-blacklist/{sessionId}`: 200 when the session is revoked now, else 404.
pub async fn session_status(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(session_id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&s, &headers, Access::Read, "session_status")?;
    let snapshot = s.state.reader().load_full();
    let now = unix_now();
    let selector = Selector::Session(session_id.as_str().into());
    let live: Vec<Value> = [
        (Source::Pushed, &snapshot.pushed),
        (Source::File, &snapshot.file),
    ]
    .into_iter()
    .flat_map(|(source, table)| {
        table
            .by_selector(&selector)
            .into_iter()
            .filter(|r| r.scope.is_live(now))
            .map(move |r| rule_view(&r, source))
    })
    .collect();
    if live.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("session `{session_id}` is not blacklisted"),
        ));
    }
    Ok(Json(json!({ "sessionId": session_id, "rules": live })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: i64 = 1_800_000_000_500;

    #[test]
    fn a_batch_ttl_applies_to_rules_without_their_own_expiry() {
        let rules = rules_from_body(
            &json!({"rules": [{"sub": "a"}, {"sub": "b", "ttl_seconds": 5}, {"sub": "c", "expires_at": 1_900_000_000}], "ttl_seconds": 60}),
            NOW_MS,
            None,
            &|_| true,
        )
        .unwrap();
        let exp: Vec<_> = rules.iter().map(|r| r.scope.expires_at()).collect();
        assert_eq!(
            exp,
            vec![
                Some(1_800_000_060),
                Some(1_800_000_005),
                Some(1_900_000_000)
            ]
        );
    }

    #[test]
    fn one_invalid_rule_rejects_the_whole_batch_naming_it() {
        let e = rules_from_body(
            &json!({"rules": [{"sub": "a"}, {"sub": "b", "issued_before": "soon"}]}),
            NOW_MS,
            None,
            &|_| true,
        )
        .unwrap_err();
        assert_eq!(
            e,
            vec!["rules[1].issued_before: not an RFC 3339 time or Unix seconds"]
        );
        let e = rules_from_body(&json!({"session": ""}), NOW_MS, None, &|_| true).unwrap_err();
        assert_eq!(e, vec!["session: must not be empty"]);
        assert!(rules_from_body(&json!({"rules": []}), NOW_MS, None, &|_| true).is_err());
        assert!(rules_from_body(&json!([1]), NOW_MS, None, &|_| true).is_err());
    }

    #[test]
    fn a_pushed_rule_that_could_never_match_is_refused() {
        let known = |iss: &str| iss == "https://auth";
        let e = rules_from_body(
            &json!({"rules": [{"sub": "a", "iss": "https://auht"}, {"sub": "b", "expires_at": 5}]}),
            NOW_MS,
            None,
            &known,
        )
        .unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("rules[0].iss:"));
        assert!(e[1].starts_with("rules[1].expires_at:"));
        assert!(
            rules_from_body(
                &json!({"sub": "a", "iss": "https://auth"}),
                NOW_MS,
                None,
                &known
            )
            .is_ok()
        );
    }

    #[test]
    fn max_token_lifetime_bounds_pushed_sessions_but_never_subject_blocks() {
        let rules = rules_from_body(
            &json!({"rules": [{"session": "s"}, {"sub": "u"}]}),
            NOW_MS,
            Some(3600),
            &|_| true,
        )
        .unwrap();
        assert_eq!(rules[0].scope.expires_at(), Some(1_800_003_600));
        assert_eq!(rules[1].scope.expires_at(), None);
    }
}
