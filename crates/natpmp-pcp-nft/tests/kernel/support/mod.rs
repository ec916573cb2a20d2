//! What the kernel tests share: namespaces to run in, element builders, hosts with traffic.
#![allow(dead_code)]

pub mod elements;
pub mod lab;
pub mod netns;
