//! The OpenAPI 3.1 document of every REST route, served at
//! `GET /openapi.json` and kept in the repository as `docs/openapi.json`.
//!
//! Written by hand, but not beside the code: the paths, methods and
//! security come from the route table ([`ROUTES`]) itself, and each route's
//! operation from one exhaustive `match` on [`Route`], so a route cannot be
//! added without its operation (it does not compile) and the document cannot
//! list a route the server does not have. The schemas are strict
//! (`additionalProperties: false`, every field the server sends `required`),
//! so the property-based run against a live server (`scripts/api-fuzz.sh`,
//! schemathesis) fails when a field or status exists on one side only. A
//! unit test fails when `docs/openapi.json` is not this document.
//!
//! Why not derive it (utoipa): the statuses and headers of each route would
//! still be written by hand in attributes, the text constraints the server
//! applies after trimming need hand-written patterns either way, and the
//! request types would carry a second derive and a proc-macro dependency
//! for a document that changes when the contract does.

use crate::http::router::{Access, ROUTES, Route};
use hyper::Method;
use serde_json::{Map, Value, json};

/// Characters Rust's `str::trim` removes (Unicode `White_Space`), spelled
/// out for JSON Schema patterns: `\s` means a different set in ECMA-262,
/// Python and Rust.
const WS: &str = "\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";

/// A title as the server checks it: 1..200 characters after trimming
/// white space, no U+0000. Exact, so that neither valid titles are refused
/// nor invalid ones accepted by the document's reading.
pub fn title_pattern() -> String {
    format!("^[{WS}]*[^{WS}\\u0000]([^\\u0000]{{0,198}}[^{WS}\\u0000])?[{WS}]*$")
}

/// A due date's edge rule (`tasks::model`): not 0001-01-01 with a positive
/// offset nor 9999-12-31 with a negative one (`-00:00` is zero).
const DUE_PATTERN: &str = "^(?!0001-01-01[Tt][^+]*\\+(?!00:00)|9999-12-31[Tt][^-]*-(?!00:00))";

/// Any text without U+0000 (API.md: no text field accepts it).
const NO_NUL: &str = "^[^\\u0000]*$";

/// The document, built from the route table.
pub fn document() -> Value {
    let mut paths = Map::new();
    for (method, template, route, access) in ROUTES {
        let item = paths.entry(template.to_string()).or_insert_with(|| json!({}));
        let mut op = operation(*route);
        decorate(&mut op, method, template, *route, *access);
        if let Some(item) = item.as_object_mut() {
            item.insert(method.as_str().to_ascii_lowercase(), op);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Tollgate",
            "version": env!("CARGO_PKG_VERSION"),
            "summary": "JWT auth with instant revocation in front of a cached task API",
            "description": "Every GET route also answers HEAD (same status and headers, no body). \
                A method a path does not have is a 405 with Allow. Request bodies are JSON \
                (Content-Type: application/json, else 415), at most 64 KiB (else 413), and unknown \
                fields are a 400. Every error is RFC 9457 problem details. \
                See docs/API.md for the revocation and caching guarantees.",
            "license": {"name": "MIT OR Apache-2.0", "identifier": "MIT OR Apache-2.0"}
        },
        "tags": [
            {"name": "auth", "description": "Accounts, tokens and sessions"},
            {"name": "tasks", "description": "The caller's task list (cached, read-your-writes)"},
            {"name": "admin", "description": "Administrators only"},
            {"name": "graphql", "description": "The blog: posts and comments, a cached shared list"},
            {"name": "ops", "description": "Health, readiness, metrics and this document"}
        ],
        "paths": paths,
        "components": components(),
    })
}

