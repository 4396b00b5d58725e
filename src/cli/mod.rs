//! The command line: parses arguments, builds the caller's KMS (local or
//! remote), runs one command and maps errors to AWS CLI-style messages and
//! exit codes.
//!
//! Exit codes (the table in the README, walked by `tests/exit_codes.rs`):
//! every command exits 0 on success. KMS, single-file, admin commands,
//! `serve` and `whoami` follow the AWS CLI: 252 bad arguments (clap usage
//! errors included), 253 configuration or credentials, 254 a KMS error, 255
//! anything else. Verdict commands (`policy check`, `audit verify`) exit 1
//! for "no". Batch commands (`rotate`, `inventory`, `encrypt-file -r`,
//! `decrypt-file -r`) exit 0 all done, 1 some items failed, 2 the run did
//! not start or stopped early, 3 interrupted. A closed stdout (`rewrap ... |
//! head`) ends the process quietly with 141, as a shell reports a command
//! killed by SIGPIPE.

pub(crate) mod admin;
pub(crate) mod asymmetric;
pub(crate) mod audit;
pub(crate) mod audit_report;
pub(crate) mod batch;
pub(crate) mod custom_key_stores;
pub(crate) mod demo;
pub(crate) mod files;
pub(crate) mod kms;
pub(crate) mod objects;
pub(crate) mod policy_report;
pub(crate) mod report;
pub(crate) mod root;
pub(crate) mod serve;
mod whoami;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use rewrap::error::{ErrorCode, KmsError};
use rewrap::kms::Kms;
use rewrap::service::{Caller, KmsService};
use std::ffi::OsString;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

/// Examples and exit codes at the end of `rewrap --help`.
const TOP_AFTER_HELP: &str = "\
Examples:
  rewrap init                                        # a keystore in $REWRAP_HOME; prints the owner's key once
  rewrap create-key --description app-data
  rewrap encrypt-file --key-id alias/app-data --encryption-context purpose=app-data -r --in-place data/
  rewrap --profile storage-rotator rotate --to alias/app-data --report report.json data/
  rewrap whoami                                      # who am I acting as, and from which credentials

Exit codes: 0 success; 252 bad arguments, 253 configuration or credentials,
254 a KMS error, 255 anything else; policy check / audit verify: 1 for no;
rotate, inventory, encrypt-file -r, decrypt-file -r: 1 some items failed,
2 did not start or stopped early, 3 interrupted.";

/// rewrap: a key-management service with AWS KMS semantics and a
/// role-separated re-encryption batch worker.
#[derive(Debug, Parser)]
// term_width: with `generate-data-key-pair-without-plaintext` (41
// characters) clap would put every command's description on its own line
// below a 100-column width (it does when the names take over 40% of it).
#[command(name = "rewrap", version, about, long_about = None, after_help = TOP_AFTER_HELP,
          term_width = 124)]
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

/// The heading global options are listed under, after a command's own.
const GLOBAL: &str = "Global options";

/// Options every command takes. Environment variables are named, never
/// their values (`hide_env_values`): a help text must not print a path or
/// a profile the caller did not ask to see.
#[derive(Debug, Clone, Args)]
pub(crate) struct GlobalArgs {
    /// Keystore folder [default: ~/.rewrap].
    #[arg(long, global = true, env = "REWRAP_HOME", hide_env_values = true,
          value_name = "DIR", help_heading = GLOBAL)]
    pub(crate) keystore: Option<PathBuf>,
    /// Extra policy folder, read after <keystore>/policies.
    #[arg(long, global = true, env = "REWRAP_POLICIES", hide_env_values = true,
          value_name = "DIR", help_heading = GLOBAL)]
    pub(crate) policies: Option<PathBuf>,
    /// Use the KMS at this URL (AWS KMS wire protocol) instead of a local keystore.
    #[arg(long, global = true, env = "REWRAP_ENDPOINT_URL", hide_env_values = true,
          value_name = "URL", help_heading = GLOBAL)]
    pub(crate) endpoint_url: Option<String>,
    /// Act as this profile of the shared credentials file (wins over key variables).
    ///
    /// The file is AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/credentials. As in the
    /// AWS CLI, --profile wins over REWRAP_*/AWS_* key variables; without it the
    /// order is REWRAP_ACCESS_KEY_ID, AWS_ACCESS_KEY_ID, then AWS_PROFILE or [default].
    #[arg(long, global = true, value_name = "NAME", help_heading = GLOBAL)]
    pub(crate) profile: Option<String>,
    /// Region (for a remote KMS; accepted and ignored for a local keystore).
    #[arg(long, global = true, value_name = "REGION", help_heading = GLOBAL)]
    pub(crate) region: Option<String>,
    /// Output format of what is printed on stdout (not a file: see -o/--out-file).
    #[arg(long, global = true, value_enum, default_value_t = Output::Json,
          value_name = "FORMAT", help_heading = GLOBAL)]
    pub(crate) output: Output,
    /// JMESPath query applied to the output.
    #[arg(long, global = true, value_name = "JMESPATH", help_heading = GLOBAL)]
    pub(crate) query: Option<String>,
}

