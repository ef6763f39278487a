//! Per-principal lookup quotas (`[quotas]`, a token's own quota): keys and requests per
//! second, cluster-wide. Each node refills a principal's bucket at its share of the quota
//! (the quota divided by the active members: the smart client spreads a principal's keys
//! over the nodes by shard, so the shares add up to the quota) and lets it hold up to the
//! whole quota (one second's burst, so a request as large as the quota still fits on one
//! node). Shares follow membership: they are recomputed from the committed member list on
//! every request, so a joining, drained or dead node changes them at once.

use std::time::{Duration, Instant};

use metrics::counter;

use super::ServeError;
use crate::metrics as m;
use crate::security::Principal;
use crate::security::rate::RateLimiter;
use crate::state::NodeState;

/// The buckets of lookup quotas on this node.
pub struct LookupQuotas {
    keys: RateLimiter,
    requests: RateLimiter,
}

impl Default for LookupQuotas {
    fn default() -> Self {
        // The limiters' own rates are unused: each principal brings its quota.
        LookupQuotas {
            keys: RateLimiter::new(0),
            requests: RateLimiter::new(0),
        }
    }
}

impl LookupQuotas {
    /// Spends one request and `keys` keys of `principal`'s quota on a node that holds
    /// `1/share` of it. Nothing is spent when either is refused.
    ///
    /// # Errors
    /// `QuotaExhausted` naming the quota, the principal and the wait;
    /// `InvalidArgument` for a request larger than the principal's whole quota.
    pub fn spend(
        &self,
        principal: &Principal,
        keys: usize,
        share: u32,
        now: Instant,
    ) -> Result<(), ServeError> {
        let q = principal.quota;
        if q.is_unlimited() {
            return Ok(());
        }
        // Allocated only for principals with a quota (the buckets are keyed by it).
        let who = principal.quota_key();
        let share = f64::from(share.max(1));
        let take = |limiter: &RateLimiter, quota: u32, n: f64| {
            if quota == 0 {
                return Ok(());
            }
            let quota = f64::from(quota);
            limiter.try_take(&who, n, quota / share, quota, now)
        };
        let keys_f = keys as f64;
        if q.keys_per_second != 0 && keys_f > f64::from(q.keys_per_second) {
            return Err(ServeError::InvalidArgument(format!(
                "a lookup of {keys} keys exceeds {principal}'s whole quota of {} keys per second",
                q.keys_per_second
            )));
        }
        take(&self.requests, q.requests_per_second, 1.0)
            .map_err(|wait| exhausted(principal, "requests", q.requests_per_second, wait))?;
        if let Err(wait) = take(&self.keys, q.keys_per_second, keys_f) {
            // Give the request back: a refused lookup spends nothing.
            if q.requests_per_second != 0 {
                let quota = f64::from(q.requests_per_second);
                let _ = self
                    .requests
                    .try_take(&who, -1.0, quota / share, quota, now);
            }
            return Err(exhausted(principal, "keys", q.keys_per_second, wait));
        }
        Ok(())
    }
}

fn exhausted(principal: &Principal, what: &str, quota: u32, wait: Duration) -> ServeError {
    counter!(m::ADMISSION_SHED, "reason" => "lookup_quota").increment(1);
    ServeError::QuotaExhausted {
        message: format!(
            "lookup quota: {principal} may look up {quota} {what} per second across the cluster (its token's quota or [quotas] for its role); retry in {} ms",
            wait.as_millis().max(1)
        ),
        retry_after: wait,
    }
}

impl NodeState {
    /// How many nodes share each principal's lookup quota: the active members in
    /// cluster mode, 1 in static mode.
    pub fn quota_share(&self) -> u32 {
        self.control.as_ref().map_or(1, |c| {
            let active = c
                .state()
                .members
                .values()
                .filter(|m| m.status == crate::control::state::MemberStatus::Active)
                .count();
            u32::try_from(active).unwrap_or(u32::MAX).max(1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::principal::{Credential, LookupQuota};

    fn principal(keys: u32, requests: u32) -> Principal {
        Principal {
            credential: Credential::Token("0123456789ab".into()),
            name: "ranker".into(),
            role: Some(crate::security::principal::Role::Reader),
            views: None,
            quota: LookupQuota {
                keys_per_second: keys,
                requests_per_second: requests,
            },
        }
    }

    #[test]
    fn keys_and_requests_are_spent_together_at_this_nodes_share() {
        let q = LookupQuotas::default();
        let t0 = Instant::now();
        let p = principal(300, 0);
        // Three nodes share 300 keys/s: this one refills 100/s and holds up to 300.
        q.spend(&p, 300, 3, t0).unwrap();
        let err = q.spend(&p, 50, 3, t0).unwrap_err();
        let ServeError::QuotaExhausted {
            message,
            retry_after,
        } = err
        else {
            panic!("{err:?}");
        };
        assert!(message.contains("300 keys per second") && message.contains("0123456789ab"));
        assert!(
            retry_after >= Duration::from_millis(499) && retry_after <= Duration::from_millis(501)
        );
        q.spend(&p, 50, 3, t0 + Duration::from_millis(500)).unwrap();
        // A lookup larger than the whole quota can never fit.
        assert!(matches!(
            q.spend(&p, 301, 3, t0),
            Err(ServeError::InvalidArgument(_))
        ));
        // No quota: never refused.
        q.spend(&principal(0, 0), 1_000_000, 1, t0).unwrap();
    }

    #[test]
    fn a_refused_lookup_spends_neither_keys_nor_requests() {
        let q = LookupQuotas::default();
        let t0 = Instant::now();
        let p = principal(10, 2);
        q.spend(&p, 10, 1, t0).unwrap(); // 1 of 2 requests, all 10 keys
        assert!(q.spend(&p, 5, 1, t0).is_err()); // keys refused: the request is given back
        q.spend(&p, 0, 1, t0).unwrap(); // so the second request still fits
        let err = q.spend(&p, 0, 1, t0).unwrap_err();
        assert!(
            matches!(&err, ServeError::QuotaExhausted { message, .. } if message.contains("2 requests")),
            "{err:?}"
        );
    }
}
