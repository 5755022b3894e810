//! The route table: (method, path template) -> route and the access it
//! needs, with the template kept as the metrics label. Path matching is
//! matchit's radix tree; this module adds methods (405 with `Allow` for a
//! known path; `HEAD` wherever `GET` is) and the per-route metric handles,
//! created once here.
//!
//! The access column is what the pipeline enforces (`app`): a handler never
//! authenticates by itself, it receives the principal the table asked for.

use crate::metrics::{Metrics, RouteMetrics};
use hyper::Method;
use std::sync::Arc;

/// What a route needs before anything of the request is looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No token.
    Public,
    /// A verified, unrevoked access token.
    User,
    /// The same, with the role admin (else 403).
    Admin,
}

/// Every route of API.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `POST /auth/register`
    Register,
    /// `POST /auth/login`
    Login,
    /// `POST /auth/refresh`
    Refresh,
    /// `POST /auth/logout`
    Logout,
    /// `POST /auth/logout-all`
    LogoutAll,
    /// `GET /me`
    Me,
    /// `GET /tasks`
    ListTasks,
    /// `POST /tasks`
    CreateTask,
    /// `GET /tasks/{id}`
    GetTask,
    /// `PATCH /tasks/{id}`
    UpdateTask,
    /// `DELETE /tasks/{id}`
    DeleteTask,
    /// `GET /admin/tasks`
    AdminTasks,
    /// `PATCH /admin/users/{id}/status`
    AdminUserStatus,
    /// `GET /healthz`
    Healthz,
    /// `GET /readyz`
    Readyz,
    /// `GET /metrics`
    Metrics,
    /// `GET /openapi.json`
    OpenApi,
    /// `POST /graphql`
    Graphql,
}

/// The table: method, template, route, access.
pub const ROUTES: &[(Method, &str, Route, Access)] = &[
    (Method::POST, "/auth/register", Route::Register, Access::Public),
    (Method::POST, "/auth/login", Route::Login, Access::Public),
    (Method::POST, "/auth/refresh", Route::Refresh, Access::Public),
    (Method::POST, "/auth/logout", Route::Logout, Access::User),
    (Method::POST, "/auth/logout-all", Route::LogoutAll, Access::User),
    (Method::GET, "/me", Route::Me, Access::User),
    (Method::GET, "/tasks", Route::ListTasks, Access::User),
    (Method::POST, "/tasks", Route::CreateTask, Access::User),
    (Method::GET, "/tasks/{id}", Route::GetTask, Access::User),
    (Method::PATCH, "/tasks/{id}", Route::UpdateTask, Access::User),
    (Method::DELETE, "/tasks/{id}", Route::DeleteTask, Access::User),
    (Method::GET, "/admin/tasks", Route::AdminTasks, Access::Admin),
    (Method::PATCH, "/admin/users/{id}/status", Route::AdminUserStatus, Access::Admin),
    (Method::GET, "/healthz", Route::Healthz, Access::Public),
    (Method::GET, "/readyz", Route::Readyz, Access::Public),
    (Method::GET, "/metrics", Route::Metrics, Access::Public),
    (Method::GET, "/openapi.json", Route::OpenApi, Access::Public),
    (Method::POST, "/graphql", Route::Graphql, Access::User),
];

/// One routed request's entry: what it is and what it needs.
pub struct Entry {
    /// The route.
    pub route: Route,
    /// The access it needs.
    pub access: Access,
    /// Its metric series (shared with a request that runs on as a job).
    pub metrics: Arc<RouteMetrics>,
}

struct PathEntry {
    allow: String,
    methods: Vec<(Method, Entry)>,
}

/// What a request matched.
pub enum Matched<'r, 'p> {
    /// A route and the `{id}` parameter if the template has one.
    Route(&'r Entry, Option<&'p str>),
    /// The path exists with other methods.
    MethodNotAllowed(&'r str),
    /// No such path.
    NotFound,
}

/// The compiled table.
pub struct Router {
    paths: matchit::Router<usize>,
    entries: Vec<PathEntry>,
}

impl Router {
    /// Builds the table and every route's metric handles.
    pub fn new(metrics: &Metrics) -> Self {
        let mut paths = matchit::Router::new();
        let mut entries: Vec<PathEntry> = Vec::new();
        let mut templates: Vec<&str> = Vec::new();
        // Every GET route also answers HEAD (hyper sends the head only).
        let heads = ROUTES.iter().filter(|r| r.0 == Method::GET).map(|(_, t, r, a)| (Method::HEAD, *t, *r, *a));
        let all: Vec<(Method, &'static str, Route, Access)> = ROUTES.iter().cloned().chain(heads).collect();
        for (method, template, route, access) in &all {
            let idx = match templates.iter().position(|t| t == template) {
                Some(i) => i,
                None => {
                    templates.push(template);
                    entries.push(PathEntry { allow: String::new(), methods: Vec::new() });
                    let i = entries.len() - 1;
                    paths
                        .insert(*template, i)
                        .unwrap_or_else(|e| panic!("route table is inconsistent at {template}: {e}"));
                    i
                }
            };
            let method_label: &'static str = match *method {
                Method::GET => "GET",
                Method::POST => "POST",
                Method::PATCH => "PATCH",
                Method::DELETE => "DELETE",
                Method::HEAD => "HEAD",
                _ => "OTHER",
            };
            let e = &mut entries[idx];
            let entry =
                Entry { route: *route, access: *access, metrics: Arc::new(metrics.route(method_label, template)) };
            e.methods.push((method.clone(), entry));
            if !e.allow.is_empty() {
                e.allow.push_str(", ");
            }
            e.allow.push_str(method.as_str());
        }
        Self { paths, entries }
    }

    /// Matches a request.
    pub fn find<'r, 'p>(&'r self, method: &Method, path: &'p str) -> Matched<'r, 'p> {
        let Ok(m) = self.paths.at(path) else {
            return Matched::NotFound;
        };
        let entry = &self.entries[*m.value];
        match entry.methods.iter().find(|(mm, _)| mm == method) {
            Some((_, e)) => Matched::Route(e, m.params.get("id")),
            None => Matched::MethodNotAllowed(&entry.allow),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_by_method_and_template() {
        let r = Router::new(&Metrics::new());
        let route = |m: &Method, p: &str| match r.find(m, p) {
            Matched::Route(e, id) => Some((e.route, e.access, id.map(str::to_owned))),
            _ => None,
        };
        assert_eq!(route(&Method::GET, "/tasks/12"), Some((Route::GetTask, Access::User, Some("12".into()))));
        assert_eq!(route(&Method::HEAD, "/tasks/12"), Some((Route::GetTask, Access::User, Some("12".into()))));
        assert_eq!(
            route(&Method::PATCH, "/admin/users/3/status"),
            Some((Route::AdminUserStatus, Access::Admin, Some("3".into())))
        );
        assert_eq!(route(&Method::POST, "/auth/login").map(|r| r.1), Some(Access::Public));
        assert!(matches!(r.find(&Method::PUT, "/tasks/1"), Matched::MethodNotAllowed("GET, PATCH, DELETE, HEAD")));
        assert!(matches!(r.find(&Method::GET, "/nope"), Matched::NotFound));
        assert!(matches!(r.find(&Method::GET, "/tasks/"), Matched::NotFound));
    }
}
