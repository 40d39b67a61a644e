//! The route table: longest prefix of the normalised path wins (Apache `ProxyPass`).
//!
//! Prefixes match on segment boundaries: `/paid_user` matches `/paid_user` and
//! `/paid_user/x` but not `/paid_users`, which an operator would otherwise have to guard
//! against by hand. A trailing slash in the prefix makes no difference to matching.

use std::sync::Arc;

/// One route: a front prefix and what it leads to.
#[derive(Debug)]
pub struct Route<T> {
    info: Arc<RouteInfo>,
    value: T,
}

/// The part of a route that travels with a request: its name and front prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// The route's name, for logs and metrics (by default the prefix as configured).
    pub name: String,
    /// The prefix without its trailing slash (`""` for the root route).
    pub prefix: String,
}

impl RouteInfo {
    /// Builds route info from a configured prefix, which must start with `/`.
    pub fn new(name: impl Into<String>, prefix: &str) -> Self {
        Self {
            name: name.into(),
            prefix: prefix.trim_end_matches('/').to_owned(),
        }
    }

    /// The rest of `path` after this route's prefix: empty or starting with `/`.
    pub fn remainder<'p>(&self, path: &'p str) -> &'p str {
        &path[self.prefix.len().min(path.len())..]
    }

    fn matches(&self, path: &str) -> bool {
        match path.strip_prefix(self.prefix.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }
}

impl<T> Route<T> {
    /// The route's name and prefix.
    pub fn info(&self) -> &Arc<RouteInfo> {
        &self.info
    }

    /// What the route leads to.
    pub fn value(&self) -> &T {
        &self.value
    }
}

/// Routes ordered for longest-prefix lookup.
#[derive(Debug)]
pub struct RouteTable<T> {
    routes: Vec<Route<T>>,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        Self { routes: Vec::new() }
    }
}

impl<T> RouteTable<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route; returns `Err` with the value back if the prefix is taken already.
    pub fn insert(&mut self, info: RouteInfo, value: T) -> Result<(), T> {
        if self.routes.iter().any(|r| r.info.prefix == info.prefix) {
            return Err(value);
        }
        let at = self
            .routes
            .partition_point(|r| r.info.prefix.len() >= info.prefix.len());
        self.routes.insert(
            at,
            Route {
                info: Arc::new(info),
                value,
            },
        );
        Ok(())
    }

    /// The route with the longest prefix matching `path` (already normalised).
    pub fn find(&self, path: &str) -> Option<&Route<T>> {
        self.find_indexed(path).map(|(_, route)| route)
    }

    /// [`find`](Self::find), with the route's place in [`iter`](Self::iter)'s order (for
    /// state kept beside the table, one entry per route).
    pub fn find_indexed(&self, path: &str) -> Option<(usize, &Route<T>)> {
        self.routes
            .iter()
            .enumerate()
            .find(|(_, r)| r.info.matches(path))
    }

    /// All routes, longest prefix first.
    pub fn iter(&self) -> impl Iterator<Item = &Route<T>> {
        self.routes.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable<&'static str> {
        let mut t = RouteTable::new();
        for (p, v) in [
            ("/", "web"),
            ("/news_rss/", "news"),
            ("/paid_user", "paid"),
            ("/paid_user/vip", "vip"),
        ] {
            t.insert(RouteInfo::new(p, p), v).unwrap();
        }
        t
    }

    #[test]
    fn longest_prefix_on_segment_boundaries() {
        let t = table();
        let find = |p| *t.find(p).unwrap().value();
        assert_eq!(find("/"), "web");
        assert_eq!(find("/x"), "web");
        assert_eq!(find("/news_rss/a"), "news");
        assert_eq!(find("/news_rss"), "news");
        assert_eq!(find("/news_rssx"), "web");
        assert_eq!(find("/paid_user"), "paid");
        assert_eq!(find("/paid_users"), "web");
        assert_eq!(find("/paid_user/vip/1"), "vip");
        assert_eq!(find("/paid_user/vipx"), "paid");
    }

    #[test]
    fn duplicate_prefix_is_refused() {
        let mut t = table();
        assert_eq!(
            t.insert(RouteInfo::new("again", "/news_rss"), "x"),
            Err("x")
        );
    }

    #[test]
    fn no_root_route_means_no_match() {
        let mut t = RouteTable::new();
        t.insert(RouteInfo::new("a", "/a"), 1).unwrap();
        assert!(t.find("/b").is_none());
        assert_eq!(t.find("/a/b").unwrap().info().remainder("/a/b"), "/b");
    }
}
