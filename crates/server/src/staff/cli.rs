//! `kanpa user add`: the first owner of an organisation (and anyone else an
//! operator wants to let in) gets a role and a single-use sign-in link.

use anyhow::{Context, bail};
use kanpa_ledger::store as ledger;
use kanpa_messaging::email::EmailAddress;

use super::{INVITATION_HOURS, Role, store};
use crate::app;
use crate::cli::UserCommand;
use crate::config::Config;

pub async fn run(config: Config, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add { org, email, role } => {
            let role = Role::parse(&role).context("--role must be owner, organiser, treasurer or viewer")?;
            let email = email.trim().to_lowercase();
            if email.len() > 254 || EmailAddress::parse(&email).is_err() {
                bail!("--email is not an email address");
            }
            let db = app::connect(&config).await?;
            let Some(org) = ledger::organisation_by_slug(&db, &org).await? else {
                bail!("no organisation {org:?} (see `kanpa org list`)");
            };
            let mut tx = db.begin().await?;
            let user = store::ensure_user(&mut tx, &email).await?;
            store::set_role(&mut tx, user, org.id, role, None, Some("kanpa user add")).await?;
            let token = store::create_link(&mut tx, user, INVITATION_HOURS * 60).await?;
            tx.commit().await?;
            let base = config.server.base_url.trim_end_matches('/');
            println!("{email} is {} of {}", role.as_str(), org.slug);
            println!("sign-in link (works once, for {INVITATION_HOURS} hours):");
            println!("{base}/admin/sign-in/{token}");
            db.close().await;
            Ok(())
        }
    }
}
