//! Moving stored endpoint secrets to the current `HERALD_SECRET_KEY` key: the second half of a
//! main-key rotation (and how a deployment that started without a key encrypts what it has).
//!
//! Rows are re-sealed in small transactions with `FOR UPDATE`, so a concurrent secret rotation
//! or endpoint update waits for the batch instead of being overwritten, and an interrupted run
//! can simply be started again: it only touches rows not yet under the current key.

use herald_core::secretbox::Sealed;
use uuid::Uuid;

use crate::{Error, Result, Store};

/// What a re-encryption run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReencryptReport {
    /// Endpoints whose secret columns were re-sealed under the current key.
    pub endpoints: u64,
    /// Secret columns re-sealed (an endpoint mid-rotation has two).
    pub secrets: u64,
}

/// How many stored secrets (current and previous) each key id seals; `None`: in clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretKeyCount {
    pub key_id: Option<String>,
    pub secrets: i64,
}

#[derive(sqlx::FromRow)]
struct SecretRow {
    id: Uuid,
    secret: String,
    secret_key_id: Option<String>,
    previous_secret: Option<String>,
    previous_secret_key_id: Option<String>,
}

const BATCH: i64 = 200;

impl Store {
    /// Stored secrets per key id, for `herald-ingest secrets status`.
    pub async fn secret_key_counts(&self) -> Result<Vec<SecretKeyCount>> {
        let rows: Vec<(Option<String>, i64)> = sqlx::query_as(
            "SELECT key_id, count(*) FROM (
                 SELECT secret_key_id AS key_id FROM endpoints
                 UNION ALL
                 SELECT previous_secret_key_id FROM endpoints WHERE previous_secret IS NOT NULL
             ) s GROUP BY key_id ORDER BY key_id NULLS FIRST",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(key_id, secrets)| SecretKeyCount { key_id, secrets })
            .collect())
    }

    /// Re-seals every secret not under the current key with the current key.
    pub async fn reencrypt_secrets(&self) -> Result<ReencryptReport> {
        let Some(current) = self.keys.current_id().map(str::to_owned) else {
            return Err(Error::Invalid(
                "HERALD_SECRET_KEY is not set: there is no key to encrypt with".into(),
            ));
        };
        let mut report = ReencryptReport::default();
        let mut after = Uuid::nil();
        loop {
            let mut tx = self.pool.begin().await?;
            let rows: Vec<SecretRow> = sqlx::query_as(
                "SELECT id, secret, secret_key_id, previous_secret, previous_secret_key_id
                 FROM endpoints
                 WHERE id > $1
                   AND (secret_key_id IS DISTINCT FROM $2
                        OR (previous_secret IS NOT NULL
                            AND previous_secret_key_id IS DISTINCT FROM $2))
                 ORDER BY id LIMIT $3 FOR UPDATE",
            )
            .bind(after)
            .bind(&current)
            .bind(BATCH)
            .fetch_all(&mut *tx)
            .await?;
            let Some(last) = rows.last() else { break };
            after = last.id;
            for row in rows {
                let row_id = row.id.as_bytes();
                let reseal = |key_id: Option<String>, text: String| -> Result<(Sealed, bool)> {
                    let sealed = Sealed { key_id, text };
                    if self.keys.is_current(&sealed) {
                        return Ok((sealed, false));
                    }
                    let secret = self.keys.open(&sealed, row_id).map_err(|e| {
                        Error::Invalid(format!("endpoint {}: {e}", Uuid::from_bytes(*row_id)))
                    })?;
                    Ok((self.keys.seal(&secret, row_id), true))
                };
                let (secret, changed) = reseal(row.secret_key_id, row.secret)?;
                let (previous, previous_changed) = match row.previous_secret {
                    Some(text) => {
                        let (s, c) = reseal(row.previous_secret_key_id, text)?;
                        (Some(s), c)
                    }
                    None => (None, false),
                };
                sqlx::query(
                    "UPDATE endpoints SET secret = $2, secret_key_id = $3,
                         previous_secret = $4, previous_secret_key_id = $5
                     WHERE id = $1",
                )
                .bind(row.id)
                .bind(&secret.text)
                .bind(&secret.key_id)
                .bind(previous.as_ref().map(|p| p.text.as_str()))
                .bind(previous.as_ref().and_then(|p| p.key_id.as_deref()))
                .execute(&mut *tx)
                .await?;
                report.endpoints += 1;
                report.secrets += u64::from(changed) + u64::from(previous_changed);
            }
            tx.commit().await?;
        }
        Ok(report)
    }
}
