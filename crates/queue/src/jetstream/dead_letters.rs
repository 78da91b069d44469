//! Dead letters on JetStream: a stream of their own beside the queue's stream, so every
//! gateway and worker on the same server shares them.
//!
//! The stream `<queue stream>_dead_letters` (file storage) holds one subject per letter,
//! `courier-dead-letters.<queue stream>.<key>`, with `max_msgs_per_subject = 1`: storing a
//! letter again under the same id makes the server drop the earlier one. The key is `x`
//! followed by the id's bytes in lowercase hex, since ids are caller-supplied strings and may
//! hold anything a subject token may not (`.`, `*`, `>`, spaces, nothing at all). The real id
//! travels inside the stored value, with `failed_at_ms` for sorting:
//!
//! ```text
//! version (1 byte, 1) | failed_at_ms (u64, big-endian) | id length (u32, big-endian) | id | record
//! ```
//!
//! Removing a letter deletes its message outright (no tombstone, unlike a KV bucket), so a
//! purge of the stream counts exactly the letters it removed.

use async_nats::Client;
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::context::{Context, PublishErrorKind};
use async_nats::jetstream::stream::{
    self, DeleteMessageErrorKind, DiscardPolicy, LastRawMessageErrorKind, StorageType,
};
use bytes::{BufMut, Bytes, BytesMut};
use tracing::warn;

use super::{REQUEST_TIMEOUT, ensure_connected, read_stream, timed_out, within};
use crate::{DeadLetter, Error, QueueConfig, Result};

/// The first byte of every stored letter: the layout described in the module docs.
const FORMAT_VERSION: u8 = 1;

/// Version, `failed_at_ms` and the id's length.
const HEADER_BYTES: usize = 1 + 8 + 4;

/// The dead letters of one queue.
#[derive(Clone)]
pub(super) struct DeadLetters {
    client: Client,
    jetstream: Context,
    stream: stream::Stream,
    /// `courier-dead-letters.<queue stream>`; a letter's subject is this plus `.<key>`.
    subject_prefix: String,
}

impl DeadLetters {
    /// Gets the dead-letter stream of `config`'s queue, creating it if missing.
    pub(super) async fn open(
        client: Client,
        jetstream: Context,
        config: &QueueConfig,
    ) -> Result<Self> {
        let wanted = stream_config(config);
        let stream =
            super::cluster::get_or_create(&jetstream, &wanted, "dead-letter stream").await?;
        let current = &stream.cached_info().config;
        if current.max_messages_per_subject != 1 || current.subjects != wanted.subjects {
            warn!(
                stream = %wanted.name,
                subjects = ?current.subjects,
                max_messages_per_subject = current.max_messages_per_subject,
                "The dead-letter stream exists with other settings; letters may be kept twice \
                 or not at all."
            );
        }
        Ok(Self {
            client,
            jetstream,
            stream,
            subject_prefix: subject_prefix(config),
        })
    }

    pub(super) async fn put(&self, letter: DeadLetter) -> Result<()> {
        let doing = format!("store dead letter {:?}", letter.id);
        ensure_connected(&self.client, &doing)?;
        let subject = self.subject(&letter.id);
        let value = encode(&letter);
        let size = value.len();
        let sent = tokio::time::timeout(REQUEST_TIMEOUT, async {
            self.jetstream.publish(subject, value).await?.await
        })
        .await;
        match sent {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                Err(Error::TooLarge {
                    size,
                    limit: self.client.server_info().max_payload,
                })
            }
            Ok(Err(e)) => Err(Error::unavailable(&doing, e)),
            Err(_) => Err(Error::unavailable(&doing, timed_out(REQUEST_TIMEOUT))),
        }
    }

    /// Every letter, newest first (ties by id).
    pub(super) async fn all(&self) -> Result<Vec<DeadLetter>> {
        let doing = "list dead letters";
        ensure_connected(&self.client, doing)?;
        let mut letters = Vec::new();
        read_stream(
            &self.stream,
            format!("{}.>", self.subject_prefix),
            DeliverPolicy::All,
            doing,
            |message| match decode(&message.payload) {
                Some(letter) => letters.push(letter),
                None => warn!(
                    stream = %self.stream.cached_info().config.name,
                    subject = %message.subject,
                    "Ignoring a dead letter in an unknown format."
                ),
            },
        )
        .await?;
        sort_newest_first(&mut letters);
        Ok(letters)
    }

    pub(super) async fn get(&self, id: &str) -> Result<Option<DeadLetter>> {
        Ok(self.find(id).await?.map(|(_, letter)| letter))
    }

    pub(super) async fn remove(&self, id: &str) -> Result<bool> {
        let Some((sequence, _)) = self.find(id).await? else {
            return Ok(false);
        };
        let doing = format!("remove dead letter {id:?}");
        ensure_connected(&self.client, &doing)?;
        match tokio::time::timeout(REQUEST_TIMEOUT, self.stream.delete_message(sequence)).await {
            Ok(Ok(removed)) => Ok(removed),
            // Removed (or replaced) by someone else in the meantime.
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    DeleteMessageErrorKind::JetStream(ref js)
                        if js.error_code() == ErrorCode::SEQUENCE_NOT_FOUND
                            || js.error_code() == ErrorCode::NO_MESSAGE_FOUND
                ) =>
            {
                Ok(false)
            }
            Ok(Err(e)) => Err(Error::unavailable(&doing, e)),
            Err(_) => Err(Error::unavailable(&doing, timed_out(REQUEST_TIMEOUT))),
        }
    }

    pub(super) async fn purge(&self) -> Result<u64> {
        let doing = "purge dead letters";
        ensure_connected(&self.client, doing)?;
        let purged = within(
            doing,
            self.stream
                .purge()
                .filter(format!("{}.>", self.subject_prefix)),
        )
        .await?;
        Ok(purged.purged)
    }

    /// The letter stored for `id` and its stream sequence.
    async fn find(&self, id: &str) -> Result<Option<(u64, DeadLetter)>> {
        let doing = format!("read dead letter {id:?}");
        ensure_connected(&self.client, &doing)?;
        let subject = self.subject(id);
        let found = tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.stream.get_last_raw_message_by_subject(&subject),
        )
        .await;
        let message = match found {
            Ok(Ok(message)) => message,
            Ok(Err(e)) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
            Ok(Err(e)) => return Err(Error::unavailable(&doing, e)),
            Err(_) => return Err(Error::unavailable(&doing, timed_out(REQUEST_TIMEOUT))),
        };
        match decode(&message.payload) {
            Some(letter) if letter.id == id => Ok(Some((message.sequence, letter))),
            _ => {
                warn!(
                    subject = %subject,
                    "Ignoring a dead letter in an unknown format."
                );
                Ok(None)
            }
        }
    }

    fn subject(&self, id: &str) -> String {
        format!("{}.{}", self.subject_prefix, key(id))
    }
}