/// The global options, refused by `demo` (it makes its own keystore and
/// principals in a temporary folder) and so not listed in `demo --help`:
/// a subcommand that has an argument of a global's id does not get the global.
#[derive(Debug, Clone, Args)]
pub(crate) struct NotForDemo {
    // The types are the globals' own: clap hands the top level's defaults
    // and environment values down under the same ids.
    #[arg(long, hide = true, value_parser = not_for_demo::<PathBuf>)]
    keystore: Option<PathBuf>,
    #[arg(long, hide = true, value_parser = not_for_demo::<PathBuf>)]
    policies: Option<PathBuf>,
    #[arg(long, hide = true, value_parser = not_for_demo::<String>)]
    endpoint_url: Option<String>,
    #[arg(long, hide = true, value_parser = not_for_demo::<String>)]
    profile: Option<String>,
    #[arg(long, hide = true, value_parser = not_for_demo::<String>)]
    region: Option<String>,
    #[arg(long, hide = true, value_parser = not_for_demo::<Output>)]
    output: Option<Output>,
    #[arg(long, hide = true, value_parser = not_for_demo::<String>)]
    query: Option<String>,
}

fn not_for_demo<T>(_: &str) -> Result<T, String> {
    Err(
        "demo makes its own keystore and principals in a temporary folder and \
         prints a narrative: it takes no keystore, credentials or output options"
            .into(),
    )
}

/// Every command.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Creates a keystore and its owner principal; prints the owner's credentials once.
    #[command(after_help = "Examples:\n  rewrap --keystore /var/lib/rewrap init\n  \
        REWRAP_HOME=~/.rewrap rewrap init --arn-region eu-west-1 --account 123456789012")]
    Init(admin::InitArgs),
    /// Policy tools.
    #[command(subcommand)]
    Policy(admin::PolicyCommand),
    /// Audit trail tools.
    #[command(subcommand)]
    Audit(admin::AuditCommand),
    /// The keystore's root of trust: moves a keystore to another root key (issue 13).
    #[command(
        subcommand,
        after_help = "Examples:\n  rewrap root move --to passphrase:file:/etc/rewrap/passphrase\n  rewrap root move --to file"
    )]
    Root(root::RootCommand),
    /// KMS operations, named as in `aws kms`.
    #[command(flatten)]
    Kms(kms::KmsCommand),
    /// Custom key stores (PKCS#11 tokens), named as in `aws kms`.
    #[command(flatten)]
    CustomKeyStores(custom_key_stores::CustomKeyStoreCommand),
    /// Asymmetric, HMAC and import operations (issues 15, 13).
    #[command(flatten)]
    Asymmetric(asymmetric::AsymmetricCommand),
    /// Envelope files, rotation and inventory.
    #[command(flatten)]
    Files(files::FileCommand),
    /// The KMS server.
    #[command(flatten)]
    Serve(serve::ServeCommand),
    /// Runs the main job end to end on an embedded default, in a temporary folder.
    #[command(after_help = "Examples:\n  rewrap demo\n  rewrap demo --files 1000 --keep")]
    Demo(demo::DemoArgs),
    /// Shows who the CLI acts as: principal, where the credentials came from,
    /// the keystore or endpoint, and what the KMS says the caller is.
    #[command(after_help = whoami::AFTER_HELP)]
    Whoami,
}

impl Command {
    /// Whether the command is a batch command, with exit codes 0 / 1 / 2 / 3.
    fn is_batch(&self) -> bool {
        match self {
            Command::Files(files::FileCommand::Rotate(_) | files::FileCommand::Inventory(_)) => {
                true
            }
            Command::Files(files::FileCommand::EncryptFile(a)) => a.io.recursive,
            Command::Files(files::FileCommand::DecryptFile(a)) => a.io.recursive,
            _ => false,
        }
    }
}

