//! Faults with nothing lost: services restarted (SIGTERM) and killed (SIGKILL) mid-run, and
//! RabbitMQ, Redis and PostgreSQL stopped and started again, and nodes of a three-node RabbitMQ
//! cluster lost under load (`cluster`). These tests stop the machine's
//! shared services, so they run one at a time (a process-wide lock) in their own test binary,
//! which cargo runs after the others. `CHAOS_SCALE` (default 1) multiplies the load; `make
//! chaos` runs the long variants.

mod cluster;
mod faults;
mod lifecycle;
mod load;
