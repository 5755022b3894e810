//! The `tollgate` server binary: arguments, logging, run until SIGTERM or
//! Ctrl-C. Everything else lives in the library.

use mimalloc::MiMalloc;
use std::process::ExitCode;
use tollgate::config::{self, Config, Env, Layered};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// `EX_USAGE` (sysexits.h): bad arguments or configuration.
const EX_USAGE: u8 = 64;

const HELP: &str = "\
tollgate: JWT auth with instant revocation in front of a cached task API

USAGE: tollgate [--config FILE] [--print-config] [--settings-table] [--openapi] [--graphql-schema]

  --config FILE     read KEY=VALUE settings from FILE (also: CONFIG_FILE);
                    the environment overrides the file, the file the defaults
  --print-config    print the effective configuration, secrets redacted, and exit
  --settings-table  print the settings as README.md's Markdown table, and exit
  --openapi         print the OpenAPI 3.1 document (docs/openapi.json), and exit
  --graphql-schema  print the GraphQL schema in SDL (docs/schema.graphql), and exit
  --help            this text

SETTINGS (environment variables; defaults in README.md or --settings-table):
";

/// What the command line asks for.
enum Invocation {
    /// Print this text and exit 0 (`--help`, `--openapi`, ...).
    Print(String),
    /// Load the configuration from `file` (and the environment); print it
    /// redacted and exit when `print_config`, else serve.
    Serve { file: Option<String>, print_config: bool },
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Invocation, String> {
    let mut file = std::env::var("CONFIG_FILE").ok().filter(|f| !f.is_empty());
    let mut print_config = false;
    while let Some(a) = args.next() {
        let text = match a.as_str() {
            "--print-config" => {
                print_config = true;
                continue;
            }
            "--config" => {
                file = Some(args.next().ok_or("--config needs a file")?);
                continue;
            }
            "-h" | "--help" => format!("{HELP}{}", config::settings_help()),
            "--settings-table" => config::settings_table(),
            "--openapi" => tollgate::http::openapi::render(),
            "--graphql-schema" => tollgate::graphql::sdl(),
            other => return Err(format!("unknown argument {other:?}")),
        };
        return Ok(Invocation::Print(text));
    }
    Ok(Invocation::Serve { file, print_config })
}

/// Defaults, then the file, then the environment; every bad value is
/// reported before the process exits.
fn load_config(file: Option<&str>) -> Result<Config, ExitCode> {
    let file_values = match file {
        None => Default::default(),
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| config::parse_file(&t))
            .map_err(|e| usage(&format!("config file {path}: {e}")))?,
    };
    Config::from_source(&Layered(Env, file_values)).map_err(|errors| {
        eprintln!("tollgate: invalid configuration:");
        for e in errors {
            eprintln!("  {e}");
        }
        ExitCode::from(EX_USAGE)
    })
}

fn main() -> ExitCode {
    let (file, print_config) = match parse_args(std::env::args().skip(1)) {
        Ok(Invocation::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Serve { file, print_config }) => (file, print_config),
        Err(e) => return usage(&e),
    };
    let config = match load_config(file.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if print_config {
        print!("{}", config.redacted());
        return ExitCode::SUCCESS;
    }
    tollgate::init_tracing(&config);
    if config.uses_dev_secret() {
        tracing::warn!("JWT_SECRET is unset: using the development secret; never do this in production");
    }
    serve(config)
}

/// Runs the server until SIGTERM or Ctrl-C.
fn serve(config: Config) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tollgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match tollgate::App::build(config).await {
            Ok(app) => {
                app.run(tollgate::http::server::shutdown_signal()).await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "start-up failed");
                eprintln!("tollgate: start-up failed: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("tollgate: {msg}\n\n{HELP}{}", config::settings_help());
    ExitCode::from(EX_USAGE)
}