/// The operation of one route: what is particular to it. What follows from
/// the route table (security, 401/403, the path id, 408) is added by
/// [`decorate`].
fn operation(route: Route) -> Value {
    let list_params = json!([
        {"name": "limit", "in": "query", "required": false,
         "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 50}},
        {"name": "offset", "in": "query", "required": false,
         "schema": {"type": "integer", "format": "int64", "minimum": 0, "maximum": i64::MAX, "default": 0}},
        {"name": "completed", "in": "query", "required": false, "schema": {"type": "boolean"}}
    ]);
    match route {
        Route::Register => json!({
            "tags": ["auth"], "summary": "Create an account (role user, status active)",
            "requestBody": body("Register"),
            "responses": {
                "201": ok("The account", "User"),
                "400": problem("Bad email (at most 254 characters) or password (8 to 128 characters)"),
                "409": problem("An account with this email exists (compared case-insensitively)"),
            }
        }),
        Route::Login => json!({
            "tags": ["auth"], "summary": "Log in: a new session and its token pair",
            "requestBody": body("Login"),
            "responses": {
                "200": ok("The token pair (Cache-Control: no-store)", "TokenPair"),
                "400": problem("Email (1 to 254 characters) or password (at most 128) out of bounds"),
                "401": challenge("Wrong email or password (one answer for both)"),
                "403": problem("The account is not active"),
                "429": retry("Too many failed logins for this account in the window"),
            }
        }),
        Route::Refresh => json!({
            "tags": ["auth"], "summary": "Rotate: a new token pair for a refresh token, which is consumed",
            "requestBody": body("Refresh"),
            "responses": {
                "200": ok("The new token pair (Cache-Control: no-store)", "TokenPair"),
                "400": problem("Malformed body"),
                "401": challenge("Expired, revoked, reused (the session ends) or issued before the user's last status change"),
            }
        }),
        Route::Logout => json!({
            "tags": ["auth"], "summary": "End this session: its access and refresh tokens stop working at once",
            "responses": {"204": {"description": "Ended"}}
        }),
        Route::LogoutAll => json!({
            "tags": ["auth"], "summary": "End every session of the user issued up to now",
            "responses": {"204": {"description": "Ended"}}
        }),
        Route::Me => json!({
            "tags": ["auth"], "summary": "The caller's account",
            "responses": {"200": ok("The account", "Me")}
        }),
        Route::ListTasks => json!({
            "tags": ["tasks"], "summary": "The caller's tasks, ordered by id (served from the cache)",
            "parameters": list_params,
            "responses": {
                "200": ok_list("The page of tasks"),
                "400": problem("A query parameter is out of bounds, repeated or unknown"),
            }
        }),
        Route::CreateTask => json!({
            "tags": ["tasks"], "summary": "Create a task",
            "requestBody": body("NewTask"),
            "responses": {
                "201": {
                    "description": "The task",
                    "headers": {"Location": {"description": "/tasks/{id} of the new task",
                        "required": true, "schema": {"type": "string"}}},
                    "content": {"application/json": {"schema": schema_ref("Task")}}
                },
                "400": problem("Invalid fields (see errors)"),
            }
        }),
        Route::GetTask => json!({
            "tags": ["tasks"], "summary": "One of the caller's tasks",
            "responses": {"200": ok("The task", "Task"), "404": problem("No such task of the caller")}
        }),
        Route::UpdateTask => json!({
            "tags": ["tasks"], "summary": "Change some fields of a task (null clears description or dueDate)",
            "requestBody": body("TaskPatch"),
            "responses": {
                "200": ok("The task", "Task"),
                "400": problem("Empty patch or invalid fields (see errors)"),
                "404": problem("No such task of the caller"),
            }
        }),
        Route::DeleteTask => json!({
            "tags": ["tasks"], "summary": "Delete a task",
            "responses": {"204": {"description": "Deleted"}, "404": problem("No such task of the caller")}
        }),
        Route::AdminTasks => json!({
            "tags": ["admin"], "summary": "Every user's tasks, ordered by id",
            "parameters": list_params,
            "responses": {
                "200": ok_list("The page of tasks"),
                "400": problem("A query parameter is out of bounds, repeated or unknown"),
            }
        }),
        Route::AdminUserStatus => json!({
            "tags": ["admin"],
            "summary": "Set a user's status; any change revokes every token issued before it",
            "requestBody": body("StatusChange"),
            "responses": {
                "200": ok("The new status", "StatusChanged"),
                "400": problem("Unknown status"),
                "404": problem("No such user"),
            }
        }),
        Route::Healthz => json!({
            "tags": ["ops"], "summary": "Liveness: 200 while the process serves",
            "responses": {"200": ok("Serving", "Health")}
        }),
        Route::Readyz => json!({
            "tags": ["ops"], "summary": "Readiness and each dependency's state (Redis down is reported, not fatal)",
            "responses": {
                "200": ok("Ready", "Ready"),
                "503": ok("PostgreSQL is unreachable", "Ready"),
            }
        }),
        Route::Metrics => json!({
            "tags": ["ops"], "summary": "Prometheus text exposition",
            "responses": {"200": {"description": "The metrics",
                "content": {"text/plain": {"schema": {"type": "string"}}}}}
        }),
        Route::Graphql => json!({
            "tags": ["graphql"],
            "summary": "The blog API over GraphQL (posts and comments); the schema is in docs/schema.graphql",
            "requestBody": body("GraphqlRequest"),
            "responses": {
                "200": {"description": "Executed: data, and errors of fields that failed",
                    "content": {
                        "application/json": {"schema": schema_ref("GraphqlResponse")},
                        "application/graphql-response+json": {"schema": schema_ref("GraphqlResponse")}
                    }},
                "400": {"description": "Not a GraphQL request, or a document that does not parse or validate \
                        (variables included), or is too deep or too costly (nothing was executed)",
                    "content": {
                        "application/json": {"schema": schema_ref("GraphqlErrors")},
                        "application/graphql-response+json": {"schema": schema_ref("GraphqlErrors")}
                    }},
            }
        }),
        Route::OpenApi => json!({
            "tags": ["ops"], "summary": "This document",
            "responses": {"200": {"description": "OpenAPI 3.1",
                "content": {"application/json": {"schema": {"type": "object"}}}}}
        }),
    }
}

/// What every operation gets from the route table: its id, the bearer
/// scheme and its 401 (and 403 for admin routes), the path id, 408 for
/// routes that run as jobs, 413/415 for bodies, and 503 wherever
/// PostgreSQL may be needed.
fn decorate(op: &mut Value, method: &Method, template: &str, route: Route, access: Access) {
    let Some(o) = op.as_object_mut() else { return };
    o.insert("operationId".into(), json!(operation_id(route)));
    match access {
        Access::Public => {
            o.insert("security".into(), json!([]));
        }
        Access::User | Access::Admin => {
            o.insert("security".into(), json!([{"bearerAuth": []}]));
        }
    }
    if template.contains("{id}") {
        let p = json!({"name": "id", "in": "path", "required": true,
            "description": "A positive id; anything else names nothing (404)",
            "schema": {"type": "integer", "format": "int64", "minimum": 1}});
        match o.get_mut("parameters").and_then(Value::as_array_mut) {
            Some(ps) => ps.insert(0, p),
            None => {
                o.insert("parameters".into(), json!([p]));
            }
        }
    }
    let has_body = o.contains_key("requestBody");
    let Some(responses) = o.get_mut("responses").and_then(Value::as_object_mut) else { return };
    let mut add = |status: &str, v: Value| {
        responses.entry(status.to_owned()).or_insert(v);
    };
    if access != Access::Public {
        add("401", challenge("No bearer token, or one that is invalid, expired or revoked"));
    }
    if access == Access::Admin {
        add("403", problem("The caller is not an administrator"));
    }
    if has_body {
        add("400", problem("Malformed body, unknown field, or a field of the wrong type (see errors)"));
        add("413", problem("The body exceeds 64 KiB"));
        add("415", problem("The body is not Content-Type: application/json"));
    }
    if method != Method::GET {
        add("408", problem("The request was not completed within the request timeout (it still completes)"));
    }
    if !matches!(route, Route::Healthz | Route::Metrics | Route::OpenApi | Route::Readyz) {
        add("503", retry("PostgreSQL (or the password hashing pool) is unavailable; retry"));
    }
}

/// `ListTasks` -> `listTasks`.
fn operation_id(route: Route) -> String {
    let name = format!("{route:?}");
    let mut chars = name.chars();
    chars.next().map(|c| c.to_ascii_lowercase().to_string() + chars.as_str()).unwrap_or_default()
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn body(schema: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema_ref(schema)}}})
}

