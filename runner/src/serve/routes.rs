//! Routes that HTTP functions claim at the server's root (`http.route` in a bundle's policy:
//! `"/api/..."`, `"/hook"`), besides their `/v1/functions/{name}`. Claims are checked once, at
//! start-up: two that overlap (the same route, or one under the other's prefix) stop the server
//! with an error naming both bundles, as would a route on a function that is not an HTTP one. At
//! run time a request whose path no route claims is a 404. See `docs/serve.md`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::{error, AppState, ServeError};
use crate::function::Function;
use crate::policy::Route;

/// The claimed routes, each with its function's name.
pub(super) type Routes = Vec<(Route, String)>;

/// The routes `functions` claim, or why they cannot all be served.
pub(super) fn claimed(functions: &[Function]) -> Result<Routes, ServeError> {
    let mut routes: Routes = Vec::new();
    for f in functions {
        let Some(text) = &f.policy().http.route else {
            continue;
        };
        // Validated with the policy; a failure here would be a policy that skipped validation.
        let route = Route::parse(text).map_err(|e| ServeError::Route {
            function: f.name().to_string(),
            why: e.to_string(),
        })?;
        if f.http().is_none() {
            return Err(ServeError::Route {
                function: f.name().to_string(),
                why: format!(
                    "claims the route {route}, but only HTTP functions (wasi:http/proxy) have routes"
                ),
            });
        }
        if let Some((theirs, other)) = routes.iter().find(|(r, _)| r.overlaps(&route)) {
            return Err(ServeError::RouteClash {
                first: other.clone(),
                first_route: theirs.to_string(),
                second: f.name().to_string(),
                second_route: route.to_string(),
            });
        }
        routes.push((route, f.name().to_string()));
    }
    Ok(routes)
}

/// Every request no other route took: the function whose route claims its path, else 404.
pub(super) async fn routed(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let Some((route, name)) = state.routes.iter().find(|(r, _)| r.matches(&path)) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no function and no route for {path}"),
        );
    };
    let rest = route.rest(&path).to_string();
    super::http_fn::forward_to(state.clone(), name.clone(), req, &rest).await
}
