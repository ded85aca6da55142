//! Event types a tenant documents for its customers: name, description, an optional group for
//! pages that list them under headings, and an archived flag.
//!
//! A tenant holds at most a configured number of them (the subscription index of a tenant that
//! refuses unknown types loads them all), and lists read them a page at a time, in
//! (group, name) order.

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

/// Where a page of event types starts: just after this group and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventTypePosition {
    pub group: String,
    pub name: String,
}

impl Store {
    /// Creates an event type unless the name is taken (`Error::Conflict`) or the tenant
    /// already has `max` of them, archived ones included (`Error::Limit`). The tenant's row is
    /// locked for the count and the insert, so concurrent creations cannot both pass the limit.
    pub async fn create_event_type(
        &self,
        tenant_id: Uuid,
        name: &str,
        description: &str,
        group: &str,
        max: i64,
    ) -> Result<EventType> {
        let mut tx = self.pool.begin().await?;
        let locked: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE")
                .bind(tenant_id)
                .fetch_optional(&mut *tx)
                .await?;
        if locked.is_none() {
            return Err(Error::NotFound("tenant"));
        }
        let (count, taken): (i64, bool) = sqlx::query_as(
            "SELECT count(*), COALESCE(bool_or(name = $2), false) FROM event_types
             WHERE tenant_id = $1",
        )
        .bind(tenant_id)
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
        if taken {
            return Err(Error::Conflict(format!(
                "event type {name:?} already exists"
            )));
        }
        if count >= max {
            return Err(Error::Limit(format!(
                "tenant has {count} event types (archived ones count too); the limit is {max} (HERALD_MAX_EVENT_TYPES_PER_TENANT)"
            )));
        }
        let sql = format!(
            "INSERT INTO event_types (tenant_id, name, description, group_name) VALUES ($1, $2, $3, $4)
             RETURNING {COLUMNS}"
        );
        let created = sqlx::query_as::<_, EventType>(sqlx::AssertSqlSafe(sql))
            .bind(tenant_id)
            .bind(name)
            .bind(description)
            .bind(group)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(created)
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

    /// All of a tenant's event types (at most its limit) by group and name; archived ones only
    /// when asked, one group when given.
    pub async fn list_event_types(
        &self,
        tenant_id: Uuid,
        include_archived: bool,
        group: Option<&str>,
    ) -> Result<Vec<EventType>> {
        self.event_types_page(tenant_id, include_archived, group, None, None)
            .await
    }

    /// As [`Store::list_event_types`], at most `limit` of them, starting after `after`.
    pub async fn event_types_page(
        &self,
        tenant_id: Uuid,
        include_archived: bool,
        group: Option<&str>,
        after: Option<&EventTypePosition>,
        limit: Option<u32>,
    ) -> Result<Vec<EventType>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM event_types
             WHERE tenant_id = $1 AND ($2 OR NOT archived) AND ($3::text IS NULL OR group_name = $3)
               AND ($4::text IS NULL OR (group_name, name) > ($4, $5))
             ORDER BY group_name, name LIMIT $6"
        );
        Ok(sqlx::query_as::<_, EventType>(sqlx::AssertSqlSafe(sql))
            .bind(tenant_id)
            .bind(include_archived)
            .bind(group)
            .bind(after.map(|p| p.group.as_str()))
            .bind(after.map(|p| p.name.as_str()))
            .bind(limit.map(i64::from))
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
