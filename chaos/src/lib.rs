//! quiver-chaos: proves a quiver cluster keeps serving correct data through failures.
//!
//! A run starts a real cluster ([`cluster`]: a Tansu broker and `quiver-node` processes,
//! each in its own network namespace, [`network`]), drives a workload that records what
//! it wrote and saw ([`workload`], [`history`]), injects faults on a seeded schedule
//! ([`nemesis`]), heals, checks the invariants on the record ([`checker`]), reads the broker's log back
//! ([`audit`]) and writes a
//! report ([`report`]). [`run`] ties it together; the `quiver-chaos` binary is its CLI.

pub mod aggregates;
pub mod audit;
pub mod checker;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod network;
pub mod probe;
pub mod report;
pub mod rng;
pub mod run;
pub mod workload;
