//! `evolution token`: checks the credentials by obtaining a token, and says
//! how long it lives. The token itself is never printed; `--show-prefix`
//! shows its first eight characters, enough to match it in a server log.

use std::time::{Duration, SystemTime};

use clap::Args;
use serde_json::json;

use crate::config::{AuthMode, ConnectionArgs, Service};
use crate::emulator::EmbeddedArgs;
use crate::exit::CliError;
use crate::output::print_text;

/// `evolution token` options.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// Also print the token's first 8 characters (never more).
    #[arg(long)]
    pub show_prefix: bool,

    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Runs `token`.
pub async fn run(
    args: TokenArgs,
    connection: &ConnectionArgs,
    embedded: &EmbeddedArgs,
) -> Result<(), CliError> {
    let service = Service::resolve(connection, embedded).await?;
    let llm = service.inference().build()?;
    let started = std::time::Instant::now();
    let Some(manager) = llm
        .token_manager()
        .filter(|_| service.mode() == AuthMode::Iam)
    else {
        // An API key has nothing to exchange: ask the API whether it takes it.
        let models = tokio::select! {
            models = llm.list_models() => models?,
            () = crate::signal::ctrl_c() => return Err(CliError::interrupted("interrupted")),
        };
        let took = started.elapsed();
        if args.json {
            let report = json!({
                "ok": true,
                "mode": "api-key",
                "base_url": service.base_url(),
                "models": models.len(),
            });
            return print_text(&format!("{report}\n"));
        }
        return print_text(&format!(
            "credentials: ok (API key, accepted by GET /models in {} ms: {} model(s))\nbase url:    {}\n",
            took.as_millis(),
            models.len(),
            service.base_url()
        ));
    };
    let token = tokio::select! {
        token = manager.get_token() => token?,
        () = crate::signal::ctrl_c() => return Err(CliError::interrupted("interrupted")),
    };
    let took = started.elapsed();
    let info = manager.info();
    let prefix = args.show_prefix.then(|| token.prefix().to_string());
    drop(token);

    let key_id = info.key_id.clone();
    let expires_at = info.expires_at.map(rfc3339);
    if args.json {
        let report = json!({
            "ok": true,
            "mode": "iam",
            "key_id": key_id,
            "auth_url": manager.auth_url(),
            "expires_at": expires_at,
            "expires_in_secs": info.expires_in.map(|d| d.as_secs()),
            "lifetime_secs": info.lifetime.map(|d| d.as_secs()),
            "token_prefix": prefix,
        });
        return print_text(&format!("{report}\n"));
    }
    let mut text = format!(
        "credentials: ok (key {key_id}, IAM token obtained in {} ms)\nauth url:    {}\n",
        took.as_millis(),
        manager.auth_url()
    );
    if let (Some(at), Some(left)) = (&expires_at, info.expires_in) {
        text.push_str(&format!("expires:     {at} (in {})\n", human(left)));
    }
    if let Some(lifetime) = info.lifetime {
        text.push_str(&format!("lifetime:    {}\n", human(lifetime)));
    }
    if let Some(prefix) = prefix {
        text.push_str(&format!("prefix:      {prefix}…\n"));
    }
    print_text(&text)
}

/// `1h 2m 3s`, `5m 0s`, `42s`: whole seconds, largest units first.
fn human(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m {s}s"),
    }
}

/// A wall-clock time as RFC 3339 in UTC, whole seconds, e.g. `2026-11-26T03:20:08Z`.
fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn dates_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap_day = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3661);
        assert_eq!(rfc3339(leap_day), "2000-02-29T01:01:01Z");
        let later = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(rfc3339(later), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human(Duration::from_secs(42)), "42s");
        assert_eq!(human(Duration::from_secs(300)), "5m 0s");
        assert_eq!(human(Duration::from_secs(3723)), "1h 2m 3s");
    }
}
