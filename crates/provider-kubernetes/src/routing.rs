//! [`RoutingTable`]: which functions exist and the ready pod addresses of each, so
//! [`courier_core::Provider::resolve`] answers from memory on every invocation.
//!
//! The table is fed by watches (see `watch`): function Deployments say which functions
//! exist, EndpointSlices say which pods are ready. Deploy and delete also write through, so a
//! function is known (not ready) the moment it is deployed and unknown the moment it is
//! deleted, whatever the watches have seen. No IO here.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use courier_core::{Endpoint, FunctionRef, ProviderError};
use http::uri::Authority;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::render::WATCHDOG_PORT;

/// The label the EndpointSlice controller puts on each slice: the Service it belongs to.
pub(crate) const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";

/// The ready addresses one EndpointSlice holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReadySlice {
    /// The slice's name.
    pub(crate) name: String,
    /// The Service (= function) it belongs to; empty when unlabelled.
    pub(crate) service: String,
    /// `ip:port` of each ready endpoint, on the watchdog port.
    pub(crate) addresses: Vec<Authority>,
}

impl ReadySlice {
    /// Reads a slice: endpoints whose `ready` condition is true or unknown (the API says to
    /// treat unknown as ready), on the port named `http` (else the only port, else 8080).
    pub(crate) fn from_endpoint_slice(slice: &EndpointSlice) -> Self {
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(LABEL_SERVICE_NAME))
            .cloned()
            .unwrap_or_default();
        let ports = slice.ports.as_deref().unwrap_or_default();
        let port = ports
            .iter()
            .find(|p| p.name.as_deref() == Some("http"))
            .or(match ports {
                [only] => Some(only),
                _ => None,
            })
            .and_then(|p| p.port)
            .unwrap_or(WATCHDOG_PORT);
        let ipv6 = slice.address_type == "IPv6";
        let addresses = slice
            .endpoints
            .iter()
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
            .filter_map(|e| e.addresses.first())
            .filter_map(|ip| {
                let text = if ipv6 {
                    format!("[{ip}]:{port}")
                } else {
                    format!("{ip}:{port}")
                };
                Authority::try_from(text).ok()
            })
            .collect();
        Self {
            name: slice.metadata.name.clone().unwrap_or_default(),
            service,
            addresses,
        }
    }
}

/// Functions and their ready addresses, per namespace.
#[derive(Debug, Default)]
pub(crate) struct RoutingTable {
    namespaces: RwLock<HashMap<String, Namespace>>,
}

#[derive(Debug, Default)]
struct Namespace {
    /// Names of the function Deployments.
    functions: HashSet<String>,
    /// Every slice, by slice name.
    slices: HashMap<String, ReadySlice>,
    /// Ready addresses by Service name: the union of that Service's slices.
    ready: HashMap<String, Ready>,
}

#[derive(Debug, Default)]
struct Ready {
    addresses: Vec<Authority>,
    /// Round-robin position.
    next: AtomicUsize,
}

impl RoutingTable {
    /// A ready address of `function`, taking turns between its pods.
    pub(crate) fn resolve(&self, function: &FunctionRef) -> Result<Endpoint, ProviderError> {
        let namespaces = self.namespaces.read().expect("routing lock");
        let ns = namespaces
            .get(&function.namespace)
            .filter(|ns| ns.functions.contains(&function.name))
            .ok_or_else(|| ProviderError::NotFound {
                kind: "function",
                name: function.to_string(),
            })?;
        let ready = ns
            .ready
            .get(&function.name)
            .filter(|r| !r.addresses.is_empty())
            .ok_or_else(|| ProviderError::NotReady(function.to_string()))?;
        let turn = ready.next.fetch_add(1, Ordering::Relaxed);
        Ok(Endpoint {
            authority: ready.addresses[turn % ready.addresses.len()].clone(),
        })
    }

    /// A function Deployment exists.
    pub(crate) fn add_function(&self, namespace: &str, name: &str) {
        self.with(namespace, |ns| {
            ns.functions.insert(name.to_owned());
        });
    }

    /// A function Deployment is gone.
    pub(crate) fn remove_function(&self, namespace: &str, name: &str) {
        self.with(namespace, |ns| {
            ns.functions.remove(name);
        });
    }

