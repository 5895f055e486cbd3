//! All end-to-end tests in ONE binary (each extra file under tests/ is another
//! binary to link). One module per flow; every test runs on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

mod abuse;
mod accounts;
mod admin;
mod api_keys;
mod errors;
mod interop;
mod keys;
mod mail;
mod mfa;
mod oauth;
mod openapi;
mod ops;
mod outbox;
mod passkeys;
mod process;
mod receiver;
mod sdk;
mod security;
mod sessions;
mod sms;
mod smtp;
mod soft_key;
mod tokens;
mod webhooks;
