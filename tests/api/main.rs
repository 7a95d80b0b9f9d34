//! Black-box tests: a real server on port 0 over SQLite and over the real
//! Postgres on 127.0.0.1:5432, spoken to over HTTP.

// The app's start-up future (tracing, SLO reporting, the contract checker
// around it) is deeper than rustc's default layout query limit allows.
#![recursion_limit = "256"]

mod contract;
mod helpers;

mod ab;
mod abuse;
mod auth;
mod bad_input;
mod console;
mod crash;
mod drift;
mod evaluation;
mod failover;
mod health;
mod inference;
mod ingest;
mod lake;
mod leases;
mod lifecycle;
mod models;
mod open_sessions;
mod replay;
mod replication;
mod retention;
mod retrain;
mod roles;
mod rolling;
mod segment;
mod stream;
mod stream_redis;
mod timezone;
mod traces;
mod train_from_db;
