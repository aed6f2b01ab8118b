//! Pusher apps at run time: each configured app (`crate::config::apps`) as a `Tenant`
//! with its connection count, and how an app's channel names map onto hub channels.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

pub use crate::config::apps::{parse_flag, App, AppLimits, Webhook, WEBHOOK_EVENTS};

/// An app at run time: its config, where its channels live in the hub, its connections.
#[derive(Debug)]
pub struct Tenant {
    /// The configuration.
    pub app: App,
    /// Prefix of its hub channel names: empty for the default app (its channels are the
    /// native ones), `pusher:{id} ` for the others (a space: no native name has one).
    prefix: String,
    /// Connections open now.
    pub connections: AtomicUsize,
}

impl Tenant {
    /// The hub channel of this app's channel `name`.
    pub fn hub_channel(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name)
    }

    /// This app's channel name of a hub channel, if the hub channel is the app's.
    pub fn app_channel<'a>(&self, hub: &'a str) -> Option<&'a str> {
        if self.prefix.is_empty() {
            (!hub.contains(' ')).then_some(hub)
        } else {
            hub.strip_prefix(&self.prefix)
        }
    }

    /// True for the default app.
    pub fn is_default(&self) -> bool {
        self.prefix.is_empty()
    }
}

/// Every configured app; the first is the default one.
#[derive(Debug, Default)]
pub struct Apps {
    list: Vec<Arc<Tenant>>,
}

impl Apps {
    /// The apps at run time, from validated settings (see `Config::pusher_apps`); the
    /// first is the default app.
    pub fn new(all: Vec<App>) -> Apps {
        let list = all
            .into_iter()
            .enumerate()
            .map(|(i, app)| {
                Arc::new(Tenant {
                    prefix: if i == 0 {
                        String::new()
                    } else {
                        format!("pusher:{} ", app.id)
                    },
                    app,
                    connections: AtomicUsize::new(0),
                })
            })
            .collect();
        Apps { list }
    }

    /// The app with this key.
    pub fn by_key(&self, key: &str) -> Option<&Arc<Tenant>> {
        self.list.iter().find(|t| t.app.key == key)
    }

    /// The app with this id.
    pub fn by_id(&self, id: &str) -> Option<&Arc<Tenant>> {
        self.list.iter().find(|t| t.app.id == id)
    }

    /// Every app.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.list.iter()
    }

    /// The app owning a hub channel, with the app's name for it.
    pub fn of_hub_channel<'a>(&self, hub: &'a str) -> Option<(&Arc<Tenant>, &'a str)> {
        self.list
            .iter()
            .rev()
            .find_map(|t| t.app_channel(hub).map(|name| (t, name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_scopes() {
        let apps = Apps::new(vec![
            parse_flag("1:k1:s1").unwrap(),
            parse_flag("2:k2:s:with:colons").unwrap(),
        ]);
        let (one, two) = (apps.by_id("1").unwrap(), apps.by_key("k2").unwrap());
        assert_eq!(two.app.secret, "s:with:colons");
        assert_eq!(one.hub_channel("news"), "news");
        assert_eq!(two.hub_channel("news"), "pusher:2 news");
        assert_eq!(one.app_channel("pusher:2 news"), None);
        assert_eq!(two.app_channel("pusher:2 news"), Some("news"));
        assert_eq!(apps.of_hub_channel("pusher:2 x").unwrap().0.app.id, "2");
        assert_eq!(apps.of_hub_channel("x").unwrap().0.app.id, "1");
    }
}
