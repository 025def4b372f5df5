//! stapsteen: an SSH bastion for management networks.
#![forbid(unsafe_code)]

pub mod algorithms;
pub mod app;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod demo;
pub mod firewall;
pub mod frontdoor;
pub mod ids;
pub mod net;
pub mod offsite;
pub mod policy;
pub mod proxy;
pub mod recording;
pub mod seckey;
pub mod secrets;
pub mod serve;
pub mod softkey;
pub mod sync;
pub mod upstream;
