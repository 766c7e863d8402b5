//! Integration tests: the real broker (started by `scripts/kafka start`), the real
//! `feedback-webhooks` binary, and real HTTPS receivers with a CA made at test time.
//! A missing broker fails these tests; it never skips them.

mod support;

mod admin;
mod breakers;
mod chaos;
mod config_cache;
mod config_cli;
mod console;
mod crash;
mod delivery;
mod demo;
mod durability;
mod exactly_once;
mod faults;
mod health;
mod hostile;
mod invalid;
mod notify;
mod observe;
mod packaging;
mod policy;
mod rebalance;
mod replay;
mod restart;
mod retries;
mod security;
mod shared_host;
