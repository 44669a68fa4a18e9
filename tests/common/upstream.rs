//! The app behind Envoy: answers every method and path with 200 and a JSON echo of the
//! request as it arrived, so a test can assert what the app saw (which headers veto set,
//! that a client's forged copy did not survive):
//!
//! ```json
//! {"method": "GET", "path": "/orders/7", "headers": {"x-jwt-sub": ["alice"], ...}}
//! ```
//!
//! Header values are lists, one entry per copy received, so "exactly one `x-jwt-sub`" is
//! something a test can check.

use std::net::SocketAddr;

use axum::Json;
use axum::Router;
use axum::http::{HeaderMap, Method, Uri};
use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;

/// The echo app; it runs as a task on the test's runtime and stops on drop.
pub struct EchoUpstream {
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl EchoUpstream {
    pub async fn start() -> EchoUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the echo upstream");
        let addr = listener
            .local_addr()
            .expect("read the echo upstream's port");
        let app = Router::new().fallback(echo);
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("the echo upstream stopped serving");
        });
        EchoUpstream { addr, server }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn echo(method: Method, uri: Uri, headers: HeaderMap) -> Json<Value> {
    let mut seen = Map::new();
    for (name, value) in &headers {
        let copies = seen
            .entry(name.as_str())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(copies) = copies {
            copies.push(Value::String(
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ));
        }
    }
    Json(json!({
        "method": method.as_str(),
        "path": uri.path(),
        "headers": seen,
    }))
}
