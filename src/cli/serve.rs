//! `rewrap serve`: runs the keystore as a KMS server speaking the AWS KMS
//! JSON 1.1 protocol (see [`rewrap::server`]).

use anyhow::Context as _;
use rewrap::server::{self, ServerConfig, ServiceBackend};
use rewrap::service::KmsService;
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// The `serve` command.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ServeCommand {
    /// Serves the keystore over the AWS KMS wire protocol (SigV4-authenticated).
    #[command(after_help = "Examples:\n  rewrap serve --listen 127.0.0.1:4000\n  \
        rewrap serve --listen 0.0.0.0:4443 --tls-cert cert.pem --tls-key key.pem\n  \
        aws kms list-keys --endpoint-url http://127.0.0.1:4000 --region us-east-1")]
    Serve(ServeArgs),
}

/// Options of `rewrap serve`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:4000", value_name = "ADDR")]
    pub(crate) listen: String,
    /// PEM certificate chain for TLS (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key for TLS (with --tls-cert).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Allow plain HTTP on a non-loopback address (credentials stay signed,
    /// but plaintext and data keys cross the network unencrypted).
    #[arg(long)]
    pub(crate) insecure_http: bool,
    /// Largest request body accepted, in bytes (larger: HTTP 413).
    #[arg(long, default_value_t = 256 * 1024, value_name = "BYTES")]
    pub(crate) max_body_bytes: usize,
    /// Seconds allowed for a request's headers (and a TLS handshake).
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub(crate) header_timeout: u64,
    /// Seconds allowed for a request's body, once its headers passed the
    /// authorization checks.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub(crate) body_timeout: u64,
    /// Seconds between checks for keys due for automatic rotation (0: never).
    #[arg(long, default_value_t = 3600, value_name = "SECS")]
    pub(crate) rotation_check_interval: u64,
    /// Most connections held at once; at the limit a new connection sheds
    /// the one that has waited longest without a verified request running.
    #[arg(long, default_value_t = 4096, value_name = "N")]
    pub(crate) max_connections: usize,
    /// Most connections held at once from one source address (more are
    /// refused with ThrottlingException).
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub(crate) max_connections_per_address: usize,
    /// Seconds to let requests in flight finish after SIGTERM / SIGINT.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub(crate) shutdown_grace: u64,
    /// TEST ONLY: shifts the service clock by this many days, to exercise
    /// automatic rotation without waiting a year. Never use in production.
    #[arg(long, hide = true, value_name = "DAYS", allow_hyphen_values = true)]
    pub(crate) debug_clock_offset_days: Option<i64>,
}

/// Runs `rewrap serve` until SIGTERM or SIGINT; returns the exit code.
pub(crate) fn run(cmd: ServeCommand, ctx: &super::Context) -> anyhow::Result<i32> {
    let ServeCommand::Serve(args) = cmd;
    let addr = resolve(&args.listen)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(server::load_tls(cert, key).context("loading TLS files")?),
        _ => None,
    };
    if tls.is_none() && !addr.ip().is_loopback() && !args.insecure_http {
        return Err(super::UsageError(format!(
            "refusing plain HTTP on {addr}, which is not a loopback address: \
             pass --tls-cert and --tls-key, or --insecure-http"
        ))
        .into());
    }
    let service = KmsService::open(&ctx.home(), ctx.extra_policies().as_deref())
        .map_err(|e| super::ConfigError(e.message))?;
    if let Some(days) = args.debug_clock_offset_days {
        eprintln!("rewrap serve: TEST ONLY: service clock shifted by {days} days");
        service.set_clock_offset_days(days);
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let config = ServerConfig {
        tls,
        max_body_bytes: args.max_body_bytes,
        header_timeout: Duration::from_secs(args.header_timeout.max(1)),
        body_timeout: Duration::from_secs(args.body_timeout.max(1)),
        rotation_check_interval: (args.rotation_check_interval > 0)
            .then(|| Duration::from_secs(args.rotation_check_interval)),
        max_connections: args.max_connections.max(1),
        max_connections_per_address: args.max_connections_per_address.max(1),
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
        // The default, which benches/server.rs measures.
        inline_operations: ServerConfig::default().inline_operations,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("rewrap-serve")
        .build()
        .context("starting the server runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "rewrap serve listening on {scheme}://{local}")?;
        out.flush()?;
        drop(out);
        server::serve(
            listener,
            std::sync::Arc::new(ServiceBackend(service)),
            config,
            server::shutdown_signal(),
        )
        .await
        .context("serving")?;
        eprintln!("rewrap serve: stopped");
        Ok(0)
    })
}

/// The address to listen on; a bad one is a usage error (252).
fn resolve(listen: &str) -> anyhow::Result<SocketAddr> {
    let usage = |what: &str| super::UsageError(format!("--listen {listen:?}: {what}"));
    listen
        .to_socket_addrs()
        .map_err(|_| usage("not an address"))?
        .next()
        .ok_or_else(|| usage("resolves to no address").into())
}
