//! gatehouse: one hardened TLS webhook server for kube-apiserver.
//!
//! A request reads top to bottom through these modules:
//! [`listener`] (accept) → [`tls`] → [`stack`] (tower layers) → [`router`] → [`handlers`]
//! → [`review`] (decode) → [`policy`] or [`mutation`] (decide) → [`review`] (encode).

pub mod apiserver_config;
pub mod app;
pub mod authn;
pub mod cache;
pub mod certs;
pub mod check;
pub mod cli;
pub mod config;
pub mod config_error;
pub mod decimal;
pub mod error;
pub mod files;
pub mod gatekeeper;
pub mod handlers;
pub mod labels;
pub mod listener;
pub mod logging;
pub mod matching;
pub mod metrics;
pub mod mutation;
pub mod outcome;
pub mod pki;
pub mod policy;
pub mod reference;
pub mod reload;
pub mod review;
pub mod router;
pub mod server;
pub mod stack;
pub mod tls;
pub mod units;
pub mod verify;
pub mod yaml;
