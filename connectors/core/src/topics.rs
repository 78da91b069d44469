//! The topic map: which functions a message on a topic (a Kafka topic, an AMQP queue) goes to,
//! derived from the functions' `topic` annotation, plus each subscriber's retry policy and
//! reply destination. Pure: [`TopicMap::build`] is a function of the function list.
//!
//! [`TopicWatch`] keeps a current map from the catalog's watch channel, so deploys, updates and
//! removals are followed as soon as the catalog publishes them (no polling of the gateway).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use courier_core::FunctionStatus;
use courier_core::retry::{IgnoredAnnotation, RetryPolicy};
use courier_invoke::FunctionList;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Annotation listing the topics (or queues) a function subscribes to, comma-separated.
pub const ANNOTATION_TOPIC: &str = "topic";

/// Annotation naming the topic (Kafka) or queue (AMQP) that each successful response of the
/// function is published to, so that functions chain into pipelines.
pub const ANNOTATION_REPLY_TOPIC: &str = "com.courier.reply-topic";

/// Splits a `topic` annotation: comma-separated, spaces trimmed, empty entries skipped,
/// duplicates dropped (the first occurrence keeps its place). Matching is exact and
/// case-sensitive, as in OpenFaaS's connector-sdk.
pub fn parse_topics(annotation: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    annotation
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .filter(|t| seen.insert(*t))
        .map(str::to_owned)
        .collect()
}

/// One function subscribed to a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    /// The function, as `name.namespace` (or `name` when the provider has no namespaces).
    pub function: String,
    /// How a failing synchronous call of it is retried: the connector's policy overridden by
    /// the function's `com.openfaas.retry.*` annotations.
    pub retry: RetryPolicy,
    /// Where its successful responses are published ([`ANNOTATION_REPLY_TOPIC`]).
    pub reply_topic: Option<String>,
}

/// An annotation of a function that could not be used (its default was kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredFunctionAnnotation {
    /// The function, `name.namespace`.
    pub function: String,
    /// The annotation and its value.
    pub annotation: IgnoredAnnotation,
}

/// Topic → the functions subscribed to it, sorted by function.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicMap {
    topics: BTreeMap<String, Arc<[Subscriber]>>,
}

impl TopicMap {
    /// Builds the map from the deployed functions. Functions without a `topic` annotation are
    /// left out; a function may subscribe to several topics and a topic may have several
    /// functions. Retry annotations that cannot be used are returned, not fatal.
    pub fn build(
        functions: &[FunctionStatus],
        base_retry: &RetryPolicy,
    ) -> (Self, Vec<IgnoredFunctionAnnotation>) {
        let mut topics: BTreeMap<String, Vec<Subscriber>> = BTreeMap::new();
        let mut ignored = Vec::new();
        for function in functions {
            let Some(annotation) = function.annotations.get(ANNOTATION_TOPIC) else {
                continue;
            };
            let subscribed = parse_topics(annotation);
            if subscribed.is_empty() {
                continue;
            }
            let name = qualified_name(function);
            let (retry, unusable) = base_retry.with_annotations(&function.annotations);
            ignored.extend(
                unusable
                    .into_iter()
                    .map(|annotation| IgnoredFunctionAnnotation {
                        function: name.clone(),
                        annotation,
                    }),
            );
            let reply_topic = function
                .annotations
                .get(ANNOTATION_REPLY_TOPIC)
                .map(|t| t.trim())
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            let subscriber = Subscriber {
                function: name,
                retry,
                reply_topic,
            };
            for topic in subscribed {
                topics.entry(topic).or_default().push(subscriber.clone());
            }
        }
        let topics = topics
            .into_iter()
            .map(|(topic, mut subscribers)| {
                subscribers.sort_by(|a, b| a.function.cmp(&b.function));
                subscribers.dedup_by(|a, b| a.function == b.function);
                (topic, Arc::from(subscribers))
            })
            .collect();
        (Self { topics }, ignored)
    }

    /// The functions subscribed to `topic` (exact, case-sensitive match); empty if none.
    pub fn subscribers(&self, topic: &str) -> Arc<[Subscriber]> {
        self.topics
            .get(topic)
            .cloned()
            .unwrap_or_else(|| Arc::from(Vec::new()))
    }

    /// Every topic some function subscribes to, sorted.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.topics.keys().map(String::as_str)
    }

    /// Whether no function subscribes to anything.
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }
}

/// `name.namespace`, or just `name` for a provider without namespaces.
fn qualified_name(function: &FunctionStatus) -> String {
    if function.namespace.is_empty() {
        function.name.clone()
    } else {
        format!("{}.{}", function.name, function.namespace)
    }
}

