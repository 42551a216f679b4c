//! Integration tests of opsctl against a fake stack (fake app, Prometheus and Alertmanager; the real inbox).

mod fake_stack;
mod load;
mod real_monitoring;
mod smoke;
