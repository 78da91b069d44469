//! Running the queue on a JetStream cluster: the seed servers `--queue` names, and the copies
//! every stream of the queue keeps ([`QueueConfig::replicas`]).
//!
//! - `--queue` may name several servers of one cluster, comma-separated
//!   (`nats://a:4222,nats://b:4222`): the client connects to one of them and, when that one
//!   goes away, reconnects to another (the servers also tell the client of the rest of the
//!   cluster once it is connected).
//! - The request stream, the dead-letter stream and the ledger buckets are created with
//!   `replicas` copies. An existing stream with fewer copies is raised to that many by a
//!   stream update (the server copies its messages to the new replicas in the background, and
//!   moves the durable consumer along); one with more is left alone, so a component started
//!   with the default of 1 never takes copies away from a cluster set up for 3.
//! - A server that cannot keep that many copies (not clustered, or fewer servers up than
//!   copies asked for) makes start-up fail with [`Error::Misconfigured`], which says what to do.
//!
//! Invariant: this module decides how streams are placed, never what is in them.

use async_nats::ServerAddr;
use async_nats::jetstream::context::{Context, CreateStreamError, CreateStreamErrorKind};
use async_nats::jetstream::{ErrorCode, stream};
use tracing::info;

use super::{REQUEST_TIMEOUT, redact_credentials, timed_out};
use crate::{Error, Result};

/// The seed servers in `url`: one or more `nats://` or `tls://` URLs, comma-separated.
pub(super) fn seeds(url: &str) -> Result<Vec<ServerAddr>> {
    let context = format!("read the queue URL {:?}", redact_credentials(url));
    let mut seeds = Vec::new();
    for (n, seed) in url.split(',').map(str::trim).enumerate() {
        if seed.is_empty() {
            return Err(Error::misconfigured(
                &context,
                format_args!(
                    "server {} of the list is empty: separate the servers with single commas \
                     (nats://a:4222,nats://b:4222)",
                    n + 1
                ),
            ));
        }
        let shown = redact_credentials(seed);
        if !(seed.starts_with("nats://") || seed.starts_with("tls://")) {
            return Err(Error::misconfigured(
                &context,
                format_args!(
                    "{shown:?} is not a NATS server: every server of the list must be \
                     nats://host:port or tls://host:port"
                ),
            ));
        }
        let addr: ServerAddr = seed
            .parse()
            .map_err(|e| Error::misconfigured(&context, format_args!("{shown:?}: {e}")))?;
        if addr.host().is_empty() {
            return Err(Error::misconfigured(
                &context,
                format_args!("{shown:?} names no host"),
            ));
        }
        seeds.push(addr);
    }
    Ok(seeds)
}

/// Gets the stream `wanted` describes, creating it with `wanted.num_replicas` copies if it is
/// missing, and raises an existing stream with fewer copies to that many (never lowers it).
/// The stream comes back with its configuration as it is now.
pub(super) async fn get_or_create(
    jetstream: &Context,
    wanted: &stream::Config,
    what: &str,
) -> Result<stream::Stream> {
    let doing = format!("create {what} {:?}", wanted.name);
    let stream = match tokio::time::timeout(
        REQUEST_TIMEOUT,
        jetstream.get_or_create_stream(wanted.clone()),
    )
    .await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(refused(&doing, wanted, e)),
        Err(_) => return Err(Error::unavailable(&doing, timed_out(REQUEST_TIMEOUT))),
    };
    let current = &stream.cached_info().config;
    let (have, want) = (copies(current.num_replicas), copies(wanted.num_replicas));
    if have >= want {
        return Ok(stream);
    }
    let doing = format!(
        "raise {what} {:?} from {have} to {want} replicas",
        wanted.name
    );
    let raised = stream::Config {
        num_replicas: want,
        ..current.clone()
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, jetstream.update_stream(raised)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(refused(&doing, wanted, e)),
        Err(_) => return Err(Error::unavailable(&doing, timed_out(REQUEST_TIMEOUT))),
    }
    info!(
        stream = %wanted.name,
        from = have,
        to = want,
        "Stream replicas raised; the new copies catch up in the background."
    );
    // Read it again, so that later updates of other limits keep the new replica count.
    match tokio::time::timeout(REQUEST_TIMEOUT, jetstream.get_stream(&wanted.name)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(Error::unavailable(&doing, e)),
        Err(_) => Err(Error::unavailable(&doing, timed_out(REQUEST_TIMEOUT))),
    }
}

/// JetStream reads 0 copies as 1.
fn copies(replicas: usize) -> usize {
    replicas.max(1)
}

