//! End-to-end tests against the real PostgreSQL, Redis and RabbitMQ on localhost.

mod acks;
mod at_rest;
mod batching;
mod broker_tls;
mod budgets;
mod consume_client;
mod dead_letters;
mod delivery_state;
mod egress;
mod interop;
mod isolation;
mod limits;
mod no_loss;
mod page;
mod pipeline;
mod publish_client;
mod rate_limits;
mod receivers;
mod reflection;
mod secrets;
mod telemetry;
mod validation;
