//! Operator commands besides `run`: publishing config and a local receiver.

pub mod config_cmd;
mod error;
pub mod receiver_cmd;
pub mod replay_cmd;

pub use error::CliError;
