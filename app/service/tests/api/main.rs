//! Integration tests that run the real application on port 0 against the real Postgres and Redis. Every test
//! starts its own application (with its own metrics recorder) and uses keys of its own, so they run in parallel.
//! Tests that stop Postgres or Redis live in `tests/outage.rs`.

mod admin;
mod binary;
mod cache;
mod connections;
mod helpers;
mod input;
mod lifecycle;
mod metrics;
mod routes;
mod writes;