fn ok(description: &str, schema: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema_ref(schema)}}})
}

fn ok_list(description: &str) -> Value {
    json!({"description": description,
        "content": {"application/json": {"schema": {"type": "array", "items": schema_ref("Task")}}}})
}

fn problem(description: &str) -> Value {
    json!({"description": description, "content": {"application/problem+json": {"schema": schema_ref("Problem")}}})
}

fn challenge(description: &str) -> Value {
    json!({"description": description,
        "headers": {"WWW-Authenticate": {"$ref": "#/components/headers/WWW-Authenticate"}},
        "content": {"application/problem+json": {"schema": schema_ref("Problem")}}})
}

fn retry(description: &str) -> Value {
    json!({"description": description,
        "headers": {"Retry-After": {"$ref": "#/components/headers/Retry-After"}},
        "content": {"application/problem+json": {"schema": schema_ref("Problem")}}})
}

/// The schemas of `POST /graphql`'s bodies (a separate `json!`: one
/// macro call for every schema exceeds its recursion limit).
fn graphql_schemas() -> Value {
    json!({
            "GraphqlRequest": {
                "type": "object", "additionalProperties": false, "required": ["query"],
                "properties": {
                    "query": {"type": "string"},
                    "variables": {"type": ["object", "null"]},
                    "operationName": {"type": ["string", "null"]},
                    "extensions": {"type": ["object", "null"]}
                }
            },
            "GraphqlError": {
                "type": "object", "required": ["message", "extensions"],
                "properties": {
                    "message": {"type": "string"},
                    "locations": {"type": "array"},
                    "path": {"type": "array"},
                    "extensions": {"type": "object", "required": ["code"], "properties": {
                        "code": {"type": "string", "enum": ["BAD_USER_INPUT", "NOT_FOUND", "FORBIDDEN",
                            "QUERY_TOO_COMPLEX", "GRAPHQL_PARSE_FAILED", "GRAPHQL_VALIDATION_FAILED",
                            "BAD_REQUEST", "INTERNAL_SERVER_ERROR"]},
                        "field": {"type": "string"}
                    }}
                }
            },
            "GraphqlResponse": {
                "type": "object", "additionalProperties": false, "required": ["data"],
                "properties": {
                    "data": {"type": ["object", "null"]},
                    "errors": {"type": "array", "items": schema_ref("GraphqlError")}
                }
            },
            "GraphqlErrors": {
                "type": "object", "additionalProperties": false, "required": ["errors"],
                "properties": {"errors": {"type": "array", "minItems": 1, "items": schema_ref("GraphqlError")}}
            }
    })
}

