//! The `chat-server` binary: configuration from the environment, logs and traces, the app on
//! `$HOST:$PORT`, a graceful stop on SIGTERM or Ctrl-C, and the last spans flushed on the way
//! out.

use std::net::SocketAddr;
use std::process::ExitCode;

use chat_server::{App, Config, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("chat-server: {err}");
            return ExitCode::from(2);
        }
    };
    let telemetry = telemetry::init(&config);
    let code = serve(config).await;
    telemetry.shutdown().await;
    code
}

async fn serve(config: Config) -> ExitCode {
    let addr = SocketAddr::new(config.listen.host, config.listen.port);
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(%addr, error = %err, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    let app = match App::build(config, listener).await {
        Ok(app) => app,
        Err(err) => {
            tracing::error!(error = %err, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(%addr, "listening");
    match app.run_until_stopped(shutdown_signal()).await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(err) => {
            tracing::error!(error = %err, "server failed");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM (Cloud Run stopping the instance) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
