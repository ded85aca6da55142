//! End-to-end tests against the real PostgreSQL, Redis and RabbitMQ on localhost.
//!
//! The "Webhooks" page is tested per behaviour (`test_sends`, `secret_rotation`,
//! `endpoint_cards`, `payload_filters`, `event_types`, `tenants`, `resends`, `endpoint_rate`,
//! `auto_disable`, `retry_after`, `retention`, `analytics`), with what they share in `page`; its
//! face, the portal and the operator console, in headless Chromium (`portal_browser`,
//! `console_browser`).

mod acks;
mod analytics;
mod at_rest;
mod auto_disable;
mod batching;
mod broker;
mod broker_tls;
mod budgets;
mod console_browser;
mod dead_letters;
mod delivery_state;
mod egress;
mod endpoint_cards;
mod endpoint_rate;
mod event_types;
mod interop;
mod isolation;
mod limits;
mod no_loss;
mod operations;
mod page;
mod partitions;
mod payload_filters;
mod pipeline;
mod portal_browser;
mod portal_sessions;
mod rate_limits;
mod receivers;
mod reflection;
mod resends;
mod retention;
mod retry_after;
mod scopes;
mod secret_rotation;
mod secrets;
mod stats_series;
mod telemetry;
mod tenants;
mod test_sends;
mod troubled_tenants;
mod validation;
