//! `herald verify`: checks a saved webhook request (its headers and body)
//! against an endpoint's secret, as a receiver would. Exit status 0 when
//! the signature is valid, 1 when it is not.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use herald_domain::Secret;

#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// The endpoint's signing secret (`whsec_…` or `whsk_…`).
    #[arg(long, env = "HERALD_VERIFY_SECRET", hide_env_values = true)]
    pub secret: String,
    /// A file with the request's headers, one `Name: value` per line
    /// (`webhook-*` or `svix-*`).
    #[arg(long, value_name = "FILE")]
    pub headers: PathBuf,
    /// A file with the request's body, byte for byte.
    #[arg(long, value_name = "FILE")]
    pub body: PathBuf,
    /// Also refuse a timestamp further than this from now (`5m`); by
    /// default a saved request of any age is checked.
    #[arg(long, value_name = "DURATION")]
    pub tolerance: Option<String>,
}

/// The outcome, as printed: `Ok` for a valid signature.
pub fn check(args: &VerifyArgs) -> anyhow::Result<Result<String, String>> {
    let secret =
        Secret::parse(args.secret.trim()).map_err(|e| anyhow::anyhow!("--secret: {}", e.reason))?;
    let headers = std::fs::read_to_string(&args.headers)
        .with_context(|| format!("reading {}", args.headers.display()))?;
    let body =
        std::fs::read(&args.body).with_context(|| format!("reading {}", args.body.display()))?;
    let header = |names: [&str; 2]| -> Option<String> {
        headers.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            let name = name.trim().to_ascii_lowercase();
            names
                .contains(&name.as_str())
                .then(|| value.trim().to_owned())
        })
    };
    let (Some(id), Some(timestamp), Some(signature)) = (
        header(["webhook-id", "svix-id"]),
        header(["webhook-timestamp", "svix-timestamp"]),
        header(["webhook-signature", "svix-signature"]),
    ) else {
        bail!("the headers file needs webhook-id, webhook-timestamp and webhook-signature (or svix-*)");
    };
    let Ok(seconds) = timestamp.parse::<i64>() else {
        return Ok(Err(format!("the timestamp `{timestamp}` is not a number")));
    };
    if let Some(tolerance) = &args.tolerance {
        let tolerance = herald_domain::parse_duration(tolerance)
            .map_err(|reason| anyhow::anyhow!("--tolerance: {reason}"))?;
        let now = chrono::Utc::now().timestamp();
        if (now - seconds).unsigned_abs() > tolerance.as_secs() {
            return Ok(Err(format!(
                "the timestamp is {} s from now, beyond the tolerance",
                now - seconds
            )));
        }
    }
    if secret.verify(&id, seconds, &body, &signature) {
        Ok(Ok(format!("signature valid (message {id})")))
    } else {
        Ok(Err(format!(
            "signature invalid: no signature in `{signature}` matches this secret"
        )))
    }
}
