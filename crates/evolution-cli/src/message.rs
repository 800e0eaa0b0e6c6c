//! Library errors in the command line's words.
//!
//! The library's messages name its builder settings (`request_timeout`,
//! `max_retries`, `auth_url`, …), which a user of the command line never
//! sees: they have `--timeout`, `--max-retries`, `--token-url`. Each error
//! is rendered here from its variant's fields, with the remedy a CLI user
//! can act on. Variants added to the library later fall back to its text.

use std::time::Duration;

use evolution_langchain::{AuthError, Error, RequestId};

/// What the user can set for a library setting or parameter: the flag and
/// its environment variable, `EVOLUTION_SECRET` for the secret, or the
/// name in backquotes when the command line has no way to set it.
pub fn setting(field: &str) -> String {
    let (flag, env) = match field {
        "model" => ("--model", Some("EVOLUTION_MODEL")),
        "base_url" => ("--base-url", Some("EVOLUTION_BASE_URL")),
        "auth_url" => ("--token-url", Some("EVOLUTION_TOKEN_URL")),
        "key_id" => ("--key-id", Some("EVOLUTION_KEY_ID")),
        "project_id" => ("--project-id", Some("EVOLUTION_PROJECT_ID")),
        "request_timeout" | "auth_timeout" | "timeout" => ("--timeout", Some("EVOLUTION_TIMEOUT")),
        "max_retries" | "auth_max_retries" => ("--max-retries", Some("EVOLUTION_MAX_RETRIES")),
        "secret" => return "EVOLUTION_SECRET".into(),
        "api_key" => return "EVOLUTION_API_KEY".into(),
        "temperature" => ("--temperature", None),
        "max_tokens" => ("--max-tokens", None),
        "top_p" => ("--top-p", None),
        "frequency_penalty" => ("--frequency-penalty", None),
        "presence_penalty" => ("--presence-penalty", None),
        "stop" => ("--stop", None),
        "seed" => ("--seed", None),
        "reasoning_effort" => ("--reasoning-effort", None),
        "tools" => ("--tools", None),
        "language" => ("--language", None),
        "timestamp_granularities" => ("--timestamps", None),
        other => return format!("`{other}`"),
    };
    match env {
        Some(env) => format!("{flag} ({env})"),
        None => flag.to_string(),
    }
}

/// The flag alone (or the variable, for settings without a flag), for a
/// remedy already in parentheses.
fn flag(field: &str) -> String {
    let setting = setting(field);
    match setting.split_once(" (") {
        Some((flag, _)) => flag.to_string(),
        None => setting,
    }
}

/// The message for a library error, on one line (server messages may hold
/// line breaks).
pub fn describe(error: &Error) -> String {
    crate::exit::one_line(&render(error))
}

fn render(error: &Error) -> String {
    match error {
        Error::Config { field, message } => {
            format!("invalid configuration: {} {message}", setting(field))
        }
        Error::InvalidRequest { field, message } => {
            format!("invalid request: {} {message}", setting(field))
        }
        Error::Auth(auth) => auth_error(auth),
        Error::Api {
            status,
            message,
            error_type,
            request_id,
            ..
        } => format!(
            "the model API answered {status}{}: {message}; {}{}",
            error_type
                .as_deref()
                .map(|t| format!(" ({t})"))
                .unwrap_or_default(),
            refusal_remedy(*status),
            shown(request_id.as_ref())
        ),
        Error::Unavailable {
            status,
            message,
            attempts,
            request_id,
            ..
        } => format!(
            "the model API is unavailable ({status}) after {}: {message}; try again later \
             or raise --max-retries{}",
            attempts_text(*attempts),
            shown(request_id.as_ref())
        ),
        Error::RateLimited {
            message,
            attempts,
            waited,
            request_id,
            ..
        } => format!(
            "the model API kept answering 429 (rate limited) for {} over {}: {message}; set \
             --rpm/--tpm to the key's limits so calls wait instead of being refused, lower \
             --concurrency, or raise --max-rate-limit-wait{}",
            duration(*waited),
            attempts_text(*attempts),
            shown(request_id.as_ref())
        ),
        Error::UploadTooLarge {
            size,
            limit,
            request_id,
        } => upload_too_large("the file", *size, *limit, request_id.as_ref()),
        Error::Extraction {
            schema,
            reason,
            attempts,
            ..
        } => format!(
            "the model's answer does not fit the schema `{schema}` after {}: {reason}; try a \
             model that supports structured output ({}), a simpler schema, clearer \
             instructions, or a higher {} if the answer was cut",
            attempts_text(*attempts),
            flag("model"),
            flag("max_tokens")
        ),
        Error::Timeout {
            url,
            timeout,
            attempts,
            request_id,
        } => format!(
            "no answer from {url} within {} after {}; check the connection or raise --timeout{}",
            duration(*timeout),
            attempts_text(*attempts),
            shown(request_id.as_ref())
        ),
        Error::Connection {
            url,
            message,
            attempts,
            request_id,
        } => format!(
            "could not talk to {url} after {}: {message}; check the connection and {}{}",
            attempts_text(*attempts),
            setting("base_url"),
            shown(request_id.as_ref())
        ),
        Error::InvalidResponse {
            url,
            message,
            request_id,
        } => format!(
            "invalid response from {url}: {message}; check that {} points at an \
             OpenAI-compatible API{}",
            setting("base_url"),
            shown(request_id.as_ref())
        ),
        Error::Redirected {
            url,
            status,
            location,
            request_id,
        } => format!(
            "{url} {} {location}, another origin: not followed; if that address is right, \
             set {} to it{}",
            redirect_verb(*status),
            setting("base_url"),
            shown(request_id.as_ref())
        ),
        Error::TooLarge {
            what,
            limit,
            request_id,
            ..
        } => format!(
            "{what} is larger than the limit of {limit} bytes{}",
            shown(request_id.as_ref())
        ),
        Error::Stream {
            message,
            request_id,
        } => format!(
            "the response stream broke: {message}{}",
            shown(request_id.as_ref())
        ),
        Error::Batch {
            failed,
            total,
            index,
            first,
        } => format!(
            "{failed} of {total} prompts failed; the first (prompt {index}): {}",
            render(first)
        ),
        other => other.to_string(),
    }
}