/// What every command gets: the global options and ways to reach a KMS.
#[derive(Debug)]
pub(crate) struct Context {
    /// The global options.
    pub(crate) global: GlobalArgs,
    /// A batch command (exit 2 for anything that stops the run).
    pub(crate) batch: bool,
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

/// Bad arguments found after parsing (exit code 252; 2 for batch commands).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub String);

/// The one item (file, object) of a single-item command failed; `code` is
/// chosen by the kind of failure ([`file_error_code`], [`object_error_code`]).
#[derive(Debug, thiserror::Error)]
#[error("{name}: {message}")]
pub(crate) struct ItemError {
    /// The file or object, as named on the command line.
    pub(crate) name: String,
    /// What went wrong.
    pub(crate) message: String,
    /// The exit code.
    pub(crate) code: i32,
}

/// stdout was closed by its reader: not an error, the process ends quietly.
#[derive(Debug, thiserror::Error)]
#[error("stdout closed")]
pub(crate) struct BrokenPipe;

/// Exit code of a closed stdout: what a shell reports for a command killed
/// by SIGPIPE (128 + 13), as `cat big | head` gives under `set -o pipefail`.
pub(crate) const EXIT_BROKEN_PIPE: i32 = 141;

/// The exit code of a KMS error: credentials the KMS refused or a KMS that
/// cannot be reached are configuration (253), the rest KMS errors (254).
pub(crate) fn kms_error_code(e: &KmsError) -> i32 {
    match e.code {
        ErrorCode::UnrecognizedClient
        | ErrorCode::InvalidSignature
        | ErrorCode::IncompleteSignature
        | ErrorCode::MissingAuthenticationToken
        | ErrorCode::RequestExpired
        | ErrorCode::EndpointConnection => 253,
        _ => 254,
    }
}

/// The exit code of a single-file failure.
pub(crate) fn file_error_code(e: &rewrap::files::FileError) -> i32 {
    use rewrap::files::FileError as F;
    match e {
        _ if caused_by_broken_pipe(e) => EXIT_BROKEN_PIPE,
        F::Kms(k) => kms_error_code(k),
        F::Usage(_) => 252,
        _ => 255,
    }
}

/// Whether an I/O error somewhere in `e`'s chain of causes is a closed pipe
/// (stdout of `decrypt-file -o -` closed by its reader).
fn caused_by_broken_pipe(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// The exit code of a single-object failure.
pub(crate) fn object_error_code(e: &rewrap::objstore::ObjectStoreError) -> i32 {
    use rewrap::objstore::ObjectStoreError as O;
    match e {
        O::Kms(k) => kms_error_code(k),
        O::InvalidUrl(_) | O::Usage(_) => 252,
        O::AccessDenied(_) => 253,
        _ => 255,
    }
}

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

    /// The local keystore and the principal the caller's credentials
    /// authenticate as (253 when they do not).
    pub(crate) fn authenticated_service(&self) -> anyhow::Result<(Arc<KmsService>, String)> {
        let service = self.service()?;
        let creds = self.credentials()?;
        let principal = service
            .authenticate(&creds.access_key_id, creds.secret_access_key.expose())
            .map_err(|e| ConfigError(format!("{}: {}", e.code, e.message)))?;
        Ok((service, principal))
    }

    /// The caller's credentials, from the environment or the shared
    /// credentials file, as the AWS CLI finds them (see
    /// [`rewrap::client::resolve_credentials_with_source`]).
    pub(crate) fn credentials(&self) -> anyhow::Result<Credentials> {
        self.credentials_with_source().map(|(c, _)| c)
    }

    /// The caller's credentials and where they came from.
    pub(crate) fn credentials_with_source(
        &self,
    ) -> anyhow::Result<(Credentials, rewrap::client::CredentialSource)> {
        let env = rewrap::client::ProcessEnv;
        rewrap::client::resolve_credentials_with_source(&env, self.global.profile.as_deref())
            .map_err(|e| {
                let e = anyhow::Error::from(e);
                ConfigError(format!("Unable to locate credentials: {e:#}")).into()
            })
    }

    /// The KMS the caller talks to: a local session, authenticated against
    /// the keystore before anything else happens, or a remote KMS.
    pub(crate) fn kms(&self) -> anyhow::Result<Arc<dyn Kms>> {
        let creds = self.credentials()?;
        self.kms_as(creds)
    }

    /// [`Context::kms`] with credentials the caller resolved.
    pub(crate) fn kms_as(&self, creds: Credentials) -> anyhow::Result<Arc<dyn Kms>> {
        if let Some(url) = &self.global.endpoint_url {
            let client =
                rewrap::client::RemoteKms::from_env_with(url, self.global.region.as_deref(), creds)
                    .map_err(|e| ConfigError(format!("{:#}", anyhow::Error::from(e))))?;
            return Ok(Arc::new(client));
        }
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
        print_stdout(line)
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
        let printed = print_stdout(&text);
        zeroize::Zeroize::zeroize(&mut text);
        printed
    }
}

/// Prints `text` and a newline on stdout; a reader that closed the pipe
/// gives [`BrokenPipe`] (the process then ends quietly), not a panic.
pub(crate) fn print_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(BrokenPipe.into()),
        other => Ok(other?),
    }
}