fn components() -> Value {
    let time = json!({"type": "string", "format": "date-time", "description": "RFC 3339, UTC"});
    let status = json!({"type": "string", "enum": ["active", "banned", "deactivated", "security_issue"]});
    let role = json!({"type": "string", "enum": ["user", "admin"]});
    let due = json!({"type": ["string", "null"], "format": "date-time", "pattern": DUE_PATTERN,
        "description": "RFC 3339. It must stay within the years 0001 to 9999 in UTC, so 0001-01-01 \
            with a positive offset and 9999-12-31 with a negative one are refused"});
    let description = json!({"type": ["string", "null"], "maxLength": 2000, "pattern": NO_NUL});
    let title = json!({"type": "string", "pattern": title_pattern(),
        "description": "1 to 200 characters after trimming white space; stored trimmed"});
    let mut c = json!({
        "securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "The access_token of a login or refresh answer"}
        },
        "headers": {
            "WWW-Authenticate": {"required": true, "schema": {"type": "string"},
                "description": "Bearer (RFC 6750), with error=\"invalid_token\" when a token was presented and refused"},
            "Retry-After": {"required": true, "schema": {"type": "integer", "minimum": 0},
                "description": "Seconds until a retry may succeed"}
        },
        "schemas": {
            "Problem": {
                "type": "object", "additionalProperties": false,
                "description": "RFC 9457 problem details",
                "required": ["type", "title", "status", "detail"],
                "properties": {
                    "type": {"type": "string"},
                    "title": {"type": "string"},
                    "status": {"type": "integer", "minimum": 400, "maximum": 599},
                    "detail": {"type": "string"},
                    "errors": {"type": "array", "items": schema_ref("FieldError")}
                }
            },
            "FieldError": {
                "type": "object", "additionalProperties": false, "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}}
            },
            "Register": {
                "type": "object", "additionalProperties": false, "required": ["email", "password"],
                "properties": {
                    "email": {"type": "string", "format": "email", "maxLength": 254},
                    "password": {"type": "string", "minLength": 8, "maxLength": 128, "pattern": NO_NUL}
                }
            },
            "Login": {
                "type": "object", "additionalProperties": false, "required": ["email", "password"],
                "properties": {
                    "email": {"type": "string", "minLength": 1, "maxLength": 254, "pattern": NO_NUL},
                    "password": {"type": "string", "maxLength": 128, "pattern": NO_NUL}
                }
            },
            "Refresh": {
                "type": "object", "additionalProperties": false, "required": ["refresh_token"],
                "properties": {"refresh_token": {"type": "string"}}
            },
            "TokenPair": {
                "type": "object", "additionalProperties": false,
                "required": ["access_token", "refresh_token", "token_type", "expires_in"],
                "properties": {
                    "access_token": {"type": "string"},
                    "refresh_token": {"type": "string"},
                    "token_type": {"const": "Bearer"},
                    "expires_in": {"type": "integer", "minimum": 0, "description": "Access token lifetime, seconds"}
                }
            },
            "User": {
                "type": "object", "additionalProperties": false,
                "required": ["id", "email", "role", "status", "createdAt"],
                "properties": {
                    "id": {"type": "integer", "format": "int64"},
                    "email": {"type": "string"},
                    "role": role, "status": status, "createdAt": time
                }
            },
            "Me": {
                "type": "object", "additionalProperties": false,
                "required": ["id", "email", "role", "status", "createdAt", "statusUpdatedAt"],
                "properties": {
                    "id": {"type": "integer", "format": "int64"},
                    "email": {"type": ["string", "null"],
                        "description": "null for a user of an external identity provider whose token had no email"},
                    "role": role, "status": status, "createdAt": time, "statusUpdatedAt": time,
                    "issuer": {"type": "string", "description": "external users only: the identity provider (`iss`)"},
                    "subject": {"type": "string", "description": "external users only: `sub` at that provider"}
                }
            },
            "StatusChange": {
                "type": "object", "additionalProperties": false, "required": ["status"],
                "properties": {"status": status}
            },
            "StatusChanged": {
                "type": "object", "additionalProperties": false, "required": ["id", "status", "statusUpdatedAt"],
                "properties": {"id": {"type": "integer", "format": "int64"}, "status": status, "statusUpdatedAt": time}
            },
            "Task": {
                "type": "object", "additionalProperties": false,
                "required": ["id", "userId", "title", "description", "isCompleted", "dueDate", "createdAt", "updatedAt"],
                "properties": {
                    "id": {"type": "integer", "format": "int64"},
                    "userId": {"type": "integer", "format": "int64"},
                    "title": {"type": "string"},
                    "description": {"type": ["string", "null"]},
                    "isCompleted": {"type": "boolean"},
                    "dueDate": {"type": ["string", "null"], "format": "date-time"},
                    "createdAt": time, "updatedAt": time
                }
            },
            "NewTask": {
                "type": "object", "additionalProperties": false, "required": ["title"],
                "properties": {"title": title, "description": description, "dueDate": due}
            },
            "TaskPatch": {
                "type": "object", "additionalProperties": false, "minProperties": 1,
                "description": "Absent fields are unchanged; null clears description or dueDate",
                "properties": {
                    "title": title, "description": description,
                    "isCompleted": {"type": "boolean"}, "dueDate": due
                }
            },
            "Health": {
                "type": "object", "additionalProperties": false, "required": ["status"],
                "properties": {"status": {"const": "ok"}}
            },
            "Ready": {
                "type": "object", "additionalProperties": false,
                "required": ["status", "postgres", "redis", "redisTrust"],
                "properties": {
                    "status": {"type": "string", "enum": ["ready", "unavailable"]},
                    "postgres": {"type": "string", "enum": ["up", "down"]},
                    "redis": {"type": "string", "enum": ["up", "down"]},
                    "redisTrust": {
                        "type": "object", "additionalProperties": false,
                        "description": "Whether Redis's configuration lets it answer revocation checks, and why not",
                        "required": ["trusted", "reasons", "warnings", "checked"],
                        "properties": {
                            "trusted": {"type": "boolean"},
                            "reasons": {"type": "array", "items": {"type": "string"}},
                            "warnings": {"type": "array", "items": {"type": "string"}},
                            "checked": {"type": "boolean"}
                        }
                    }
                }
            }
        }
    });
    if let (Some(all), Value::Object(more)) = (c["schemas"].as_object_mut(), graphql_schemas()) {
        all.extend(more);
    }
    c
}