/// A topic map kept current from the catalog.
#[derive(Debug, Clone)]
pub struct TopicWatch {
    current: watch::Receiver<Arc<TopicMap>>,
    /// The sender of a fixed map, kept so that the map stays readable.
    _fixed: Option<Arc<watch::Sender<Arc<TopicMap>>>>,
}

impl TopicWatch {
    /// Starts following `catalog`. When the catalog has no function yet, waits up to `grace`
    /// for its first update first, so that a connector started together with the gateway does
    /// not see its first messages as unsubscribed while the function list is still loading.
    /// The follower stops with `shutdown` or when the catalog goes away (the last map stays).
    pub async fn start(
        mut catalog: watch::Receiver<FunctionList>,
        base_retry: RetryPolicy,
        grace: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        if catalog.borrow().is_empty() {
            let _ = tokio::time::timeout(grace, catalog.changed()).await;
        }
        let functions = catalog.borrow_and_update().clone();
        let (map, ignored) = TopicMap::build(&functions, &base_retry);
        log_map(&map, &ignored);
        let (tx, current) = watch::channel(Arc::new(map));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    changed = catalog.changed() => if changed.is_err() { return },
                }
                let functions = catalog.borrow_and_update().clone();
                let (map, ignored) = TopicMap::build(&functions, &base_retry);
                let changed = tx.send_if_modified(|current| {
                    if **current == map {
                        false
                    } else {
                        *current = Arc::new(map.clone());
                        true
                    }
                });
                if changed {
                    log_map(&map, &ignored);
                }
            }
        });
        Self {
            current,
            _fixed: None,
        }
    }

    /// A watch that always holds `map` (tests, fixed wiring).
    pub fn fixed(map: TopicMap) -> Self {
        let (tx, current) = watch::channel(Arc::new(map));
        Self {
            current,
            _fixed: Some(Arc::new(tx)),
        }
    }

    /// The map now.
    pub fn current(&self) -> Arc<TopicMap> {
        self.current.borrow().clone()
    }

    /// Waits until the map changes; `false` when it never will again.
    pub async fn changed(&mut self) -> bool {
        self.current.changed().await.is_ok()
    }
}

