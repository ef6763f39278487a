//! Who is calling (a [`Principal`]), what each RPC needs ([`Need`]), and the check between
//! the two.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A role. Reader < writer < admin; `Node` (cluster members) is separate: it may call
/// the internal RPCs and read the cluster map, nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Look up features, read schemas, views, status and the cluster map.
    Reader,
    /// A reader that may also push rows.
    Writer,
    /// A writer that may also change the registry, drain nodes and manage tokens.
    Admin,
    /// A cluster member (internal RPCs). Never held by a token.
    Node,
}

impl Role {
    /// Parses `reader` | `writer` | `admin` | `node`.
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "reader" => Role::Reader,
            "writer" => Role::Writer,
            "admin" => Role::Admin,
            "node" => Role::Node,
            _ => return None,
        })
    }

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
            Role::Node => "node",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A principal's lookup quota, cluster-wide, per second; 0: unlimited. Each node enforces
/// its share (the quota divided by the active members: the smart client spreads a
/// principal's keys over the nodes by shard), with a burst of one second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LookupQuota {
    /// Entity keys looked up per second.
    pub keys_per_second: u32,
    /// Lookup requests per second (a node counts the sub-requests it serves).
    pub requests_per_second: u32,
}

impl LookupQuota {
    /// Neither keys nor requests are limited.
    pub fn is_unlimited(&self) -> bool {
        self.keys_per_second == 0 && self.requests_per_second == 0
    }
}

/// Lookup quotas by role (`[quotas.reader]`, `[quotas.writer]`, `[quotas.admin]`): a
/// token's own quota (`quiverctl token create --lookup-keys-per-second …`) overrides its
/// role's, field by field. Cluster members are never limited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleQuotas {
    /// Readers.
    pub reader: LookupQuota,
    /// Writers.
    pub writer: LookupQuota,
    /// Admins (and the bootstrap token).
    pub admin: LookupQuota,
}

impl RoleQuotas {
    /// The quota of a principal with `role`, with a token's own overrides.
    pub fn resolve(&self, role: Role, keys: Option<u32>, requests: Option<u32>) -> LookupQuota {
        let base = match role {
            Role::Reader => self.reader,
            Role::Writer => self.writer,
            Role::Admin => self.admin,
            Role::Node => LookupQuota::default(),
        };
        LookupQuota {
            keys_per_second: keys.unwrap_or(base.keys_per_second),
            requests_per_second: requests.unwrap_or(base.requests_per_second),
        }
    }
}

/// What an RPC requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing (the gRPC health service, for probes).
    Public,
    /// Any authenticated caller with at least the reader role (or a member).
    Read,
    /// Writer or admin.
    Write,
    /// Admin.
    Admin,
    /// A cluster member.
    Member,
    /// An RPC missing from the authorisation table: refused to every authenticated
    /// caller (fail closed), so a method added without an entry is never open by mistake.
    Unlisted,
}

impl Need {
    /// The requirement of the RPC at `path` (`/package.Service/Method`): the node's
    /// authorisation table, one entry per method it serves. Anything else is
    /// [`Need::Unlisted`] — refused after authentication, so probing for methods reveals
    /// nothing to strangers and a new method is closed until it is given an entry.
    pub fn of_path(path: &str) -> Need {
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or((path, ""));
        match (service, method) {
            ("grpc.health.v1.Health", "Check" | "Watch" | "List") => Need::Public,
            (
                "grpc.reflection.v1.ServerReflection" | "grpc.reflection.v1alpha.ServerReflection",
                "ServerReflectionInfo",
            )
            | ("quiver.v1.FeatureService", "GetOnlineFeatures" | "GetSchema" | "ExportFeatures")
            | (
                "quiver.v1.AdminService",
                "ListViews" | "DescribeView" | "GetStatus" | "ListViewVersions",
            )
            | ("quiver.v1.ClusterService", "GetClusterMap" | "WatchClusterMap") => Need::Read,
            ("quiver.v1.FeatureService", "Push") => Need::Write,
            (
                "quiver.v1.AdminService",
                "ApplyDefinitions" | "CreateToken" | "RevokeToken" | "ListTokens" | "RollbackView"
                | "Delete",
            )
            | ("quiver.v1.ClusterService", "DrainNode") => Need::Admin,
            ("quiver.v1.RaftService", "AppendEntries" | "Vote" | "InstallSnapshot")
            | ("quiver.v1.ControlService", "Propose" | "Join" | "Report")
            | ("quiver.v1.ReplicaService", "CreateCheckpoint" | "FetchCheckpointFile") => {
                Need::Member
            }
            _ => Need::Unlisted,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Need::Public => "nothing",
            Need::Read => "role reader, writer or admin",
            Need::Write => "role writer or admin",
            Need::Admin => "role admin",
            Need::Member => "a cluster member's credentials",
            Need::Unlisted => "an entry in the node's authorisation table, and has none",
        }
    }
}