/// An upload over a limit: `what` (the file, named) is `size` bytes, over
/// our `limit` (nothing was sent) or, with `None`, more than the server took
/// (it answered 413).
pub fn upload_too_large(
    what: &str,
    size: u64,
    limit: Option<u64>,
    request_id: Option<&RequestId>,
) -> String {
    let (over, raise) = match limit {
        Some(limit) => (
            format!("over the limit of {limit} bytes"),
            ", or raise --max-upload-size if the server takes more",
        ),
        None => ("more than the service takes (413)".to_string(), ""),
    };
    format!(
        "{what} is {size} bytes, {over}; split it into shorter pieces or compress it (e.g. \
         mono 16 kHz mp3 or ogg){raise}{}",
        shown(request_id)
    )
}

/// An IAM failure (or the model API refusing a token or key).
fn auth_error(error: &AuthError) -> String {
    let token_url = setting("auth_url");
    match error {
        AuthError::InvalidCredentials { key_id } => format!(
            "IAM rejected the credentials for key `{key_id}` (401 Unauthorized): check the \
             key id (--key-id or EVOLUTION_KEY_ID) and the secret (EVOLUTION_SECRET)"
        ),
        AuthError::Forbidden { key_id } => format!(
            "IAM refused key `{key_id}` (403 Forbidden): the key has no rights for this \
             service; ask your Cloud.ru administrator to grant them"
        ),
        AuthError::Timeout {
            auth_url,
            timeout,
            attempts,
        } => format!(
            "IAM at {auth_url} did not answer within {} after {}; check the connection \
             and {token_url}, or raise --timeout",
            duration(*timeout),
            attempts_text(*attempts)
        ),
        AuthError::Connection {
            auth_url,
            message,
            attempts,
        } => format!(
            "could not reach IAM at {auth_url} after {}: {message}; check the connection \
             and {token_url}",
            attempts_text(*attempts)
        ),
        AuthError::Transient {
            auth_url,
            status,
            attempts,
            ..
        } => format!(
            "IAM at {auth_url} is unavailable ({status}) after {}; try again later or raise \
             --max-retries",
            attempts_text(*attempts)
        ),
        AuthError::TokenRejected {
            message,
            request_id,
        } => format!(
            "the model API rejected a freshly issued access token (401): {message}; check \
             that the key has access to this endpoint ({}) and that {} is right{}",
            flag("base_url"),
            setting("project_id"),
            shown(request_id.as_ref())
        ),
        AuthError::KeyRejected {
            message,
            request_id,
        } => format!(
            "the model API rejected the API key (401): {message}; check {} and that it is \
             meant for this endpoint ({}){}",
            setting("api_key"),
            flag("base_url"),
            shown(request_id.as_ref())
        ),
        AuthError::Redirected {
            auth_url,
            status,
            location,
        } => format!(
            "IAM at {auth_url} {} {location}, another origin: not followed, no token \
             accepted; if that address is right, set {token_url} to it",
            redirect_verb(*status)
        ),
        AuthError::TooLarge { auth_url, limit } => format!(
            "the reply from IAM at {auth_url} is larger than the limit of {limit} bytes; \
             check that {token_url} points at the IAM token endpoint"
        ),
        AuthError::InvalidResponse { auth_url, message } => format!(
            "invalid response from IAM at {auth_url}: {message}; check that {token_url} \
             points at the IAM token endpoint"
        ),
        other => other.to_string(),
    }
}

/// What to do about a refusal with `status` (the library's advice, in flags).
fn refusal_remedy(status: u16) -> String {
    match status {
        403 => format!(
            "the key or token has no permission for this model or project: check the key's \
             rights, the model name ({}) and the project ({}) with your Cloud.ru administrator",
            flag("model"),
            flag("project_id")
        ),
        404 => format!(
            "check the model name ({}) and that {} points at the API (e.g. …/v1)",
            flag("model"),
            setting("base_url")
        ),
        413 => "the request is too large for the server: send less at once".into(),
        _ => "fix the request (model name, parameters, messages) before retrying".into(),
    }
}

