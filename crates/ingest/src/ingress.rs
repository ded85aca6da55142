//! What one tenant may send an ingest instance: `HERALD_TENANT_INGRESS_BYTES` bytes of call
//! messages a second (one second's worth saved up), counted as they are read.
//!
//! Every other budget is checked once a call's message has been received and decoded. A call
//! refused by one of them still cost its bytes: a `PublishBatch` can carry 257 MiB, and a
//! client that repeats a call it is refused (its fan-out over the limit, say) can make ingest
//! receive and decode hundreds of MB a second for nothing, taking cores from every other
//! tenant. So the bytes a tenant's calls carry are counted while they are read
//! ([`Ingress::meter`]), and while the tenant is in debt its calls are refused from their
//! headers alone ([`Ingress::check`], before the message is read), with `RESOURCE_EXHAUSTED`
//! and the time until the debt is paid. A call already admitted is read to its end, so what a
//! tenant can overdraw is bounded by its calls in flight times the message size limits.
//!
//! Per instance, like the payload CPU share ([`crate::shares`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tonic::Status;
use tonic::body::Body;
use uuid::Uuid;

use crate::shares::Shares;

/// Bytes counted before they are charged (and at the end of the message).
const CHARGE_EVERY: usize = 256 * 1024;

/// Each tenant's bytes received; cheap to clone.
#[derive(Clone)]
pub struct Ingress {
    bytes: Arc<Shares>,
}

impl Ingress {
    /// `per_second` bytes a second per tenant; zero: not limited.
    pub fn new(per_second: u64) -> Self {
        Self {
            bytes: Arc::new(Shares::new(per_second as f64)),
        }
    }

    /// Refuses a call of `tenant` while it is in debt.
    pub fn check(&self, tenant: Uuid) -> Result<(), Status> {
        let Some(retry_after) = self.bytes.owed(tenant) else {
            return Ok(());
        };
        metrics::counter!("herald_ingress_refused_total").increment(1);
        Err(herald_proto::server::retry_later(
            format!(
                "this tenant sent this ingest more than its share of bytes ({} bytes per second, HERALD_TENANT_INGRESS_BYTES); retry after {} ms",
                self.bytes.rate() as u64,
                retry_after.as_millis()
            ),
            retry_after,
        ))
    }

    /// `body`, counting its bytes against `tenant` as they are read.
    pub fn meter(&self, tenant: Uuid, body: Body) -> Body {
        if !self.bytes.limited() {
            return body;
        }
        Body::new(Metered {
            inner: body,
            tenant,
            bytes: self.bytes.clone(),
            uncharged: 0,
        })
    }
}

/// A call's message body whose bytes are charged to its tenant.
struct Metered {
    inner: Body,
    tenant: Uuid,
    bytes: Arc<Shares>,
    uncharged: usize,
}

impl Metered {
    fn settle(&mut self) {
        if self.uncharged > 0 {
            self.bytes.charge(self.tenant, self.uncharged as f64);
            self.uncharged = 0;
        }
    }
}

impl http_body::Body for Metered {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                this.uncharged += frame.data_ref().map_or(0, Bytes::len);
                if this.uncharged >= CHARGE_EVERY {
                    this.settle();
                }
            }
            Poll::Ready(_) => this.settle(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.settle();
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn bytes_read_are_charged_and_a_tenant_in_debt_is_refused() {
        let ingress = Ingress::new(1000);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        ingress.check(a).expect("nothing owed yet");
        let body = ingress.meter(
            a,
            Body::new(http_body_util::Full::new(Bytes::from(vec![0u8; 3000]))),
        );
        let read = body.collect().await.expect("read").to_bytes();
        assert_eq!(read.len(), 3000);
        let refused = ingress
            .check(a)
            .expect_err("2,000 bytes over at 1,000 a second");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("HERALD_TENANT_INGRESS_BYTES"),
            "{}",
            refused.message()
        );
        ingress.check(b).expect("another tenant owes nothing");
    }

    #[tokio::test]
    async fn unlimited_leaves_the_body_alone() {
        let ingress = Ingress::new(0);
        let tenant = Uuid::now_v7();
        let body = ingress.meter(
            tenant,
            Body::new(http_body_util::Full::new(Bytes::from(vec![0u8; 10]))),
        );
        assert_eq!(body.collect().await.expect("read").to_bytes().len(), 10);
        ingress.check(tenant).expect("never refused");
    }
}
