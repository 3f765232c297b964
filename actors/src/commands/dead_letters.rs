//! `k2 dead-letters list|replay`: what a stage failed on or a source
//! refused, and sending it through again once the cause is fixed.

use std::io::Write;
use std::process::ExitCode;

use k2::runtime::config::Config;
use k2::service::{Service, Stop};
use k2::state::dead_letters::{DeadLetters, Status};

use super::CommandError;
use crate::cli::{DeadLettersCommand, LetterStatus};

pub fn run(command: DeadLettersCommand) -> Result<ExitCode, CommandError> {
    match command {
        DeadLettersCommand::List(args) => {
            let config = config(args.config.as_deref(), args.data_dir.clone())?;
            let store = DeadLetters::open(&config.storage.data_dir.join("dead-letters"))
                .map_err(|e| CommandError::Pipeline(e.to_string()))?;
            let status = match args.status {
                LetterStatus::Pending => Status::Pending,
                LetterStatus::Replayed => Status::Replayed,
                LetterStatus::All => Status::All,
            };
            let (letters, _) = store.list(status, 0, usize::MAX).map_err(|e| CommandError::Pipeline(e.to_string()))?;
            let mut out = std::io::stdout().lock();
            for l in &letters {
                if args.json {
                    serde_json::to_writer(&mut out, l).map_err(std::io::Error::from)?;
                    writeln!(out)?;
                    continue;
                }
                let what = match (&l.letter.frame, l.letter.events.len()) {
                    (Some(frame), _) => format!("frame {}", frame.chars().take(80).collect::<String>()),
                    (None, 0) => "frame (binary)".to_owned(),
                    (None, n) => format!("{n} events"),
                };
                writeln!(
                    out,
                    "{:>8}  {:<8}  {:<10}  {}  ({})",
                    l.letter.id, l.status, l.letter.stage, what, l.letter.reason
                )?;
            }
            if !args.json {
                writeln!(out, "{} letters", letters.len())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        DeadLettersCommand::Replay(args) => {
            let config = config(args.config.as_deref(), args.data_dir.clone())?;
            let ids = args.ids.clone();
            let report = k2::runtime::run(|| async move {
                // Paced like a load: replayed rows wait for room, never shed.
                let k2 = Service::builder(&config).batch().start().await.map_err(|e| e.to_string())?;
                let replayed = k2.replay_dead_letters(&ids).await;
                let stopped = k2.shutdown(Stop::GracefulUnlessBlocked).await;
                let report = replayed.map_err(|e| e.to_string())?;
                if let Some(error) = stopped.blocked {
                    return Err(format!("committing to the tables, after an error retrying cannot fix: {error}"));
                }
                Ok::<_, String>(report)
            })?
            .map_err(CommandError::Pipeline)?;
            let mut out = std::io::stdout().lock();
            if args.json {
                serde_json::to_writer(&mut out, &report).map_err(std::io::Error::from)?;
                writeln!(out)?;
            } else {
                writeln!(out, "letters          {}", report.letters)?;
                writeln!(out, "replayed         {}", report.replayed)?;
                writeln!(out, "events sent      {}", report.sent)?;
                writeln!(out, "already stored   {}", report.already_stored)?;
                writeln!(out, "still refused    {}", report.still_refused.len())?;
                for (id, reason) in &report.still_refused {
                    writeln!(out, "  {id:>8}  {reason}")?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn config(path: Option<&std::path::Path>, data_dir: Option<std::path::PathBuf>) -> Result<Config, CommandError> {
    let mut config = Config::load(path)?;
    if let Some(dir) = data_dir {
        config.storage.data_dir = dir;
    }
    Ok(config)
}