    /// These are all the function Deployments of `namespace` (a watch's full listing).
    pub(crate) fn replace_functions(&self, namespace: &str, names: Vec<String>) {
        self.with(namespace, |ns| ns.functions = names.into_iter().collect());
    }

    /// A slice was created or changed.
    pub(crate) fn apply_slice(&self, namespace: &str, slice: ReadySlice) {
        self.with(namespace, |ns| {
            let service = slice.service.clone();
            let old = ns.slices.insert(slice.name.clone(), slice);
            if let Some(old) = old.filter(|old| old.service != service) {
                ns.recompute(&old.service);
            }
            ns.recompute(&service);
        });
    }

    /// A slice is gone.
    pub(crate) fn remove_slice(&self, namespace: &str, slice_name: &str) {
        self.with(namespace, |ns| {
            if let Some(old) = ns.slices.remove(slice_name) {
                ns.recompute(&old.service);
            }
        });
    }

    /// These are all the slices of `namespace` (a watch's full listing).
    pub(crate) fn replace_slices(&self, namespace: &str, slices: Vec<ReadySlice>) {
        self.with(namespace, |ns| {
            ns.slices = slices.into_iter().map(|s| (s.name.clone(), s)).collect();
            let services: HashSet<String> = ns
                .slices
                .values()
                .map(|s| s.service.clone())
                .chain(ns.ready.keys().cloned())
                .collect();
            for service in services {
                ns.recompute(&service);
            }
        });
    }

    /// Forgets everything of `namespace` (it is no longer served).
    pub(crate) fn forget_namespace(&self, namespace: &str) {
        self.namespaces
            .write()
            .expect("routing lock")
            .remove(namespace);
    }

    fn with(&self, namespace: &str, change: impl FnOnce(&mut Namespace)) {
        let mut namespaces = self.namespaces.write().expect("routing lock");
        change(namespaces.entry(namespace.to_owned()).or_default());
    }
}