/// The document as served: pretty-printed, as in `docs/openapi.json`.
pub fn render() -> String {
    let mut s = serde_json::to_string_pretty(&document()).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_one_operation_and_nothing_else_is() {
        let doc = document();
        let mut documented = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                documented.push((method.to_ascii_uppercase(), path.clone()));
            }
        }
        let mut table: Vec<(String, String)> = ROUTES.iter().map(|r| (r.0.to_string(), r.1.to_owned())).collect();
        documented.sort();
        table.sort();
        assert_eq!(documented, table);
    }

    #[test]
    fn authenticated_operations_declare_the_bearer_scheme_and_its_401() {
        let doc = document();
        for (method, template, route, access) in ROUTES {
            let op = &doc["paths"][*template][method.as_str().to_ascii_lowercase()];
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            assert_eq!(secured, *access != Access::Public, "{method} {template}");
            if secured {
                let challenge = &op["responses"]["401"]["headers"]["WWW-Authenticate"];
                assert!(challenge.is_object(), "{method} {template}: 401 with WWW-Authenticate");
            }
            assert_eq!(op["responses"].get("403").is_some(), *access == Access::Admin || *route == Route::Login);
        }
    }

    #[test]
    fn docs_openapi_json_is_this_document() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
        let kept = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            kept == render(),
            "docs/openapi.json is not the served document; regenerate it: \
             cargo run -q -p tollgate -- --openapi > docs/openapi.json"
        );
    }
}
