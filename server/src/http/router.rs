//! The route table: (method, path template) -> route, with the template kept
//! as the metrics label. Path matching is matchit's radix tree; this module
//! adds methods (405 with `Allow` for a known path) and the per-route
//! metric handles, created once here.

use crate::metrics::{Metrics, RouteMetrics};
use hyper::Method;

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
}

/// The table: method, template, route.
pub const ROUTES: &[(Method, &str, Route)] = &[
    (Method::POST, "/auth/register", Route::Register),
    (Method::POST, "/auth/login", Route::Login),
    (Method::POST, "/auth/refresh", Route::Refresh),
    (Method::POST, "/auth/logout", Route::Logout),
    (Method::POST, "/auth/logout-all", Route::LogoutAll),
    (Method::GET, "/me", Route::Me),
    (Method::GET, "/tasks", Route::ListTasks),
    (Method::POST, "/tasks", Route::CreateTask),
    (Method::GET, "/tasks/{id}", Route::GetTask),
    (Method::PATCH, "/tasks/{id}", Route::UpdateTask),
    (Method::DELETE, "/tasks/{id}", Route::DeleteTask),
    (Method::GET, "/admin/tasks", Route::AdminTasks),
    (Method::PATCH, "/admin/users/{id}/status", Route::AdminUserStatus),
    (Method::GET, "/healthz", Route::Healthz),
    (Method::GET, "/readyz", Route::Readyz),
    (Method::GET, "/metrics", Route::Metrics),
];

struct PathEntry {
    allow: String,
    methods: Vec<(Method, Route, RouteMetrics)>,
}

/// What a request matched.
pub enum Matched<'r, 'p> {
    /// A route, its metrics and the `{id}` parameter if the template has one.
    Route(Route, &'r RouteMetrics, Option<&'p str>),
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
        for (method, template, route) in ROUTES {
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
                _ => "OTHER",
            };
            let e = &mut entries[idx];
            e.methods.push((method.clone(), *route, metrics.route(method_label, template)));
            if !e.allow.is_empty() {
                e.allow.push_str(", ");
            }
            e.allow.push_str(method.as_str());
        }
        Self { paths, entries }
    }

    /// Matches a request. `HEAD` is not served (no route needs it).
    pub fn find<'r, 'p>(&'r self, method: &Method, path: &'p str) -> Matched<'r, 'p> {
        let Ok(m) = self.paths.at(path) else {
            return Matched::NotFound;
        };
        let entry = &self.entries[*m.value];
        match entry.methods.iter().find(|(mm, _, _)| mm == method) {
            Some((_, route, metrics)) => Matched::Route(*route, metrics, m.params.get("id")),
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
        assert!(matches!(r.find(&Method::GET, "/tasks/12"), Matched::Route(Route::GetTask, _, Some("12"))));
        assert!(matches!(
            r.find(&Method::PATCH, "/admin/users/3/status"),
            Matched::Route(Route::AdminUserStatus, _, Some("3"))
        ));
        assert!(matches!(r.find(&Method::PUT, "/tasks/1"), Matched::MethodNotAllowed("GET, PATCH, DELETE")));
        assert!(matches!(r.find(&Method::GET, "/nope"), Matched::NotFound));
        assert!(matches!(r.find(&Method::GET, "/tasks/"), Matched::NotFound));
    }
}