/// A failed create or update of a stream meant to keep `wanted.num_replicas` copies: a
/// [`Error::Misconfigured`] that says what to do when the server cannot keep that many,
/// else [`Error::Unavailable`].
fn refused(doing: &str, wanted: &stream::Config, e: CreateStreamError) -> Error {
    let CreateStreamErrorKind::JetStream(server) = e.kind() else {
        return Error::unavailable(doing, e);
    };
    let replicas = copies(wanted.num_replicas);
    match refusal(server.error_code(), replicas, &wanted.name) {
        Some(what_to_do) => Error::misconfigured(doing, format_args!("{server}; {what_to_do}")),
        None => Error::unavailable(doing, e),
    }
}

/// What to do about the server's refusal `code` to keep `replicas` copies of stream `name`,
/// or `None` when the refusal is not about copies (or may pass by itself).
fn refusal(code: ErrorCode, replicas: usize, name: &str) -> Option<String> {
    if code == ErrorCode::STREAM_REPLICAS_NOT_SUPPORTED {
        Some(format!(
            "the NATS server is not part of a cluster and keeps one copy only: start with \
             --queue-replicas 1 (COURIER_QUEUE_REPLICAS=1), or run a JetStream cluster of at \
             least {replicas} servers"
        ))
    } else if code == ErrorCode::INSUFFICIENT_RESOURCES || code == ErrorCode::CLUSTER_NO_PEERS {
        Some(format!(
            "the JetStream cluster has fewer than {replicas} servers up with JetStream and room \
             for the stream: start them, or lower --queue-replicas to the number of servers"
        ))
    } else if code == ErrorCode::STREAM_REPLICAS_NOT_UPDATABLE {
        Some(format!(
            "this NATS server cannot change the replicas of an existing stream: update it by \
             hand (`nats stream edit {name} --replicas {replicas}`) or use NATS 2.10 or newer"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(url: &str) -> Vec<(String, u16)> {
        seeds(url)
            .unwrap()
            .iter()
            .map(|addr| (addr.host().to_owned(), addr.port()))
            .collect()
    }

    fn refusal_of(url: &str) -> String {
        match seeds(url) {
            Err(e @ Error::Misconfigured { .. }) => e.to_string(),
            other => panic!("{url:?} gave {other:?}"),
        }
    }

    #[test]
    fn one_url_is_one_seed() {
        assert_eq!(hosts("nats://nats:4222"), [("nats".to_owned(), 4222)]);
        assert_eq!(hosts("nats://127.0.0.1"), [("127.0.0.1".to_owned(), 4222)]);
    }

    #[test]
    fn comma_separated_urls_are_several_seeds_in_their_order() {
        assert_eq!(
            hosts("nats://a:4222,nats://b:4223, tls://c:4224"),
            [
                ("a".to_owned(), 4222),
                ("b".to_owned(), 4223),
                ("c".to_owned(), 4224)
            ]
        );
        assert!(seeds("tls://c:4224").unwrap()[0].tls_required());
    }

    #[test]
    fn bad_seeds_are_refused_naming_the_seed() {
        let e = refusal_of("nats://a:4222,,nats://b:4222");
        assert!(e.contains("server 2 of the list is empty"), "{e}");
        let e = refusal_of("nats://a:4222,");
        assert!(e.contains("server 2 of the list is empty"), "{e}");
        let e = refusal_of("nats://a:4222,file:///tmp/q.redb");
        assert!(
            e.contains("\"file:///tmp/q.redb\" is not a NATS server"),
            "{e}"
        );
        let e = refusal_of("nats://a:4222,b:4222");
        assert!(e.contains("\"b:4222\" is not a NATS server"), "{e}");
        let e = refusal_of("nats://a:99999");
        assert!(e.contains("\"nats://a:99999\""), "{e}");
        let e = refusal_of("nats://a:4222,nats://:4222");
        assert!(e.contains("\"nats://:4222\""), "{e}");
    }

    #[test]
    fn a_refused_seed_keeps_its_password_out_of_the_message() {
        let e = refusal_of("nats://user:secret@a:4222,http://user:secret@b");
        assert!(!e.contains("secret"), "{e}");
        assert!(e.contains("***@b"), "{e}");
    }

    #[test]
    fn refusals_about_copies_say_what_to_do() {
        let not_clustered = refusal(ErrorCode::STREAM_REPLICAS_NOT_SUPPORTED, 3, "S").unwrap();
        assert!(
            not_clustered.contains("--queue-replicas 1"),
            "{not_clustered}"
        );
        let too_few = refusal(ErrorCode::INSUFFICIENT_RESOURCES, 3, "S").unwrap();
        assert!(too_few.contains("fewer than 3 servers"), "{too_few}");
        assert!(refusal(ErrorCode::CLUSTER_NO_PEERS, 3, "S").is_some());
        let old = refusal(ErrorCode::STREAM_REPLICAS_NOT_UPDATABLE, 3, "S").unwrap();
        assert!(old.contains("nats stream edit S --replicas 3"), "{old}");
        assert_eq!(refusal(ErrorCode::CLUSTER_NOT_AVAILABLE, 3, "S"), None);
    }
}
