//! A small orders API that trusts Portcullis: `GET /orders` needs `read:orders`,
//! `GET /whoami` any valid credential. Tokens are checked offline from the cached
//! JWKS; `X-API-Key` is accepted when `PORTCULLIS_VERIFIER_KEY` holds a key with
//! `api_keys:verify`.
//!
//! ```text
//! PORTCULLIS_ISSUER=http://127.0.0.1:8080 cargo run -p example-axum-service
//! curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:3000/orders
//! ```

use axum::{Json, Router, routing::get};
use portcullis_verify::{Authenticated, Config, RequireScope, Verifier, scopes};
use serde_json::{Value, json};

scopes!(ReadOrders = "read:orders");

/// Any caller Portcullis vouches for.
async fn whoami(auth: Authenticated) -> Json<Value> {
    Json(json!({
        "user_id": auth.user_id,
        "session_id": auth.session_id,
        "client_id": auth.client_id,
        "api_key_id": auth.api_key_id,
        "scopes": auth.scopes,
    }))
}

/// Only callers holding `read:orders`.
async fn orders(auth: RequireScope<ReadOrders>) -> Json<Value> {
    Json(json!({ "orders": [], "for": auth.user_id }))
}

/// The service's routes over a verifier, for `main` and for tests.
fn app(verifier: Verifier) -> Router {
    Router::new().route("/whoami", get(whoami)).route("/orders", get(orders)).with_state(verifier)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let issuer = std::env::var("PORTCULLIS_ISSUER").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let mut config = Config::new(issuer);
    if let Ok(audience) = std::env::var("PORTCULLIS_AUDIENCE") {
        config = config.audience(audience);
    }
    if let Ok(key) = std::env::var("PORTCULLIS_VERIFIER_KEY") {
        config = config.api_keys(key);
    }
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("orders API on http://{listen}");
    axum::serve(listener, app(Verifier::new(config)?))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