/// How the caller proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// Auth is disabled on this node: everyone may do everything.
    AuthDisabled,
    /// A bearer token created with `quiverctl token create` (its public id).
    Token(String),
    /// The bootstrap admin token from the node's config.
    BootstrapToken,
    /// The cluster token nodes present to each other.
    ClusterToken,
    /// A client certificate whose subject matched a configured identity.
    Certificate(String),
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// How it authenticated.
    pub credential: Credential,
    /// Human-readable name (token name, certificate identity).
    pub name: String,
    /// Its role; `None` when auth is disabled (everything allowed).
    pub role: Option<Role>,
    /// Views it may read (and push to); `None` means every view.
    pub views: Option<BTreeSet<String>>,
    /// Its lookup quota.
    pub quota: LookupQuota,
}

impl Principal {
    /// The principal of every call when auth is disabled.
    pub fn auth_disabled() -> Principal {
        Principal {
            credential: Credential::AuthDisabled,
            name: "anonymous (auth disabled)".into(),
            role: None,
            views: None,
            quota: LookupQuota::default(),
        }
    }

    /// Stable key for per-principal quotas (token id, identity, …).
    pub fn quota_key(&self) -> String {
        match &self.credential {
            Credential::AuthDisabled => "anonymous".into(),
            Credential::Token(id) => format!("token:{id}"),
            Credential::BootstrapToken => "bootstrap".into(),
            Credential::ClusterToken => "cluster".into(),
            Credential::Certificate(name) => format!("cert:{name}"),
        }
    }

    /// Whether this principal satisfies `need`.
    pub fn allows(&self, need: Need) -> bool {
        let Some(role) = self.role else {
            return true;
        };
        match need {
            Need::Public => true,
            Need::Read => matches!(role, Role::Reader | Role::Writer | Role::Admin),
            Need::Write => matches!(role, Role::Writer | Role::Admin),
            Need::Admin => role == Role::Admin,
            Need::Member => role == Role::Node,
            Need::Unlisted => false,
        }
    }

    /// Checks `need` for the RPC at `path`: `Err` carries the PERMISSION_DENIED message,
    /// naming the RPC, what it needs and what the caller has.
    pub fn authorize(&self, path: &str, need: Need) -> Result<(), String> {
        if self.allows(need) {
            return Ok(());
        }
        let role = self.role.map_or("none", Role::as_str);
        Err(format!(
            "{path} needs {}; {self} has role {role}",
            need.describe()
        ))
    }

    /// Whether the principal may read (or, as a writer, push to) `view`.
    pub fn may_use_view(&self, view: &str) -> bool {
        self.views.as_ref().is_none_or(|v| v.contains(view))
    }

