//! The api on a free port over a running [`System`], for tests and the benchmark.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use wasmbed_api::{Access, ApiConfig, Token};
use wasmbed_e2e::System;
use wasmbed_schemas::permissions::Principal;

/// A token named `name`.
pub fn token(name: &str, secret: &str, access: Access) -> Token {
    Token {
        name: name.into(),
        secret: secret.into(),
        access,
    }
}

/// Starts the api with `tokens` and waits until it is healthy.
pub async fn start_api(system: &System, tokens: Vec<Token>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ApiConfig {
        tokens,
        runtime: Default::default(),
    };
    tokio::spawn(wasmbed_api::run(
        system.nats.client_as(Principal::Api).await.unwrap(),
        config,
        listener,
        std::future::pending(),
    ));
    wasmbed_e2e::wait_ok(addr, "/health").await;
    addr
}
