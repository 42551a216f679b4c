//! Integration tests of the inbox: a real server on port 0, real HTTP, Alertmanager-shaped payloads, and (when
//! installed) a real Alertmanager delivering to it.

mod alertmanager;
mod api;
mod helpers;
mod webhook_security;