    /// Whether the principal may use every one of `views` (a feature service's views).
    /// A filter, not a refusal: nothing is counted.
    pub fn may_use_all<'a>(&self, views: impl IntoIterator<Item = &'a str>) -> bool {
        views.into_iter().all(|v| self.may_use_view(v))
    }

    /// Checks [`Principal::may_use_view`] for every view a request touches: `Err` names
    /// the first one not granted, and the refusal is counted in
    /// `quiver_auth_denied_total{reason="permission_denied"}` like the guard's.
    pub fn check_views<'a>(&self, views: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
        for v in views {
            if !self.may_use_view(v) {
                metrics::counter!(crate::metrics::AUTH_DENIED, "reason" => "permission_denied")
                    .increment(1);
                return Err(format!("{self} is not granted view '{v}'"));
            }
        }
        Ok(())
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.credential {
            Credential::AuthDisabled => f.write_str("anonymous caller (auth disabled)"),
            Credential::Token(id) => write!(f, "token '{id}' ({})", self.name),
            Credential::BootstrapToken => f.write_str("the bootstrap token"),
            Credential::ClusterToken => f.write_str("the cluster token"),
            Credential::Certificate(name) => write!(f, "certificate identity '{name}'"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(role: Role) -> Principal {
        Principal {
            credential: Credential::Token("t1".into()),
            name: "n".into(),
            role: Some(role),
            views: None,
            quota: LookupQuota::default(),
        }
    }

    #[test]
    fn roles_nest_and_members_are_separate() {
        let table = [
            (Role::Reader, [true, true, false, false, false]),
            (Role::Writer, [true, true, true, false, false]),
            (Role::Admin, [true, true, true, true, false]),
            (Role::Node, [true, false, false, false, true]),
        ];
        let needs = [
            Need::Public,
            Need::Read,
            Need::Write,
            Need::Admin,
            Need::Member,
        ];
        for (role, expected) in table {
            for (need, want) in needs.iter().zip(expected) {
                assert_eq!(with(role).allows(*need), want, "{role} {need:?}");
            }
        }
        assert!(Principal::auth_disabled().allows(Need::Member));
    }

    #[test]
    fn paths_map_to_needs() {
        assert_eq!(Need::of_path("/grpc.health.v1.Health/Check"), Need::Public);
        assert_eq!(
            Need::of_path("/quiver.v1.FeatureService/GetOnlineFeatures"),
            Need::Read
        );
        assert_eq!(Need::of_path("/quiver.v1.FeatureService/Push"), Need::Write);
        assert_eq!(
            Need::of_path("/quiver.v1.AdminService/ListTokens"),
            Need::Admin
        );
        assert_eq!(
            Need::of_path("/quiver.v1.ClusterService/DrainNode"),
            Need::Admin
        );
        assert_eq!(
            Need::of_path("/quiver.v1.ClusterService/GetClusterMap"),
            Need::Read
        );
        assert_eq!(Need::of_path("/quiver.v1.RaftService/Vote"), Need::Member);
        assert_eq!(
            Need::of_path("/quiver.v1.ControlService/Propose"),
            Need::Member
        );
        // Fail closed: unknown services, unknown methods of known services, malformed.
        for path in [
            "/x.Y/Z",
            "/quiver.v1.FeatureService/Export",
            "/quiver.v1.AdminService/DropEverything",
            "/grpc.health.v1.Health/Shutdown",
            "/quiver.v1.FeatureService",
            "",
        ] {
            assert_eq!(Need::of_path(path), Need::Unlisted, "{path:?}");
        }
        for role in [Role::Reader, Role::Writer, Role::Admin, Role::Node] {
            let e = with(role).authorize("/x.Y/Z", Need::Unlisted).unwrap_err();
            assert!(e.contains("authorisation table"), "{e}");
        }
    }

    /// Every method of every service the node serves (from the same descriptor sets the
    /// reflection service publishes) has an entry: nothing served is left to the
    /// fail-closed default by omission.
    #[test]
    fn every_served_method_is_in_the_table() {
        use prost::Message as _;
        let mut methods = Vec::new();
        for set in [
            quiver_proto::v1::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ] {
            let files = prost_types::FileDescriptorSet::decode(set).unwrap();
            for file in files.file {
                for service in &file.service {
                    for method in &service.method {
                        methods.push(format!(
                            "/{}.{}/{}",
                            file.package(),
                            service.name(),
                            method.name()
                        ));
                    }
                }
            }
        }
        assert!(methods.len() >= 23, "{methods:?}");
        let unlisted: Vec<_> = methods
            .iter()
            .filter(|m| Need::of_path(m) == Need::Unlisted)
            .collect();
        assert!(
            unlisted.is_empty(),
            "served but not in the table: {unlisted:?}"
        );
    }

    #[test]
    fn denial_names_the_rpc_the_need_and_the_role() {
        let e = with(Role::Reader)
            .authorize("/quiver.v1.FeatureService/Push", Need::Write)
            .expect_err("denied");
        assert!(
            e.contains("Push") && e.contains("writer") && e.contains("has role reader"),
            "{e}"
        );
        let mut p = with(Role::Reader);
        p.views = Some(["a".to_owned()].into());
        assert!(p.check_views(["a"]).is_ok());
        let e = p.check_views(["a", "b"]).expect_err("b not granted");
        assert!(e.contains("view 'b'"), "{e}");
    }
}
