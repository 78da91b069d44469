//! How many copies of the queue a JetStream cluster keeps, shared by every process that opens
//! the queue (`courier up`, `courier gateway`, `courier queue-worker`, `courier scheduler`,
//! `courier connector ...`), flattened beside each one's `--queue`: whichever of them starts
//! first creates the streams, so they must all ask for the same.

use clap::Args;

/// The queue's replication.
#[derive(Debug, Clone, Args)]
pub(crate) struct QueueReplicasArgs {
    /// JetStream: how many servers of the cluster keep a copy of the queued calls, the dead
    /// letters and the call ledger (1: no replication; 3 on a 3-node cluster survives the loss
    /// of any one node). Streams that exist with fewer copies are raised to this many at
    /// start-up, never lowered; a server that cannot keep that many (not clustered, too few
    /// nodes up) stops start-up with an error saying what to do. The embedded store
    /// (file://) keeps one copy and refuses more.
    #[arg(long, env = "COURIER_QUEUE_REPLICAS", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=5))]
    pub(crate) queue_replicas: u8,
}

impl QueueReplicasArgs {
    /// The copies for `QueueConfig::replicas`.
    pub(crate) fn replicas(&self) -> usize {
        usize::from(self.queue_replicas)
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        queue: QueueReplicasArgs,
    }

    fn parse(args: &[&str]) -> Result<usize, clap::Error> {
        Cli::try_parse_from(std::iter::once("courier").chain(args.iter().copied()))
            .map(|cli| cli.queue.replicas())
    }

    #[test]
    fn one_copy_unless_asked_for_more() {
        assert_eq!(parse(&[]).unwrap(), 1);
        assert_eq!(parse(&["--queue-replicas", "3"]).unwrap(), 3);
    }

    #[test]
    fn zero_or_more_than_jetstream_allows_is_refused_naming_the_flag() {
        for bad in ["0", "6", "-1", "three"] {
            let arg = format!("--queue-replicas={bad}");
            let e = parse(&[&arg]).expect_err(bad);
            assert!(e.to_string().contains("--queue-replicas"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_flag_reads_its_environment_variable() {
        let command = Cli::command();
        let env = command
            .get_arguments()
            .find(|a| a.get_id() == "queue_replicas")
            .and_then(|a| a.get_env())
            .and_then(|e| e.to_str());
        assert_eq!(env, Some("COURIER_QUEUE_REPLICAS"));
    }
}
