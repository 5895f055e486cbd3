//! Portcullis: a self-hostable authentication and authorization server.
//!
//! Where things live: `auth` decides (register, login, refresh and its reuse
//! detection, sessions), `rbac` the guards, `admin` user and role management,
//! `api_keys` machine credentials, `audit` the trail, `tokens` signs and verifies JWTs, `keys` owns signing keys
//! and the JWKS, `passwords` the NIST policy and the bounded Argon2id pool, `store`
//! all SQL for SQLite and PostgreSQL, `http` the routes and the problem+json errors,
//! `server` the wiring, `cli` the `portcullis` command, `outbound` the one guarded
//! client every outbound HTTP request goes through.

pub mod abuse;
pub mod admin;
pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod http;
pub mod keys;
pub mod listener;
pub mod oauth;
pub mod outbound;
pub mod page;
pub mod passwords;
pub mod rbac;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod tokens;
pub mod units;
pub mod validate;