/// The AWS CLI's text output: scalars as they are, lists tab-separated,
/// objects as their values. A paged list's `"Truncated": false` is left
/// out: it would print a lone `False` line before the items.
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
                .iter()
                .filter(|(k, v)| !(k.as_str() == "Truncated" && **v == Value::Bool(false)))
                .map(|(_, v)| v)
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
    quiet_on_closed_output();
    let args: Vec<OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => return clap_error(&e, &args),
    };
    let ctx = Context {
        global: cli.global,
        batch: cli.command.is_batch(),
    };
    let result = match cli.command {
        Command::Init(args) => admin::init(args, &ctx),
        Command::Policy(cmd) => admin::policy(cmd, &ctx),
        Command::Audit(cmd) => admin::audit(cmd, &ctx),
        Command::Root(cmd) => root::run(cmd, &ctx),
        Command::Kms(cmd) => kms::run(cmd, &ctx),
        Command::CustomKeyStores(cmd) => custom_key_stores::run(cmd, &ctx),
        Command::Asymmetric(cmd) => asymmetric::run(cmd, &ctx),
        Command::Serve(cmd) => serve::run(cmd, &ctx),
        Command::Files(cmd) => files::run(cmd, &ctx),
        Command::Demo(args) => demo::run(args),
        Command::Whoami => whoami::run(&ctx),
    };
    match result {
        Ok(code) => code,
        Err(e) if e.downcast_ref::<BrokenPipe>().is_some() => EXIT_BROKEN_PIPE,
        Err(e) if ctx.batch => {
            report_error(&e);
            2
        }
        Err(e) => report_error(&e),
    }
}

/// Prints a clap error (or help, or the version) and picks the exit code:
/// 0 for help and version, else 252, or 2 for a batch command.
fn clap_error(e: &clap::Error, args: &[OsString]) -> i32 {
    if !e.use_stderr() {
        return match e.print() {
            Ok(()) => 0,
            Err(_) => EXIT_BROKEN_PIPE,
        };
    }
    let _ = e.print();
    if argv_names_batch_command(args) {
        2
    } else {
        252
    }
}

/// Whether the command line names a batch command, read without a
/// successful parse: the first word that is neither an option nor the
/// value of a global option is the command; `encrypt-file` and
/// `decrypt-file` are batch commands with `-r` / `--recursive`.
fn argv_names_batch_command(args: &[OsString]) -> bool {
    use clap::CommandFactory;
    let cli = Cli::command();
    let takes_value: Vec<String> = cli
        .get_arguments()
        .filter(|a| a.is_global_set() && a.get_action().takes_values())
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    let mut words = args.iter().skip(1).map(|a| a.to_string_lossy());
    let command = loop {
        match words.next() {
            None => return false,
            Some(w) if takes_value.iter().any(|t| *t == w) => {
                words.next();
            }
            Some(w) if w.starts_with('-') => {}
            Some(w) => break w.into_owned(),
        }
    };
    match command.as_str() {
        "rotate" | "inventory" => true,
        "encrypt-file" | "decrypt-file" => words.take_while(|w| w != "--").any(|w| {
            w == "--recursive"
                || (w.starts_with('-')
                    && !w.starts_with("--")
                    // `-o` takes a value: what follows it in the cluster is that value.
                    && w[1..].chars().take_while(|c| *c != 'o').any(|c| c == 'r'))
        }),
        _ => false,
    }
}

/// A reader that closes stdout (`rewrap ... | head`) ends the process with
/// [`EXIT_BROKEN_PIPE`] and no panic text, wherever the write was (the
/// printers here return [`BrokenPipe`]; this catches `println!` in the
/// commands and their libraries).
fn quiet_on_closed_output() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        let closed =
            message.starts_with("failed printing to std") && message.contains("Broken pipe");
        if closed {
            std::process::exit(EXIT_BROKEN_PIPE);
        }
        default(info);
    }));
}

/// Prints an error the way the AWS CLI does and picks the exit code.
pub(crate) fn report_error(e: &anyhow::Error) -> i32 {
    if let Some(op) = e.downcast_ref::<OpError>() {
        eprintln!("\n{op}");
        return kms_error_code(&op.error);
    }
    if let Some(item) = e.downcast_ref::<ItemError>() {
        if item.code != EXIT_BROKEN_PIPE {
            eprintln!("rewrap: {item}");
        }
        return item.code;
    }
    if e.downcast_ref::<UsageError>().is_some() {
        eprintln!("rewrap: {e:#}");
        return 252;
    }
    if e.downcast_ref::<ConfigError>().is_some() {
        eprintln!("rewrap: {e:#}");
        return 253;
    }
    eprintln!("rewrap: error: {e:#}");
    255
}
