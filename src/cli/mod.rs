//! The command line: parses arguments, builds the caller's KMS (local or
//! remote), runs one command and maps errors to AWS CLI-style messages and
//! exit codes.
//!
//! Exit codes follow the AWS CLI: 0 success, 252 bad arguments, 253 bad
//! configuration or credentials, 254 a KMS error, 255 anything else. Batch
//! commands (rotate, inventory) use 0 / 1 (some items failed) / 2 (could not start).

pub(crate) mod admin;
pub(crate) mod batch;
pub(crate) mod demo;
pub(crate) mod files;
pub(crate) mod kms;
pub(crate) mod objects;
pub(crate) mod report;
pub(crate) mod serve;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use rewrap::error::KmsError;
use rewrap::kms::Kms;
use rewrap::service::{Caller, KmsService};
use std::path::PathBuf;
use std::sync::Arc;

/// rewrap: a key-management service with AWS KMS semantics and a
/// role-separated re-encryption batch worker.
#[derive(Debug, Parser)]
#[command(name = "rewrap", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    /// The command.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Output format, as in the AWS CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// Indented JSON.
    Json,
    /// Tab-separated values.
    Text,
}

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub(crate) struct GlobalArgs {
    /// Keystore folder [default: $REWRAP_HOME, else ~/.rewrap].
    #[arg(long, global = true, env = "REWRAP_HOME", value_name = "DIR")]
    pub(crate) keystore: Option<PathBuf>,
    /// Extra policy folder, read after <keystore>/policies.
    #[arg(long, global = true, env = "REWRAP_POLICIES", value_name = "DIR")]
    pub(crate) policies: Option<PathBuf>,
    /// Use the KMS at this URL (AWS KMS wire protocol) instead of a local keystore.
    #[arg(long, global = true, env = "REWRAP_ENDPOINT_URL", value_name = "URL")]
    pub(crate) endpoint_url: Option<String>,
    /// Credentials profile in the shared credentials file.
    #[arg(long, global = true, env = "AWS_PROFILE")]
    pub(crate) profile: Option<String>,
    /// Region (for remote KMS; accepted and ignored for a local keystore).
    #[arg(long, global = true)]
    pub(crate) region: Option<String>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Json)]
    pub(crate) output: Output,
    /// JMESPath query applied to the output.
    #[arg(long, global = true)]
    pub(crate) query: Option<String>,
}

/// Every command.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Creates a keystore and its owner principal; prints the owner's credentials once.
    Init(admin::InitArgs),
    /// Policy tools.
    #[command(subcommand)]
    Policy(admin::PolicyCommand),
    /// Audit trail tools.
    #[command(subcommand)]
    Audit(admin::AuditCommand),
    /// KMS operations, named as in `aws kms`.
    #[command(flatten)]
    Kms(kms::KmsCommand),
    /// Envelope files, rotation and inventory.
    #[command(flatten)]
    Files(files::FileCommand),
    /// The KMS server.
    #[command(flatten)]
    Serve(serve::ServeCommand),
    /// Runs the main job end to end on an embedded default, in a temporary folder.
    Demo(demo::DemoArgs),
}

/// What every command gets: the global options and ways to reach a KMS.
#[derive(Debug)]
pub(crate) struct Context {
    /// The global options.
    pub(crate) global: GlobalArgs,
}

/// A KMS error with the operation it came from, printed as the AWS CLI does.
#[derive(Debug)]
pub(crate) struct OpError {
    /// The AWS operation name.
    pub(crate) operation: &'static str,
    /// The error.
    pub(crate) error: KmsError,
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "An error occurred ({}) when calling the {} operation: {}",
            self.error.code, self.operation, self.error.message
        )
    }
}

impl std::error::Error for OpError {}

/// A problem with configuration or credentials (exit code 253).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ConfigError(pub String);

pub(crate) use rewrap::sigv4::Credentials;

impl Context {
    /// The keystore folder.
    pub(crate) fn home(&self) -> PathBuf {
        if let Some(dir) = &self.global.keystore {
            return dir.clone();
        }
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
        home.join(".rewrap")
    }

    /// The extra policy folder, if any.
    pub(crate) fn extra_policies(&self) -> Option<PathBuf> {
        self.global.policies.clone()
    }

    /// True when the user asked for JSON output.
    pub(crate) fn json_output(&self) -> bool {
        self.global.output == Output::Json
    }

    /// Opens the local keystore.
    pub(crate) fn service(&self) -> anyhow::Result<Arc<KmsService>> {
        KmsService::open(&self.home(), self.extra_policies().as_deref())
            .map_err(|e| ConfigError(e.message).into())
    }

    /// The caller's credentials, from the environment or the shared
    /// credentials file, as the AWS CLI finds them (see
    /// [`rewrap::client::resolve_credentials`]).
    pub(crate) fn credentials(&self) -> anyhow::Result<Credentials> {
        let env = rewrap::client::ProcessEnv;
        rewrap::client::resolve_credentials(&env, self.global.profile.as_deref()).map_err(|e| {
            let e = anyhow::Error::from(e);
            ConfigError(format!("Unable to locate credentials: {e:#}")).into()
        })
    }

