//! A pod as a client meets it: Envoy in front, veto beside it answering ext_authz, and the
//! echo app behind. The unit most decision tests start.

use super::{EchoUpstream, Envoy, Veto, VetoDir, http_client};

pub struct Pod {
    // Drop order: Envoy first, so no request reaches a veto or app that is already gone.
    pub envoy: Envoy,
    pub veto: Veto,
    pub app: EchoUpstream,
    http: reqwest::Client,
}

impl Pod {
    /// Starts veto from `dir` with `config_yaml` (see [`VetoDir::start`]), the echo app,
    /// and Envoy (TCP config) between them; returns once veto and Envoy are ready.
    pub async fn start(dir: VetoDir, config_yaml: &str) -> Pod {
        let veto = dir.start(config_yaml).await;
        let app = EchoUpstream::start().await;
        let envoy = Envoy::start(veto.grpc_addr(), app.addr()).await;
        Pod {
            envoy,
            veto,
            app,
            http: http_client(),
        }
    }

    /// A GET to `path` through Envoy; add a token with `.bearer_auth(token)`.
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(self.envoy.url(path))
    }

    /// Sends a GET to `path` through Envoy with `Authorization: Bearer <token>`.
    pub async fn get_with_token(&self, path: &str, token: &str) -> reqwest::Response {
        self.get(path)
            .bearer_auth(token)
            .send()
            .await
            .expect("send a request through Envoy")
    }
}