fn stream_config(config: &QueueConfig) -> stream::Config {
    stream::Config {
        name: format!("{}_dead_letters", config.stream),
        description: Some(format!(
            "Courier's dead letters of stream {}",
            config.stream
        )),
        subjects: vec![format!("{}.>", subject_prefix(config))],
        storage: StorageType::File,
        max_messages_per_subject: 1,
        discard: DiscardPolicy::Old,
        num_replicas: config.replicas,
        ..Default::default()
    }
}

/// Stream names cannot hold `.`, `*`, `>` or whitespace, so the queue's stream name is one
/// subject token.
fn subject_prefix(config: &QueueConfig) -> String {
    format!("courier-dead-letters.{}", config.stream)
}

/// The subject token for `id`: `x` and the id's bytes in lowercase hex (also the ledger's key).
pub(super) fn key(id: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut key = String::with_capacity(1 + 2 * id.len());
    key.push('x');
    for byte in id.bytes() {
        key.push(char::from(HEX[usize::from(byte >> 4)]));
        key.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    key
}

fn encode(letter: &DeadLetter) -> Bytes {
    let mut value = BytesMut::with_capacity(HEADER_BYTES + letter.id.len() + letter.record.len());
    value.put_u8(FORMAT_VERSION);
    value.put_u64(letter.failed_at_ms);
    value.put_u32(u32::try_from(letter.id.len()).unwrap_or(u32::MAX));
    value.put_slice(letter.id.as_bytes());
    value.put_slice(&letter.record);
    value.freeze()
}

fn decode(value: &Bytes) -> Option<DeadLetter> {
    if value.len() < HEADER_BYTES || value[0] != FORMAT_VERSION {
        return None;
    }
    let failed_at_ms = u64::from_be_bytes(value[1..9].try_into().ok()?);
    let id_len = usize::try_from(u32::from_be_bytes(value[9..13].try_into().ok()?)).ok()?;
    let id_end = HEADER_BYTES.checked_add(id_len)?;
    let id = std::str::from_utf8(value.get(HEADER_BYTES..id_end)?).ok()?;
    Some(DeadLetter {
        id: id.to_owned(),
        failed_at_ms,
        record: value.slice(id_end..),
    })
}

fn sort_newest_first(letters: &mut [DeadLetter]) {
    letters.sort_by(|a, b| {
        b.failed_at_ms
            .cmp(&a.failed_at_ms)
            .then_with(|| a.id.cmp(&b.id))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_letter_reads_back_as_written() {
        for id in ["call-1", "", "a.b *>\u{e9}\n"] {
            let letter = DeadLetter {
                id: id.to_owned(),
                failed_at_ms: 1_700_000_000_123,
                record: Bytes::from_static(b"{\"x\":1}"),
            };
            assert_eq!(decode(&encode(&letter)), Some(letter));
        }
        assert_eq!(decode(&Bytes::from_static(b"\x02garbage-garbage")), None);
        assert_eq!(decode(&Bytes::from_static(b"\x01short")), None);
    }

    #[test]
    fn keys_are_single_subject_tokens_for_any_id() {
        assert_eq!(key(""), "x");
        assert_eq!(key("a.b"), "x612e62");
        assert!(
            key("a b*>\u{e9}")
                .chars()
                .all(|c| c.is_ascii_alphanumeric())
        );
    }

    #[test]
    fn the_dead_letter_stream_keeps_one_file_backed_message_per_letter() {
        let stream = stream_config(&QueueConfig::default());
        assert_eq!(stream.name, "OF_faas-request_dead_letters");
        assert_eq!(stream.subjects, ["courier-dead-letters.OF_faas-request.>"]);
        assert_eq!(stream.storage, StorageType::File);
        assert_eq!(stream.max_messages_per_subject, 1);
    }

    #[test]
    fn listing_is_newest_first_then_by_id() {
        let letter = |id: &str, at| DeadLetter {
            id: id.into(),
            failed_at_ms: at,
            record: Bytes::new(),
        };
        let mut letters = vec![letter("b", 1), letter("c", 2), letter("a", 1)];
        sort_newest_first(&mut letters);
        let ids: Vec<_> = letters.iter().map(|l| l.id.as_str()).collect();
        assert_eq!(ids, ["c", "a", "b"]);
    }
}
