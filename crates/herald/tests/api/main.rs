//! Herald's integration tests: real HTTP over loopback, a real SQLite
//! database per test, a scripted receiver.

#![allow(dead_code)]

mod activity;
mod alerts;
mod browser;
mod cli;
mod crash;
mod delivery;
mod examples;
mod helpers;
mod hostile;
mod inspector;
mod isolation;
mod network;
mod observability;
mod openapi;
mod operations;
mod portal;
mod receiver_crate;
mod scale_out;
mod shaping;
mod svix_sdk;
mod tenants;
mod validation;
