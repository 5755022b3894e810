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

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut file = std::env::var("CONFIG_FILE").ok().filter(|f| !f.is_empty());
    let mut print = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--print-config" => print = true,
            "--config" => match args.next() {
                Some(f) => file = Some(f),
                None => return usage("--config needs a file"),
            },
            "-h" | "--help" => {
                print!("{HELP}{}", config::settings_help());
                return ExitCode::SUCCESS;
            }
            "--settings-table" => {
                print!("{}", config::settings_table());
                return ExitCode::SUCCESS;
            }
            "--openapi" => {
                print!("{}", tollgate::http::openapi::render());
                return ExitCode::SUCCESS;
            }
            "--graphql-schema" => {
                print!("{}", tollgate::graphql::sdl());
                return ExitCode::SUCCESS;
            }
            other => return usage(&format!("unknown argument {other:?}")),
        }
    }
    let file_values = match &file {
        None => Default::default(),
        Some(path) => {
            match std::fs::read_to_string(path).map_err(|e| e.to_string()).and_then(|t| config::parse_file(&t)) {
                Ok(v) => v,
                Err(e) => return usage(&format!("config file {path}: {e}")),
            }
        }
    };
    let config = match Config::from_source(&Layered(Env, file_values)) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("tollgate: invalid configuration:");
            for e in errors {
                eprintln!("  {e}");
            }
            return ExitCode::from(EX_USAGE);
        }
    };
    if print {
        print!("{}", config.redacted());
        return ExitCode::SUCCESS;
    }
    tollgate::init_tracing(&config);
    if config.uses_dev_secret() {
        tracing::warn!("JWT_SECRET is unset: using the development secret; never do this in production");
    }
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
