//! `quiverctl token create|revoke|list`.

use clap::Subcommand;
use quiver_client::NodeClient;
use serde_json::json;

/// Token subcommands.
#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once and cannot be shown again.
    Create {
        /// Who or what the token is for.
        #[arg(long)]
        name: String,
        /// reader | writer | admin.
        #[arg(long)]
        role: String,
        /// Views the token may read (and push to); repeatable or comma separated.
        /// Default: every view.
        #[arg(long = "view", value_delimiter = ',')]
        views: Vec<String>,
        /// The token's own lookup quota in entity keys per second, cluster-wide (default:
        /// its role's, `[quotas]` in the node config; 0: unlimited).
        #[arg(long)]
        lookup_keys_per_second: Option<u32>,
        /// The token's own lookup quota in requests per second (as above).
        #[arg(long)]
        lookups_per_second: Option<u32>,
    },
    /// Revoke a token by id.
    Revoke {
        /// Token id (the 12 hex digits after `qvr_`).
        id: String,
    },
    /// List tokens (never their secrets).
    List,
}

/// Runs one token subcommand against `client`.
pub async fn run(client: &mut NodeClient, cmd: TokenCommand, json_out: bool) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create {
            name,
            role,
            views,
            lookup_keys_per_second,
            lookups_per_second,
        } => {
            let (id, token) = client
                .create_token_with_quota(
                    name.clone(),
                    role.clone(),
                    views.clone(),
                    lookup_keys_per_second,
                    lookups_per_second,
                )
                .await?;
            if json_out {
                println!(
                    "{}",
                    json!({ "id": id, "token": token, "name": name, "role": role, "views": views })
                );
            } else {
                println!("{token}");
                eprintln!(
                    "token {id} ({name}, {role}) created; it is shown only once: store it now"
                );
            }
        }
        TokenCommand::Revoke { id } => {
            client.revoke_token(id.clone()).await?;
            if json_out {
                println!("{}", json!({ "revoked": id }));
            } else {
                println!("token {id} revoked");
            }
        }
        TokenCommand::List => {
            let tokens = client.list_tokens().await?;
            if json_out {
                let rows: Vec<_> = tokens
                    .iter()
                    .map(|t| {
                        json!({
                            "id": t.id, "name": t.name, "role": t.role, "views": t.views,
                            "created_by": t.created_by, "created_at_ms": t.created_at_ms,
                            "revoked_at_ms": (t.revoked_at_ms != 0).then_some(t.revoked_at_ms),
                            "revoked_by": t.revoked_by,
                            "lookup_keys_per_second": t.lookup_keys_per_second,
                            "lookups_per_second": t.lookups_per_second,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!(
                    "{:<12}  {:<20} {:<7} {:<8} {:<24} views",
                    "id", "name", "role", "state", "created by"
                );
                for t in tokens {
                    let state = if t.revoked_at_ms != 0 {
                        "revoked"
                    } else {
                        "valid"
                    };
                    let views = if t.views.is_empty() {
                        "*".to_owned()
                    } else {
                        t.views.join(",")
                    };
                    println!(
                        "{:<12}  {:<20} {:<7} {:<8} {:<24} {views}",
                        t.id, t.name, t.role, state, t.created_by
                    );
                }
            }
        }
    }
    Ok(())
}
