//! The event stream: an in-memory broadcast of daemon events plus a bounded ring of recent
//! ones, so `GET /events?since=` can replay the past before following the present.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::filters::Filters;

/// How many past events are kept for `since` replays.
const RING_CAPACITY: usize = 1024;
/// How many events a slow subscriber may lag behind before it misses some.
const CHANNEL_CAPACITY: usize = 256;

/// The actor of an event: the object it concerns.
#[derive(Debug, Clone, Serialize)]
pub struct Actor {
    /// Object ID (container ID, image ID, ...).
    #[serde(rename = "ID")]
    pub id: String,
    /// Object attributes: `name`, `image`, labels, `exitCode`, ...
    #[serde(rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}

/// One event in Docker's wire shape (including the legacy `status`/`id`/`from` fields that
/// older clients read for container events).
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Legacy: the action, for container and image events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Legacy: the actor ID, for container and image events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Legacy: the image a container runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Object type: `container`, `image`, `daemon`, ...
    #[serde(rename = "Type")]
    pub kind: String,
    /// What happened: `create`, `start`, `die`, `destroy`, `rename`, ...
    #[serde(rename = "Action")]
    pub action: String,
    /// What it happened to.
    #[serde(rename = "Actor")]
    pub actor: Actor,
    /// Always `local`.
    pub scope: &'static str,
    /// Unix seconds.
    pub time: i64,
    /// Unix nanoseconds.
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
}

impl Event {
    /// Builds an event stamped with the current time.
    pub fn new(kind: &str, action: &str, id: &str, attributes: BTreeMap<String, String>) -> Self {
        let now = crate::time::now_nanos();
        let legacy = kind == "container" || kind == "image";
        Event {
            status: legacy.then(|| action.to_string()),
            id: legacy.then(|| id.to_string()),
            from: if kind == "container" {
                attributes.get("image").cloned()
            } else {
                None
            },
            kind: kind.to_string(),
            action: action.to_string(),
            actor: Actor {
                id: id.to_string(),
                attributes,
            },
            scope: "local",
            time: now / 1_000_000_000,
            time_nano: now,
        }
    }

    /// Whether the event passes `GET /events` filters (`type`, `event`, `container`, `image`,
    /// `label`, `daemon`).
    pub fn matches(&self, filters: &Filters) -> bool {
        let attrs = &self.actor.attributes;
        filters.matches_any("type", |t| t == self.kind)
            && filters.matches_any("event", |e| {
                e == self.action
                    || self
                        .action
                        .split_once(':')
                        .is_some_and(|(head, _)| head == e)
            })
            && filters.matches_any("container", |c| {
                self.kind == "container"
                    && (self.actor.id.starts_with(c)
                        || attrs
                            .get("name")
                            .is_some_and(|n| n == c.trim_start_matches('/')))
            })
            && filters.matches_any("image", |i| {
                (self.kind == "image"
                    && (self.actor.id == i || attrs.get("name").is_some_and(|n| n == i)))
                    || attrs.get("image").is_some_and(|n| n == i)
            })
            && filters.matches_all("label", |l| match l.split_once('=') {
                Some((k, v)) => attrs.get(k).is_some_and(|x| x == v),
                None => attrs.contains_key(l),
            })
            && filters.matches_any("daemon", |d| self.kind == "daemon" && self.actor.id == d)
    }
}

/// Waits until `done()` holds, checking it first and again after each event (the daemon
/// publishes one with every state change), or until `timeout`; `false` if the timeout came
/// first. Subscribe before acting, so that the change being waited for cannot slip by.
pub async fn until(
    events: &mut broadcast::Receiver<Arc<Event>>,
    timeout: Option<std::time::Duration>,
    mut done: impl FnMut() -> bool,
) -> bool {
    let wait = async {
        while !done() {
            match events.recv().await {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    };
    match timeout {
        Some(t) => tokio::time::timeout(t, wait).await.is_ok(),
        None => {
            wait.await;
            true
        }
    }
}

/// The daemon's event hub.
pub struct Events {
    tx: broadcast::Sender<Arc<Event>>,
    ring: Mutex<VecDeque<Arc<Event>>>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    /// An empty hub.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(CHANNEL_CAPACITY);
        Events {
            tx,
            ring: Mutex::new(VecDeque::new()),
        }
    }

    /// Records and broadcasts an event.
    pub fn publish(&self, event: Event) {
        let event = Arc::new(event);
        // Sending under the ring's lock makes `subscribe`'s snapshot and receiver consistent:
        // every event is either in the snapshot or delivered to the receiver, never both.
        let mut ring = lock(&self.ring);
        if ring.len() == RING_CAPACITY {
            ring.pop_front();
        }
        ring.push_back(Arc::clone(&event));
        // No subscribers is not an error.
        let _ = self.tx.send(event);
    }

    /// Convenience for container events: attributes carry the name, image and labels.
    pub fn container(
        &self,
        action: &str,
        id: &str,
        name: &str,
        image: &str,
        labels: Option<&std::collections::HashMap<String, String>>,
        extra: &[(&str, String)],
    ) {
        let mut attributes: BTreeMap<String, String> = labels
            .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        attributes.insert("name".into(), name.trim_start_matches('/').to_string());
        attributes.insert("image".into(), image.to_string());
        for (k, v) in extra {
            attributes.insert((*k).to_string(), v.clone());
        }
        self.publish(Event::new("container", action, id, attributes));
    }

    /// The recorded past events and a receiver for everything published afterwards.
    pub fn subscribe(&self) -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
        let ring = lock(&self.ring);
        (ring.iter().cloned().collect(), self.tx.subscribe())
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it: every critical
/// section in this crate leaves its data consistent at each step.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_and_filters() {
        let events = Events::new();
        events.container("create", "abc123", "/web", "busybox", None, &[]);
        events.container("start", "abc123", "/web", "busybox", None, &[]);
        events.container("create", "def456", "/db", "redis", None, &[]);
        let (past, _rx) = events.subscribe();
        assert_eq!(past.len(), 3);
        let f = Filters::parse(r#"{"container":["web"],"event":["start"]}"#).unwrap();
        let hits: Vec<_> = past.iter().filter(|e| e.matches(&f)).collect();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].action, "start");
        let f = Filters::parse(r#"{"image":{"redis":true}}"#).unwrap();
        assert_eq!(past.iter().filter(|e| e.matches(&f)).count(), 1);
        let json = serde_json::to_value(&*past[0]).unwrap();
        assert_eq!(json["Actor"]["Attributes"]["name"], "web");
        assert_eq!(json["status"], "create");
    }
}
