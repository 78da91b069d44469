//! The invocation ledger's flags, shared by every process that opens the queue (`courier up`,
//! `courier gateway`, `courier queue-worker`, `courier scheduler`, `courier connector ...`):
//! they all keep records beside the queue, so they must agree on how long and how many.

use std::time::Duration;

use clap::Args;
use courier_queue::LedgerConfig;
use courier_queue_worker::MAX_RESPONSE_BYTES;

use crate::up::duration;

/// How the invocation ledger keeps call records.
#[derive(Debug, Clone, Args)]
pub(crate) struct LedgerArgs {
    /// How long a call's record (and its kept result) is kept after its last change (Go
    /// duration); `0` turns the ledger off (`/system/calls` then answers 404).
    #[arg(long, env = "COURIER_LEDGER_RETENTION", default_value = "24h",
          value_parser = duration)]
    pub(crate) ledger_retention: Duration,
    /// Most call records kept; past it the oldest go first.
    #[arg(long, env = "COURIER_LEDGER_MAX_RECORDS", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) ledger_max_records: u64,
    /// Largest kept result body, in bytes (a larger one is kept truncated and marked so); at
    /// most the largest answer the worker reads (64 MiB).
    #[arg(long, env = "COURIER_LEDGER_MAX_RESULT_BYTES", default_value_t = 256 * 1024,
          value_parser = max_result_bytes)]
    pub(crate) ledger_max_result_bytes: usize,
}

impl LedgerArgs {
    /// The ledger's settings for `QueueConfig::ledger`.
    pub(crate) fn config(&self) -> LedgerConfig {
        LedgerConfig {
            retention: self.ledger_retention,
            max_records: self.ledger_max_records,
            max_result_bytes: self.ledger_max_result_bytes,
        }
    }

    /// One line for the start-up banner.
    pub(crate) fn describe(&self) -> String {
        if self.ledger_retention.is_zero() {
            return "call ledger: off (--ledger-retention 0)".to_owned();
        }
        format!(
            "call ledger: records kept {}, at most {}; results up to {} bytes",
            humanize(self.ledger_retention),
            self.ledger_max_records,
            self.ledger_max_result_bytes
        )
    }
}

/// `24h`, `90m`, `45s`, `1.5s`: the largest whole unit, for the banner.
fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 {
        format!("{}s", d.as_secs_f64())
    } else if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// A byte count up to [`MAX_RESPONSE_BYTES`]: the worker never reads more of an answer, so a
/// larger limit could not be honoured.
fn max_result_bytes(s: &str) -> Result<usize, String> {
    let bytes: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of bytes"))?;
    if bytes > MAX_RESPONSE_BYTES {
        return Err(format!(
            "{bytes} is more than {MAX_RESPONSE_BYTES}, the largest answer the worker reads"
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        ledger: LedgerArgs,
    }

    fn parse(args: &[&str]) -> Result<LedgerConfig, clap::Error> {
        Cli::try_parse_from(std::iter::once("courier").chain(args.iter().copied()))
            .map(|cli| cli.ledger.config())
    }

    #[test]
    fn the_defaults_are_the_queue_defaults() {
        assert_eq!(parse(&[]).unwrap(), LedgerConfig::default());
        assert!(parse(&[]).unwrap().enabled());
    }

    #[test]
    fn each_flag_sets_its_field() {
        let config = parse(&[
            "--ledger-retention",
            "1h30m",
            "--ledger-max-records",
            "500",
            "--ledger-max-result-bytes",
            "1024",
        ])
        .unwrap();
        assert_eq!(
            config,
            LedgerConfig {
                retention: Duration::from_secs(5400),
                max_records: 500,
                max_result_bytes: 1024,
            }
        );
    }

    #[test]
    fn a_zero_retention_turns_the_ledger_off() {
        assert!(!parse(&["--ledger-retention", "0"]).unwrap().enabled());
        assert!(!parse(&["--ledger-retention", "0s"]).unwrap().enabled());
    }

    #[test]
    fn the_banner_says_how_long_and_how_many_or_off() {
        let describe = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("courier").chain(args.iter().copied()))
                .unwrap()
                .ledger
                .describe()
        };
        assert_eq!(
            describe(&[]),
            "call ledger: records kept 24h, at most 100000; results up to 262144 bytes"
        );
        assert!(describe(&["--ledger-retention", "90s"]).contains("kept 90s"));
        assert!(describe(&["--ledger-retention", "1500ms"]).contains("kept 1.5s"));
        assert!(describe(&["--ledger-retention", "30m"]).contains("kept 30m"));
        assert!(describe(&["--ledger-retention", "0"]).contains("off"));
    }

    #[test]
    fn every_flag_reads_its_environment_variable() {
        use clap::CommandFactory;
        let command = Cli::command();
        let env = |id: &str| {
            command
                .get_arguments()
                .find(|a| a.get_id() == id)
                .and_then(|a| a.get_env())
                .and_then(|e| e.to_str())
                .map(str::to_owned)
        };
        assert_eq!(
            env("ledger_retention").as_deref(),
            Some("COURIER_LEDGER_RETENTION")
        );
        assert_eq!(
            env("ledger_max_records").as_deref(),
            Some("COURIER_LEDGER_MAX_RECORDS")
        );
        assert_eq!(
            env("ledger_max_result_bytes").as_deref(),
            Some("COURIER_LEDGER_MAX_RESULT_BYTES")
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        for (flag, value) in [
            ("--ledger-retention", "soon"),
            ("--ledger-retention", "-1h"),
            ("--ledger-max-records", "0"),
            ("--ledger-max-records", "many"),
            ("--ledger-max-records", "-5"),
            ("--ledger-max-result-bytes", "1k"),
            ("--ledger-max-result-bytes", "67108865"),
        ] {
            let arg = format!("{flag}={value}");
            let e = parse(&[&arg]).expect_err(&format!("{arg} accepted"));
            assert!(e.to_string().contains(flag), "{arg}: {e}");
        }
        assert_eq!(
            parse(&["--ledger-max-result-bytes", "67108864"])
                .unwrap()
                .max_result_bytes,
            MAX_RESPONSE_BYTES
        );
    }
}