/// The message for a stream that stopped delivering data for longer than
/// `--timeout` after it had started: the same failure as a reply that never
/// came (exit code 5), said as what the user saw.
pub fn stalled(error: &Error) -> Option<String> {
    match error {
        Error::Timeout {
            url,
            timeout,
            request_id,
            ..
        } => Some(format!(
            "the answer stopped arriving: no data from {url} for {}; check the connection \
             or raise --timeout{}",
            duration(*timeout),
            shown(request_id.as_ref())
        )),
        _ => None,
    }
}

fn attempts_text(attempts: u32) -> String {
    if attempts == 1 {
        "1 attempt".into()
    } else {
        format!("{attempts} attempts")
    }
}

fn duration(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

fn shown(request_id: Option<&RequestId>) -> String {
    request_id
        .map(|id| format!(" [request id {id}]"))
        .unwrap_or_default()
}

fn redirect_verb(status: Option<u16>) -> String {
    match status {
        Some(status) => format!("answered {status}, a redirect to"),
        None => "was redirected (by the HTTP client) to".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16) -> Error {
        Error::Api {
            status,
            message: "no".into(),
            error_type: None,
            code: None,
            request_id: None,
        }
    }

    #[test]
    fn messages_name_flags_not_builder_settings() {
        let timeout = Error::Timeout {
            url: "http://x/v1/chat/completions".into(),
            timeout: Duration::from_millis(1500),
            attempts: 3,
            request_id: None,
        };
        let text = describe(&timeout);
        assert!(text.contains("raise --timeout"), "{text}");
        assert!(text.contains("within 1s 500ms after 3 attempts"), "{text}");
        let unavailable = Error::Unavailable {
            status: 503,
            message: "busy".into(),
            attempts: 1,
            retry_after: None,
            request_id: None,
        };
        let text = describe(&unavailable);
        assert!(text.contains("raise --max-retries"), "{text}");
        assert!(text.contains("after 1 attempt:"), "{text}");
        let config = Error::Config {
            field: "base_url".into(),
            message: "gives no valid URL".into(),
        };
        assert_eq!(
            describe(&config),
            "invalid configuration: --base-url (EVOLUTION_BASE_URL) gives no valid URL"
        );
        for error in [timeout, unavailable, config, api(403), api(404)] {
            let text = describe(&error);
            for library in [
                "request_timeout",
                "max_retries",
                "base_url",
                "auth_url",
                "project_id",
            ] {
                assert!(!text.contains(library), "{library} in {text}");
            }
        }
    }

    #[test]
    fn structured_output_and_upload_errors_in_cli_terms() {
        let text = describe(&Error::Extraction {
            schema: "ticket".into(),
            reason: "missing required property `priority`".into(),
            raw: "{\"title\": \"x\"}".into(),
            attempts: 2,
        });
        assert!(
            text.starts_with(
                "the model's answer does not fit the schema `ticket` after 2 attempts: \
                 missing required property `priority`; "
            ),
            "{text}"
        );
        assert!(
            text.contains("--max-tokens") && text.contains("(--model)"),
            "{text}"
        );
        assert!(!text.contains("max_tokens"), "{text}");
        let ours = upload_too_large("talk.mp3", 30, Some(20), None);
        assert_eq!(
            ours,
            "talk.mp3 is 30 bytes, over the limit of 20 bytes; split it into shorter pieces or \
             compress it (e.g. mono 16 kHz mp3 or ogg), or raise --max-upload-size if the \
             server takes more"
        );
        let theirs = upload_too_large("talk.mp3", 30, None, None);
        assert!(
            theirs.contains("more than the service takes (413)"),
            "{theirs}"
        );
        assert!(!theirs.contains("--max-upload-size"), "{theirs}");
    }

    #[test]
    fn a_refusal_is_advised_by_its_status() {
        assert!(describe(&api(403)).contains("no permission"));
        assert!(!describe(&api(403)).contains("fix the request"));
        assert!(describe(&api(404)).contains("--model"));
        assert!(describe(&api(400)).contains("fix the request"));
    }

    #[test]
    fn iam_failures_keep_their_attempts() {
        let error = Error::Auth(AuthError::Connection {
            auth_url: "http://127.0.0.1:9/token".into(),
            message: "refused".into(),
            attempts: 3,
        });
        let text = describe(&error);
        assert!(text.contains("after 3 attempts"), "{text}");
        assert!(text.contains("--token-url (EVOLUTION_TOKEN_URL)"), "{text}");
    }

    #[test]
    fn settings_without_a_flag_keep_their_name() {
        assert_eq!(setting("n"), "`n`");
        assert_eq!(setting("temperature"), "--temperature");
        assert_eq!(setting("secret"), "EVOLUTION_SECRET");
        assert_eq!(flag("model"), "--model");
        assert_eq!(flag("secret"), "EVOLUTION_SECRET");
    }
}
