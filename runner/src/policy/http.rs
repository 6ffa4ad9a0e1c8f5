//! `http`: settings of HTTP functions (components exporting `wasi:http/incoming-handler`): the
//! outbound hosts the guest may call and the route prefix the function claims in `hybox serve`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::FieldError;

/// Settings for HTTP functions. Both fields are empty by default: no outbound request is allowed,
/// and the function is reachable only under `/v1/functions/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// `host:port` pairs the guest's `wasi:http/outgoing-handler` may reach (plain HTTP), matched
    /// exactly against the request's authority (the port defaults to 80): `"127.0.0.1:8080"`,
    /// `"api.example.com:80"`, `"[::1]:8080"`. A name matches only that name (never an address it
    /// resolves to, nor another name for the same address). Everything else is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbound_hosts: Vec<String>,
    /// A path the function also answers at the server's root, besides `/v1/functions/{name}`:
    /// `"/api/..."` claims `/api` and everything under it, `"/hook"` only `/hook` itself. Not under
    /// `/v1`, `/healthz` or `/metrics`. Two bundles claiming overlapping routes is a start-up error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
}

/// The path prefixes `hybox serve` keeps for itself.
const RESERVED_ROUTES: [&str; 3] = ["/v1", "/healthz", "/metrics"];

/// A granted outbound host in its one accepted form: `host:port`, the host lowercase (a name, an
/// IPv4 address or a bracketed IPv6 address), the port in 1..=65535.
pub fn check_authority(s: &str) -> Result<(), FieldError> {
    let bad = || FieldError::Authority(s.to_string());
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 || host.is_empty() || host != host.to_ascii_lowercase() {
        return Err(bad());
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        return Ok(());
    }
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_';
    if !host.chars().all(name_char) || host.starts_with('.') || host.ends_with('.') {
        return Err(bad());
    }
    Ok(())
}

/// A claimed route, parsed: `"/api/..."` is `Prefix("/api")`, `"/hook"` is `Exact("/hook")`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The path itself and everything under it (`/api`, `/api/`, `/api/x/y`); `Prefix("")` is the
    /// whole root (`"/..."`).
    Prefix(String),
    /// Only this path.
    Exact(String),
}

impl Route {
    /// Parses and checks a route as written in a policy.
    pub fn parse(s: &str) -> Result<Route, FieldError> {
        let bad = || FieldError::Route(s.to_string());
        if !s.starts_with('/') || s.contains(['?', '#', '*', '{', '}', '%']) || s.contains("//") {
            return Err(bad());
        }
        let route = match s.strip_suffix("/...") {
            Some(p) => Route::Prefix(p.to_string()),
            None if s.contains("...") || (s.len() > 1 && s.ends_with('/')) => return Err(bad()),
            None => Route::Exact(s.to_string()),
        };
        let path = route.path();
        if path.split('/').any(|seg| seg == "." || seg == "..") {
            return Err(bad());
        }
        let reserved = |r: &str| path == r || path.starts_with(&format!("{r}/"));
        if RESERVED_ROUTES.iter().any(|r| reserved(r)) || route == Route::Prefix(String::new()) {
            return Err(FieldError::ReservedRoute(s.to_string()));
        }
        Ok(route)
    }

    fn path(&self) -> &str {
        match self {
            Route::Prefix(p) | Route::Exact(p) => p,
        }
    }

    /// Whether a request path (as the client wrote it, without the query) is this route's.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Route::Exact(p) => path == p,
            Route::Prefix(p) => path == p || path.starts_with(&format!("{p}/")),
        }
    }

    /// The path the guest sees: under a prefix, what follows it (`/api/x` → `/x`, `/api` → `/`);
    /// an exact route's own path.
    pub fn rest<'a>(&self, path: &'a str) -> &'a str {
        match self {
            Route::Exact(_) => path,
            Route::Prefix(p) => match &path[p.len().min(path.len())..] {
                "" => "/",
                rest => rest,
            },
        }
    }

    /// Whether some request path would match both routes.
    pub fn overlaps(&self, other: &Route) -> bool {
        match (self, other) {
            (Route::Exact(a), Route::Exact(b)) => a == b,
            (Route::Prefix(_), Route::Exact(e)) => self.matches(e),
            (Route::Exact(e), Route::Prefix(_)) => other.matches(e),
            (Route::Prefix(_), Route::Prefix(b)) => self.matches(b) || other.matches(self.path()),
        }
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::Prefix(p) => write!(f, "{p}/..."),
            Route::Exact(p) => f.write_str(p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_are_host_port_exactly() {
        for ok in [
            "127.0.0.1:8080",
            "api.example.com:80",
            "[::1]:8080",
            "a-b_c:1",
        ] {
            assert_eq!(check_authority(ok), Ok(()), "{ok}");
        }
        for bad in [
            "127.0.0.1",
            "http://a:80",
            "a:0",
            "a:70000",
            ":80",
            "A.example:80",
            "a/b:80",
            "u@a:80",
            "[::1:80",
            "*.example.com:80",
            ".a:80",
        ] {
            assert!(check_authority(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn routes_parse_match_and_overlap() {
        let api = Route::parse("/api/...").unwrap();
        assert_eq!(api, Route::Prefix("/api".into()));
        assert!(api.matches("/api") && api.matches("/api/") && api.matches("/api/x/y"));
        assert!(!api.matches("/apix") && !api.matches("/"));
        assert_eq!(api.rest("/api/x?"), "/x?");
        assert_eq!(api.rest("/api"), "/");
        let hook = Route::parse("/hook").unwrap();
        assert!(hook.matches("/hook") && !hook.matches("/hook/x"));
        assert_eq!(hook.rest("/hook"), "/hook");
        let sub = Route::parse("/api/v2/...").unwrap();
        assert!(api.overlaps(&sub) && sub.overlaps(&api));
        assert!(api.overlaps(&Route::parse("/api/x").unwrap()));
        assert!(api.overlaps(&api.clone()));
        assert!(!api.overlaps(&Route::parse("/apix/...").unwrap()));
        assert!(!hook.overlaps(&Route::parse("/hooks").unwrap()));
        for bad in ["api", "/a/../b", "/a/", "/a...", "/a/*", "/a?x", "//a"] {
            assert!(
                matches!(Route::parse(bad), Err(FieldError::Route(_))),
                "{bad}"
            );
        }
        for reserved in [
            "/v1/...",
            "/v1/functions/x",
            "/healthz",
            "/metrics/...",
            "/...",
        ] {
            assert!(
                matches!(Route::parse(reserved), Err(FieldError::ReservedRoute(_))),
                "{reserved}"
            );
        }
        assert!(Route::parse("/v10/x").is_ok());
    }
}
