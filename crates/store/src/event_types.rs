//! Event types a tenant documents for its customers: name, description, an optional group for
//! pages that list them under headings, and an archived flag.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{Error, Result, Store};

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct EventType {
    pub name: String,
    pub description: String,
    #[sqlx(rename = "group_name")]
    pub group: String,
    pub archived: bool,
    pub created_at: DateTime<Utc>,
}

/// Changes to an event type; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct EventTypeChanges {
    pub description: Option<String>,
    pub group: Option<String>,
    pub archived: Option<bool>,
}

const COLUMNS: &str = "name, description, group_name, archived, created_at";

impl Store {
    pub async fn create_event_type(
        &self,
        tenant_id: Uuid,
        name: &str,
        description: &str,
        group: &str,
    ) -> Result<EventType> {
        let sql = format!(
            "INSERT INTO event_types (tenant_id, name, description, group_name) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id, name) DO NOTHING
             RETURNING {COLUMNS}"
        );
        sqlx::query_as::<_, EventType>(sqlx::AssertSqlSafe(sql))
            .bind(tenant_id)
            .bind(name)
            .bind(description)
            .bind(group)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::Conflict(format!("event type {name:?} already exists")))
    }

    pub async fn update_event_type(
        &self,
        tenant_id: Uuid,
        name: &str,
        c: &EventTypeChanges,
    ) -> Result<EventType> {
        let sql = format!(
            "UPDATE event_types SET description = COALESCE($3, description),
                 group_name = COALESCE($4, group_name), archived = COALESCE($5, archived)
             WHERE tenant_id = $1 AND name = $2
             RETURNING {COLUMNS}"
        );
        sqlx::query_as::<_, EventType>(sqlx::AssertSqlSafe(sql))
            .bind(tenant_id)
            .bind(name)
            .bind(c.description.as_deref())
            .bind(c.group.as_deref())
            .bind(c.archived)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(Error::NotFound("event type"))
    }

    /// A tenant's event types by name; archived ones only when asked, one group when given.
    pub async fn list_event_types(
        &self,
        tenant_id: Uuid,
        include_archived: bool,
        group: Option<&str>,
    ) -> Result<Vec<EventType>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM event_types
             WHERE tenant_id = $1 AND ($2 OR NOT archived) AND ($3::text IS NULL OR group_name = $3)
             ORDER BY group_name, name"
        );
        Ok(sqlx::query_as::<_, EventType>(sqlx::AssertSqlSafe(sql))
            .bind(tenant_id)
            .bind(include_archived)
            .bind(group)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Whether a tenant has a live (not archived) event type of this name.
    pub async fn event_type_known(&self, tenant_id: Uuid, name: &str) -> Result<bool> {
        Ok(sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM event_types
                 WHERE tenant_id = $1 AND name = $2 AND NOT archived)",
        )
        .bind(tenant_id)
        .bind(name)
        .fetch_one(&self.pool)
        .await?)
    }
}
