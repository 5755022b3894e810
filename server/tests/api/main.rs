//! Integration tests: the real server, in-process, against real PostgreSQL
//! and Redis. One binary, a module per feature.

mod accounts;
mod cache;
mod cluster;
mod contract;
mod external;
mod faults;
mod graphql;
mod helpers;
mod integrity;
mod revocation;
mod tasks;
