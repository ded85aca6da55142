//! One module per command group: its clap definitions beside the handlers that run them, so a
//! command's flags, help text and behaviour are read in one file.

pub mod dead_letters;
pub mod deliveries;
pub mod endpoints;
pub mod event_types;
pub mod keys;
pub mod listen;
pub mod portal;
pub mod publish;
pub mod queues;
pub mod replay;
pub mod tenants;
pub mod verify;