impl Namespace {
    /// Rebuilds the ready list of `service` from its slices, keeping the round-robin position.
    fn recompute(&mut self, service: &str) {
        if service.is_empty() {
            return;
        }
        let mut addresses: Vec<Authority> = Vec::new();
        let mut slices: Vec<&ReadySlice> = self
            .slices
            .values()
            .filter(|s| s.service == service)
            .collect();
        slices.sort_by(|a, b| a.name.cmp(&b.name));
        for address in slices.into_iter().flat_map(|s| &s.addresses) {
            if !addresses.contains(address) {
                addresses.push(address.clone());
            }
        }
        if addresses.is_empty() {
            self.ready.remove(service);
        } else {
            self.ready.entry(service.to_owned()).or_default().addresses = addresses;
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::discovery::v1::{
        Endpoint as SliceEndpoint, EndpointConditions, EndpointPort,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn echo() -> FunctionRef {
        FunctionRef::new("echo", None).unwrap()
    }

    fn slice(name: &str, service: &str, addresses: &[&str]) -> ReadySlice {
        ReadySlice {
            name: name.into(),
            service: service.into(),
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn endpoint(ip: &str, ready: Option<bool>) -> SliceEndpoint {
        SliceEndpoint {
            addresses: vec![ip.into()],
            conditions: Some(EndpointConditions {
                ready,
                ..EndpointConditions::default()
            }),
            ..SliceEndpoint::default()
        }
    }

    #[test]
    fn an_unknown_function_is_not_found_and_a_known_one_without_pods_is_not_ready() {
        let table = RoutingTable::default();
        assert!(matches!(
            table.resolve(&echo()),
            Err(ProviderError::NotFound { .. })
        ));
        table.add_function("openfaas-fn", "echo");
        assert!(matches!(
            table.resolve(&echo()),
            Err(ProviderError::NotReady(_))
        ));
    }

    #[test]
    fn ready_pods_are_taken_in_turn_across_slices() {
        let table = RoutingTable::default();
        table.add_function("openfaas-fn", "echo");
        table.apply_slice("openfaas-fn", slice("echo-a", "echo", &["10.0.0.1:8080"]));
        table.apply_slice("openfaas-fn", slice("echo-b", "echo", &["10.0.0.2:8080"]));
        let picks: Vec<String> = (0..4)
            .map(|_| table.resolve(&echo()).unwrap().authority.to_string())
            .collect();
        assert_eq!(
            picks,
            [
                "10.0.0.1:8080",
                "10.0.0.2:8080",
                "10.0.0.1:8080",
                "10.0.0.2:8080"
            ]
        );
    }

    #[test]
    fn a_slice_of_another_service_or_namespace_does_not_count() {
        let table = RoutingTable::default();
        table.add_function("openfaas-fn", "echo");
        table.apply_slice("openfaas-fn", slice("other-a", "other", &["10.0.0.9:8080"]));
        table.apply_slice("team-a", slice("echo-a", "echo", &["10.0.0.8:8080"]));
        assert!(matches!(
            table.resolve(&echo()),
            Err(ProviderError::NotReady(_))
        ));
    }

    #[test]
    fn removing_the_last_slice_or_the_function_stops_routing() {
        let table = RoutingTable::default();
        table.add_function("openfaas-fn", "echo");
        table.apply_slice("openfaas-fn", slice("echo-a", "echo", &["10.0.0.1:8080"]));
        table.remove_slice("openfaas-fn", "echo-a");
        assert!(matches!(
            table.resolve(&echo()),
            Err(ProviderError::NotReady(_))
        ));
        table.apply_slice("openfaas-fn", slice("echo-a", "echo", &["10.0.0.1:8080"]));
        table.remove_function("openfaas-fn", "echo");
        assert!(matches!(
            table.resolve(&echo()),
            Err(ProviderError::NotFound { .. })
        ));
    }

    #[test]
    fn a_forgotten_namespace_routes_nothing() {
        let table = RoutingTable::default();
        table.add_function("openfaas-fn", "echo");
        table.apply_slice("openfaas-fn", slice("echo-a", "echo", &["10.0.0.1:8080"]));
        table.forget_namespace("openfaas-fn");
        assert!(matches!(
            table.resolve(&echo()),
            Err(ProviderError::NotFound { .. })
        ));
    }

    #[test]
    fn a_full_listing_replaces_what_was_known() {
        let table = RoutingTable::default();
        table.add_function("openfaas-fn", "gone");
        table.apply_slice("openfaas-fn", slice("echo-a", "echo", &["10.0.0.1:8080"]));
        table.replace_functions("openfaas-fn", vec!["echo".into()]);
        table.replace_slices(
            "openfaas-fn",
            vec![slice("echo-b", "echo", &["10.0.0.2:8080"])],
        );
        assert_eq!(
            table.resolve(&echo()).unwrap().authority.as_str(),
            "10.0.0.2:8080"
        );
        let gone = FunctionRef::new("gone", None).unwrap();
        assert!(matches!(
            table.resolve(&gone),
            Err(ProviderError::NotFound { .. })
        ));
    }

    #[test]
    fn a_slice_lists_ready_and_unknown_endpoints_on_the_http_port() {
        let slice = EndpointSlice {
            metadata: ObjectMeta {
                name: Some("echo-x1".into()),
                labels: Some([(LABEL_SERVICE_NAME.to_owned(), "echo".to_owned())].into()),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".into(),
            endpoints: vec![
                endpoint("10.0.0.1", Some(true)),
                endpoint("10.0.0.2", Some(false)),
                endpoint("10.0.0.3", None),
            ],
            ports: Some(vec![
                EndpointPort {
                    name: Some("metrics".into()),
                    port: Some(9090),
                    ..EndpointPort::default()
                },
                EndpointPort {
                    name: Some("http".into()),
                    port: Some(8080),
                    ..EndpointPort::default()
                },
            ]),
        };
        assert_eq!(
            ReadySlice::from_endpoint_slice(&slice),
            ReadySlice {
                name: "echo-x1".into(),
                service: "echo".into(),
                addresses: vec![
                    "10.0.0.1:8080".parse().unwrap(),
                    "10.0.0.3:8080".parse().unwrap()
                ],
            }
        );
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        let slice = EndpointSlice {
            metadata: ObjectMeta {
                name: Some("echo-v6".into()),
                ..ObjectMeta::default()
            },
            address_type: "IPv6".into(),
            endpoints: vec![endpoint("fd00::1", Some(true))],
            ports: None,
        };
        let ready = ReadySlice::from_endpoint_slice(&slice);
        assert_eq!(ready.addresses[0].as_str(), "[fd00::1]:8080");
    }
}
