//! The audit log: one structured line per administrative change or refused attempt, on
//! the `quiver::audit` target (route it with `RUST_LOG` / the JSON log format).

use tracing::info;

/// An administrative change was made (or attempted and rejected by validation).
pub fn change(action: &str, principal: &str, outcome: &str, detail: &str) {
    info!(
        target: "quiver::audit",
        audit = true,
        action,
        principal,
        outcome,
        detail,
        "audit"
    );
}

/// An administrative call was refused by authentication or authorisation.
pub fn denied(action: &str, principal: &str, reason: &str) {
    change(action, principal, "denied", reason);
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn audit_events_are_one_json_line_with_every_field() {
        let buf = Buf::default();
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            super::change(
                "create_token",
                "token 'ab' (ops)",
                "applied",
                "token cd (ranker, reader): created",
            );
            super::denied(
                "/quiver.v1.AdminService/RevokeToken",
                "unauthenticated caller",
                "missing credentials",
            );
        });
        let text = String::from_utf8(buf.0.lock().expect("lock").clone()).expect("utf8");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["target"], "quiver::audit");
        let f = &lines[0]["fields"];
        assert_eq!(f["audit"], true);
        assert_eq!(f["action"], "create_token");
        assert_eq!(f["principal"], "token 'ab' (ops)");
        assert_eq!(f["outcome"], "applied");
        assert_eq!(lines[1]["fields"]["outcome"], "denied");
        assert_eq!(lines[1]["fields"]["detail"], "missing credentials");
    }
}
