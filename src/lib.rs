//! chom: a Kubernetes-style operator for a fleet of Linux servers, driven by a directory
//! of YAML resources. The library holds all logic; `main.rs` only parses the command
//! line and maps errors to exit codes.

pub mod atomic;
pub mod audit;
pub mod cli;
pub mod component;
pub mod controller;
pub mod daemon;
pub mod desired;
pub mod detect;
pub mod diag;
pub mod facts;
pub mod fsread;
pub mod hardware;
pub mod history;
pub mod ids;
pub mod import_legacy;
pub mod inventory;
pub mod judge;
pub mod metrics;
pub mod pin;
pub mod progress;
pub mod queue;
pub mod reconcile;
pub mod resource;
pub mod schema;
pub mod secrets;
pub mod selector;
pub mod shard;
pub mod source;
pub mod ssh;
pub mod status;
pub mod suggest;
pub mod systemd;
pub mod time;
pub mod treeconfig;
pub mod validate;
pub mod watch;
