//! The pure domain: parsing and validating records, deciding what to deliver, building the
//! payload and the outcome, and the retry policy. No I/O happens here.

pub mod address;
pub mod breaker;
pub mod concurrency;
pub mod config;
pub mod event;
pub mod filter;
pub mod health;
pub mod host_schedule;
pub mod ids;
pub mod matching;
pub mod notification;
pub mod operational;
pub mod outcome;
pub mod parked;
pub mod payload;
pub mod rate;
pub mod replay;
pub mod retry;
pub mod secret;
pub mod signature;
pub mod time;
