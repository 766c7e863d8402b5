//! What a command line can end with, and the exit status each kind gets: 2 when what was
//! asked cannot be done as asked (arguments, settings, a refused record), 1 when it failed
//! while being done (the broker, a file, a fatal error of the processor).

use crate::admin::AdminError;
use crate::pipeline::PipelineError;
use crate::replay::ReplayError;
use crate::settings::SettingsError;

use super::config_cmd::CommandError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// An argument the command cannot take.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Config(#[from] CommandError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error(transparent)]
    Processor(#[from] PipelineError),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error(transparent)]
    Receiver(#[from] crate::receiver::ReceiverError),
    #[error("{path}: {error}")]
    File { path: String, error: std::io::Error },
    /// Anything else that failed while the command ran.
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    /// The process's exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Settings(_) => 2,
            CliError::Config(CommandError::Invalid(_)) => 2,
            CliError::Replay(ReplayError::Refused(_)) => 2,
            _ => 1,
        }
    }

    pub fn file(path: &std::path::Path, error: std::io::Error) -> Self {
        CliError::File {
            path: path.display().to_string(),
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_cannot_be_done_as_asked_exits_2_and_failures_1() {
        assert_eq!(CliError::Usage("--right x".into()).exit_code(), 2);
        let refused = CommandError::Invalid(crate::domain::config::ConfigError::TooLarge(1));
        assert_eq!(CliError::Config(refused).exit_code(), 2);
        assert_eq!(CliError::Failed("broker".into()).exit_code(), 1);
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let e = CliError::file(std::path::Path::new("/x"), io);
        assert_eq!((e.exit_code(), e.to_string()), (1, "/x: gone".to_owned()));
    }
}
