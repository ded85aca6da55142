//! Event types a tenant documents for its customers (name and description).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{Error, Result, Store};

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct EventType {
    pub name: String,
    pub description: String,
    pub archived: bool,
    pub created_at: DateTime<Utc>,
}

impl Store {
    pub async fn create_event_type(
        &self,
        tenant_id: Uuid,
        name: &str,
        description: &str,
    ) -> Result<EventType> {
        sqlx::query_as::<_, EventType>(
            "INSERT INTO event_types (tenant_id, name, description) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id, name) DO NOTHING
             RETURNING name, description, archived, created_at",
        )
        .bind(tenant_id)
        .bind(name)
        .bind(description)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::Conflict(format!("event type {name:?} already exists")))
    }

    pub async fn list_event_types(&self, tenant_id: Uuid) -> Result<Vec<EventType>> {
        Ok(sqlx::query_as::<_, EventType>(
            "SELECT name, description, archived, created_at FROM event_types
             WHERE tenant_id = $1 ORDER BY name",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?)
    }
}