fn log_map(map: &TopicMap, ignored: &[IgnoredFunctionAnnotation]) {
    for i in ignored {
        tracing::warn!(
            function = %i.function,
            annotation = i.annotation.key,
            value = %i.annotation.value,
            "Retry annotation ignored; the connector's default is used."
        );
    }
    let topics: Vec<String> = map
        .topics
        .iter()
        .map(|(topic, subs)| {
            let functions: Vec<&str> = subs.iter().map(|s| s.function.as_str()).collect();
            format!("{topic} -> {}", functions.join(" "))
        })
        .collect();
    tracing::info!(topics = %topics.join("; "), "Topic map updated.");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn function(name: &str, annotations: &[(&str, &str)]) -> FunctionStatus {
        FunctionStatus {
            name: name.to_owned(),
            namespace: "openfaas-fn".to_owned(),
            annotations: annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..FunctionStatus::default()
        }
    }

    #[test]
    fn topics_are_split_on_commas_and_trimmed() {
        assert_eq!(parse_topics(" a, b ,,c ,a"), vec!["a", "b", "c"]);
        assert!(parse_topics(" , ").is_empty());
        assert_eq!(parse_topics("Orders"), vec!["Orders"]);
    }

    #[test]
    fn several_functions_share_a_topic_and_one_function_has_several_topics() {
        let (map, ignored) = TopicMap::build(
            &[
                function("b", &[("topic", "orders, payments")]),
                function("a", &[("topic", "orders")]),
                function("c", &[]),
            ],
            &RetryPolicy::default(),
        );
        assert!(ignored.is_empty());
        let orders: Vec<_> = map
            .subscribers("orders")
            .iter()
            .map(|s| s.function.clone())
            .collect();
        assert_eq!(orders, vec!["a.openfaas-fn", "b.openfaas-fn"]);
        assert_eq!(map.subscribers("payments").len(), 1);
        assert!(map.subscribers("Orders").is_empty(), "case-sensitive");
        assert_eq!(map.topics().collect::<Vec<_>>(), vec!["orders", "payments"]);
    }

    #[test]
    fn retry_annotations_and_reply_topic_are_carried_per_function() {
        let base = RetryPolicy {
            attempts: 5,
            ..RetryPolicy::default()
        };
        let (map, ignored) = TopicMap::build(
            &[function(
                "f",
                &[
                    ("topic", "t"),
                    ("com.openfaas.retry.attempts", "2"),
                    ("com.openfaas.retry.min_wait", "never"),
                    ("com.courier.reply-topic", " results "),
                ],
            )],
            &base,
        );
        let sub = &map.subscribers("t")[0];
        assert_eq!(sub.retry.attempts, 2);
        assert_eq!(sub.retry.min_wait, base.min_wait);
        assert_eq!(sub.reply_topic.as_deref(), Some("results"));
        assert_eq!(ignored.len(), 1);
        assert_eq!(ignored[0].function, "f.openfaas-fn");
    }

    #[test]
    fn a_function_without_namespace_is_named_alone() {
        let mut f = function("f", &[("topic", "t")]);
        f.namespace.clear();
        let (map, _) = TopicMap::build(&[f], &RetryPolicy::default());
        assert_eq!(map.subscribers("t")[0].function, "f");
    }

    #[tokio::test]
    async fn the_watch_follows_deploys_and_removals() {
        let (tx, rx) =
            watch::channel::<FunctionList>(Arc::new(vec![function("a", &[("topic", "t")])]));
        let shutdown = CancellationToken::new();
        let mut topics = TopicWatch::start(
            rx,
            RetryPolicy::default(),
            Duration::from_millis(10),
            shutdown.clone(),
        )
        .await;
        assert_eq!(topics.current().subscribers("t").len(), 1);
        tx.send(Arc::new(vec![
            function("a", &[("topic", "t")]),
            function("b", &[("topic", "t,u")]),
        ]))
        .unwrap();
        assert!(topics.changed().await);
        assert_eq!(topics.current().subscribers("t").len(), 2);
        assert_eq!(topics.current().subscribers("u").len(), 1);
        tx.send(Arc::new(vec![])).unwrap();
        assert!(topics.changed().await);
        assert!(topics.current().is_empty());
        shutdown.cancel();
    }

    #[tokio::test]
    async fn an_empty_catalog_is_given_a_moment_to_load() {
        let (tx, rx) = watch::channel::<FunctionList>(Arc::new(vec![]));
        let loader = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            tx.send(Arc::new(vec![function("a", &[("topic", "t")])]))
                .unwrap();
            tx
        });
        let topics = TopicWatch::start(
            rx,
            RetryPolicy::default(),
            Duration::from_secs(5),
            CancellationToken::new(),
        )
        .await;
        assert_eq!(topics.current().subscribers("t").len(), 1);
        drop(loader.await.unwrap());
    }

    proptest! {
        #[test]
        fn parsed_topics_are_trimmed_non_empty_unique_and_comma_free(s in "[ a-c,\t]{0,24}") {
            let topics = parse_topics(&s);
            let unique: BTreeSet<_> = topics.iter().collect();
            prop_assert_eq!(unique.len(), topics.len());
            for t in &topics {
                prop_assert!(!t.is_empty());
                prop_assert_eq!(t.trim(), t.as_str());
                prop_assert!(!t.contains(','));
                prop_assert!(s.contains(t.as_str()));
            }
        }

        #[test]
        fn joining_topics_parses_back_to_the_same_list(
            topics in proptest::collection::vec("[a-z][a-z0-9._-]{0,8}", 0..6),
            pad in " {0,2}",
        ) {
            let mut unique = Vec::new();
            for t in &topics {
                if !unique.contains(t) {
                    unique.push(t.clone());
                }
            }
            let joined = unique
                .iter()
                .map(|t| format!("{pad}{t}{pad}"))
                .collect::<Vec<_>>()
                .join(",");
            prop_assert_eq!(parse_topics(&joined), unique);
        }

        #[test]
        fn every_function_is_under_every_topic_it_lists(
            lists in proptest::collection::vec("[ab, ]{0,8}", 0..5),
        ) {
            let functions: Vec<_> = lists
                .iter()
                .enumerate()
                .map(|(i, l)| function(&format!("f{i}"), &[("topic", l)]))
                .collect();
            let (map, _) = TopicMap::build(&functions, &RetryPolicy::default());
            for (i, l) in lists.iter().enumerate() {
                let name = format!("f{i}.openfaas-fn");
                for topic in ["a", "b", "ab", "ba", "aa", "bb"] {
                    let listed = parse_topics(l).iter().any(|t| t == topic);
                    let mapped = map.subscribers(topic).iter().any(|s| s.function == name);
                    prop_assert_eq!(listed, mapped, "{} {}", topic, l);
                }
            }
        }
    }
}
