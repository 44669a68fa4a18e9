//! A no-op ext_authz v3 gRPC server: it answers every `Authorization/Check` with gRPC OK
//! without looking at the request. `bench/run` measures veto against it, so both must run on
//! the same stack (tonic, envoy-types, a multi-threaded tokio runtime sized like veto's):
//! the difference between the two is what veto's own work costs.
//!
//! ```sh
//! cargo build --release --example noop_authz
//! target/release/examples/noop_authz 127.0.0.1:9291
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse,
};
use envoy_types::pb::google::rpc;
use tonic::{Request, Response, Status};

struct Noop;

#[tonic::async_trait]
impl Authorization for Noop {
    async fn check(&self, _: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        // gRPC code 0 in `status` is the only thing Envoy needs to let a request through.
        Ok(Response::new(CheckResponse {
            status: Some(rpc::Status {
                code: 0,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }
}

fn main() -> ExitCode {
    let Some(addr) = std::env::args().nth(1) else {
        eprintln!("usage: noop_authz LISTEN_ADDR   (e.g. 127.0.0.1:9291)");
        return ExitCode::from(2);
    };
    let addr: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("noop_authz: {addr}: not a socket address: {e}");
            return ExitCode::from(2);
        }
    };
    // The same runtime veto builds (`Runtime::new()`: one worker per CPU it may run on), so
    // a taskset pin affects both alike.
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("noop_authz: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let served = runtime.block_on(async {
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(Noop))
            .serve_with_shutdown(addr, shutdown)
            .await
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("noop_authz: {addr}: {e}");
            ExitCode::from(1)
        }
    }
}
