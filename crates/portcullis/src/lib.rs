//! Portcullis: a self-hostable authentication and authorization server.
//!
//! Where things live: `auth` decides (register, login, refresh and its reuse
//! detection, sessions), `tokens` signs and verifies JWTs, `keys` owns signing keys
//! and the JWKS, `passwords` the NIST policy and the bounded Argon2id pool, `store`
//! all SQL for SQLite and PostgreSQL, `http` the routes and the problem+json errors,
//! `server` the wiring, `cli` the `portcullis` command.

pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod http;
pub mod keys;
pub mod passwords;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod tokens;
