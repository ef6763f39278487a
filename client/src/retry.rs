//! Retry policy: what a failed sub-request's error means for the next step
//! ([`Recovery`]), and the budget that caps the extra load retries and hedges add.

use std::sync::Mutex;
use std::time::Instant;

use quiver_proto::ErrorCode;
use quiver_proto::error::Retry;

use crate::config::RetryBudget;
use crate::error::ClientError;
use crate::schema::{ClientSchema, SchemaCache};
use crate::shard_map_cache::MapCache;

/// What to do after a failed sub-request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// Give up: the request itself is wrong, or the failure is not transient.
    Fail,
    /// The map is stale: refresh it (at least to `epoch`) and route again.
    RefreshMap(Option<u64>),
    /// The replica cannot serve it now (behind, overloaded): try another replica.
    OtherReplica,
    /// The node looks down (transport failure, timeout): count it against the node's
    /// circuit breaker and try another replica.
    NodeDown,
}

impl Recovery {
    pub(crate) fn of(e: &ClientError) -> Recovery {
        match e {
            ClientError::Connect { .. } => Recovery::NodeDown,
            // One classification for node and client (quiver_proto::error::Retry).
            ClientError::Rpc(s) => match Retry::of_status(s) {
                Retry::Reroute => Recovery::RefreshMap(e.reported_epoch()),
                Retry::Elsewhere => Recovery::OtherReplica,
                Retry::NodeDown => Recovery::NodeDown,
                // Not the node's fault: another replica enforces the same quota's share.
                Retry::Never | Retry::Later => Recovery::Fail,
            },
            ClientError::DeadlineExceeded { .. } => Recovery::NodeDown,
            ClientError::NoReplica(_) => Recovery::RefreshMap(None),
            ClientError::InvalidRequest(_)
            | ClientError::NotFound(_)
            | ClientError::BudgetExhausted(_) => Recovery::Fail,
        }
    }

    /// [`Recovery::of`] `e`, except for a node's NotFound for names `knows` still finds in
    /// the client's schema after reading it again ([`SchemaCache::node_behind`]): that
    /// node's registry has not applied them yet, so another node answers (pushes: any node takes them).
    pub(crate) async fn of_with_registry(
        e: &ClientError,
        schema: &SchemaCache,
        map: &MapCache,
        knows: impl Fn(&ClientSchema) -> bool,
    ) -> Recovery {
        match Recovery::of(e) {
            Recovery::Fail
                if e.code() == Some(ErrorCode::NotFound)
                    && schema.node_behind(map, knows).await =>
            {
                Recovery::OtherReplica
            }
            recovery => recovery,
        }
    }
}

/// Token bucket: each request deposits `ratio` tokens, time deposits `min_per_second`,
/// each retry or hedge withdraws one.
#[derive(Debug)]
pub(crate) struct Budget {
    config: RetryBudget,
    cap: f64,
    state: Mutex<(f64, Instant)>,
}

impl Budget {
    pub(crate) fn new(config: RetryBudget) -> Self {
        // Ten seconds of the minimum rate: enough to ride out a burst of failures right
        // after start or after a quiet spell. The bucket starts with it (as Finagle's
        // budget does): a client started against a replica that is briefly behind sends
        // its first lookups there all at once, and all of them come back BEHIND together;
        // starting with one second's worth failed most of those retries (found by the
        // chaos smoke set once its readers became open loop).
        let cap = (config.min_per_second * 10.0).max(10.0);
        let initial = (config.min_per_second * 10.0).min(cap);
        Budget {
            config,
            cap,
            state: Mutex::new((initial, Instant::now())),
        }
    }

    fn refill(&self, s: &mut (f64, Instant)) {
        let now = Instant::now();
        let earned = now.duration_since(s.1).as_secs_f64() * self.config.min_per_second;
        s.0 = (s.0 + earned).min(self.cap);
        s.1 = now;
    }

