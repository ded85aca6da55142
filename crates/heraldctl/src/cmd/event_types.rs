//! `heraldctl event-type`: the tenant's catalogue of event types, by group. `list` reads
//! every page: a tenant holds at most `HERALD_MAX_EVENT_TYPES_PER_TENANT` of them.

use clap::Subcommand;
use herald_proto::v1 as pb;

use crate::context::{Ctx, EventTypesClient};
use crate::views;

const COLUMNS: &[&str] = &["name", "group", "description", "archived", "created_at"];

#[derive(Subcommand, Debug)]
pub enum EventTypeCmd {
    /// Add an event type to the catalogue
    Create {
        /// Name, e.g. invoice.paid
        name: String,
        /// What the event means, for the people subscribing
        #[arg(long, default_value = "", value_name = "TEXT")]
        description: String,
        /// Group it is listed under, e.g. billing
        #[arg(long, default_value = "")]
        group: String,
    },
    /// List the catalogue, by group then name
    List {
        /// Include archived types
        #[arg(long)]
        all: bool,
        /// Only this group
        #[arg(long)]
        group: Option<String>,
    },
    /// Change an event type's description or group
    Update {
        /// Event type name
        name: String,
        /// New description
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
        /// New group
        #[arg(long)]
        group: Option<String>,
    },
    /// Archive an event type (hidden from lists; refused if the tenant rejects unknown types)
    Archive {
        /// Event type name
        name: String,
    },
    /// Bring an archived event type back
    Unarchive {
        /// Event type name
        name: String,
    },
}

impl EventTypeCmd {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let mut c = ctx.event_types().await?;
        let types = match self {
            EventTypeCmd::Create {
                name,
                description,
                group,
            } => {
                let req = pb::CreateEventTypeRequest {
                    name,
                    description,
                    group,
                };
                vec![
                    c.create_event_type(ctx.tenant_call(req)?)
                        .await?
                        .into_inner(),
                ]
            }
            EventTypeCmd::List { all, group } => list(ctx, &mut c, all, group).await?,
            EventTypeCmd::Update {
                name,
                description,
                group,
            } => {
                let req = change(name, description, group, None);
                vec![update(ctx, &mut c, req).await?]
            }
            EventTypeCmd::Archive { name } => {
                vec![update(ctx, &mut c, change(name, None, None, Some(true))).await?]
            }
            EventTypeCmd::Unarchive { name } => {
                vec![update(ctx, &mut c, change(name, None, None, Some(false))).await?]
            }
        };
        let rows: Vec<_> = types.iter().map(views::event_type).collect();
        ctx.out.rows(&rows, COLUMNS)
    }
}

fn change(
    name: String,
    description: Option<String>,
    group: Option<String>,
    archived: Option<bool>,
) -> pb::UpdateEventTypeRequest {
    pb::UpdateEventTypeRequest {
        name,
        description,
        group,
        archived,
    }
}

async fn update(
    ctx: &Ctx,
    c: &mut EventTypesClient,
    req: pb::UpdateEventTypeRequest,
) -> anyhow::Result<pb::EventType> {
    Ok(c.update_event_type(ctx.tenant_call(req)?)
        .await?
        .into_inner())
}

/// Every event type (archived ones too when `include_archived`), page after page.
async fn list(
    ctx: &Ctx,
    c: &mut EventTypesClient,
    include_archived: bool,
    group: Option<String>,
) -> anyhow::Result<Vec<pb::EventType>> {
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let req = pb::ListEventTypesRequest {
            include_archived,
            group: group.clone(),
            page_size: 500,
            cursor,
        };
        let page = c
            .list_event_types(ctx.tenant_call(req)?)
            .await?
            .into_inner();
        all.extend(page.event_types);
        if page.next_cursor.is_empty() {
            return Ok(all);
        }
        cursor = page.next_cursor;
    }
}