    /// The KMS the caller talks to: a local session, authenticated against
    /// the keystore before anything else happens, or a remote KMS.
    pub(crate) fn kms(&self) -> anyhow::Result<Arc<dyn Kms>> {
        if let Some(url) = &self.global.endpoint_url {
            return remote_kms(url, &self.global);
        }
        let creds = self.credentials()?;
        let service = self.service()?;
        let principal = service
            .authenticate(&creds.access_key_id, creds.secret_access_key.expose())
            .map_err(|e| ConfigError(format!("{}: {}", e.code, e.message)))?;
        Ok(Arc::new(service.session(Caller {
            principal,
            source_ip: None,
            user_agent: Some(format!("rewrap-cli/{}", env!("CARGO_PKG_VERSION"))),
            ..Caller::default()
        })))
    }

    /// Prints a JSON response body with `--output` and `--query` applied.
    pub(crate) fn print_json(&self, body: &[u8]) -> anyhow::Result<()> {
        let mut value: serde_json::Value =
            serde_json::from_slice(body).context("response is not JSON")?;
        let result = self.print_value(&value);
        zeroize_value(&mut value);
        result
    }

    /// Prints a verdict: `line` for people, or, when `--query` is given,
    /// `value` with the query and `--output` applied (`audit verify`,
    /// `policy validate`).
    pub(crate) fn print_verdict(
        &self,
        line: &str,
        value: &serde_json::Value,
    ) -> anyhow::Result<()> {
        if self.global.query.is_some() {
            return self.print_value(value);
        }
        println!("{line}");
        Ok(())
    }

    /// Prints a value with `--output` and `--query` applied.
    pub(crate) fn print_value(&self, value: &serde_json::Value) -> anyhow::Result<()> {
        let selected = match &self.global.query {
            None => value.clone(),
            Some(q) => {
                let expr = jmespath::compile(q)
                    .map_err(|e| ConfigError(format!("bad --query expression: {e}")))?;
                let var = jmespath::Variable::from_serializable(value)
                    .map_err(|e| anyhow::anyhow!("cannot query output: {e}"))?;
                let found = expr
                    .search(var)
                    .map_err(|e| ConfigError(format!("--query failed: {e}")))?;
                serde_json::to_value(&*found)?
            }
        };
        let mut text = match self.global.output {
            Output::Json => serde_json::to_string_pretty(&selected)?,
            Output::Text => text_output(&selected),
        };
        println!("{text}");
        zeroize::Zeroize::zeroize(&mut text);
        Ok(())
    }
}

fn remote_kms(url: &str, global: &GlobalArgs) -> anyhow::Result<Arc<dyn Kms>> {
    let client = rewrap::client::RemoteKms::from_env(
        url,
        global.region.as_deref(),
        global.profile.as_deref(),
    )?;
    Ok(Arc::new(client))
}

/// The AWS CLI's text output: scalars as they are, lists tab-separated,
/// objects as their values.
fn text_output(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Null => "None".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) if items.iter().all(|v| !v.is_object() && !v.is_array()) => {
            items.iter().map(text_output).collect::<Vec<_>>().join("\t")
        }
        Value::Array(items) => items.iter().map(text_output).collect::<Vec<_>>().join("\n"),
        Value::Object(map) => {
            let scalars: Vec<String> = map
                .values()
                .filter(|v| !v.is_object() && !v.is_array())
                .map(text_output)
                .collect();
            let nested: Vec<String> = map
                .values()
                .filter(|v| v.is_object() || v.is_array())
                .map(text_output)
                .collect();
            scalars
                .into_iter()
                .reduce(|a, b| a + "\t" + &b)
                .into_iter()
                .chain(nested)
                .collect::<Vec<_>>()
                .join("\n")
        }
    }
}

/// Wipes every string in a JSON value (plaintext may be among them).
pub(crate) fn zeroize_value(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(s) => zeroize::Zeroize::zeroize(s),
        Value::Array(items) => items.iter_mut().for_each(zeroize_value),
        Value::Object(map) => map.values_mut().for_each(zeroize_value),
        _ => {}
    }
}

/// Runs the command line; returns the process exit code.
pub(crate) fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 252 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let ctx = Context { global: cli.global };
    let result = match cli.command {
        Command::Init(args) => admin::init(args, &ctx),
        Command::Policy(cmd) => admin::policy(cmd, &ctx),
        Command::Audit(cmd) => admin::audit(cmd, &ctx),
        Command::Kms(cmd) => kms::run(cmd, &ctx),
        Command::Serve(cmd) => serve::run(cmd, &ctx),
        Command::Files(cmd) => files::run(cmd, &ctx),
        Command::Demo(args) => demo::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => report_error(&e),
    }
}

/// Prints an error the way the AWS CLI does and picks the exit code.
pub(crate) fn report_error(e: &anyhow::Error) -> i32 {
    if let Some(op) = e.downcast_ref::<OpError>() {
        eprintln!("\n{op}");
        return 254;
    }
    if e.downcast_ref::<ConfigError>().is_some() {
        eprintln!("rewrap: {e:#}");
        return 253;
    }
    eprintln!("rewrap: error: {e:#}");
    255
}