    /// A request was made.
    pub(crate) fn deposit(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refill(&mut s);
        s.0 = (s.0 + self.config.ratio).min(self.cap);
    }

    /// Takes one token for a retry or hedge; false if the budget is spent.
    pub(crate) fn try_withdraw(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refill(&mut s);
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use quiver_proto::ErrorCode;

    use super::*;

    /// Routing (what to do next) and `ClientError::is_retryable` (what a caller is told)
    /// come from the one classification and never disagree, on coded errors and on bare
    /// transport statuses alike (they did on RESOURCE_EXHAUSTED).
    #[test]
    fn recovery_and_retryability_agree_on_every_status() {
        let mut statuses: Vec<tonic::Status> =
            ErrorCode::ALL.iter().map(|c| c.to_status("x")).collect();
        for code in 0..=16 {
            statuses.push(tonic::Status::new(tonic::Code::from(code), "bare"));
        }
        for s in statuses {
            let e = ClientError::Rpc(s.clone());
            // A spent quota is retryable later but never failed over: the one exception.
            let later = Retry::of_status(&s) == Retry::Later;
            assert_eq!(later, e.is_quota_exhausted());
            assert_eq!(
                e.is_retryable(),
                Recovery::of(&e) != Recovery::Fail || later,
                "{:?} {:?}",
                s.code(),
                ErrorCode::from_status(&s)
            );
        }
        let shed = ClientError::Rpc(ErrorCode::ResourceExhausted.to_status("queue full"));
        assert!(shed.is_retryable());
        assert_eq!(Recovery::of(&shed), Recovery::OtherReplica);
    }

    #[test]
    fn classification_follows_the_error_model() {
        let code = |c: ErrorCode| ClientError::Rpc(c.to_status("x"));
        assert_eq!(
            Recovery::of(&code(ErrorCode::Behind)),
            Recovery::OtherReplica
        );
        assert_eq!(
            Recovery::of(&code(ErrorCode::InvalidArgument)),
            Recovery::Fail
        );
        assert_eq!(Recovery::of(&code(ErrorCode::NotFound)), Recovery::Fail);
        // Credentials are the same on every replica: no failover, no breaker.
        assert_eq!(
            Recovery::of(&code(ErrorCode::Unauthenticated)),
            Recovery::Fail
        );
        assert_eq!(
            Recovery::of(&code(ErrorCode::PermissionDenied)),
            Recovery::Fail
        );
        assert_eq!(
            Recovery::of(&code(ErrorCode::WrongShard)),
            Recovery::RefreshMap(None)
        );
        let mut wrong = ErrorCode::WrongShard.to_status("x");
        wrong.metadata_mut().insert(
            quiver_proto::error::EPOCH_METADATA_KEY,
            "17".parse().unwrap(),
        );
        assert_eq!(
            Recovery::of(&ClientError::Rpc(wrong)),
            Recovery::RefreshMap(Some(17))
        );
        let transport = ClientError::Rpc(tonic::Status::unavailable("connection refused"));
        assert_eq!(Recovery::of(&transport), Recovery::NodeDown);
        assert_eq!(
            Recovery::of(&ClientError::InvalidRequest("x".into())),
            Recovery::Fail
        );
    }

    #[test]
    fn budget_allows_the_ratio_and_no_more() {
        let b = Budget::new(RetryBudget {
            ratio: 0.1,
            min_per_second: 0.0,
        });
        let mut granted = 0;
        for _ in 0..1000 {
            b.deposit();
            if b.try_withdraw() {
                granted += 1;
            }
        }
        assert!((99..=100).contains(&granted), "{granted}");
    }

    #[test]
    fn a_new_client_can_retry_a_burst_of_ten_seconds_of_the_minimum_rate() {
        let b = Budget::new(RetryBudget {
            ratio: 0.1,
            min_per_second: 10.0,
        });
        let burst = (0..200).filter(|_| b.try_withdraw()).count();
        assert!((100..=101).contains(&burst), "{burst}");
    }
}
