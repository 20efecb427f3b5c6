//! Listening sockets: TCP and Unix, each accepting connections into their own tasks.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use socket2::TcpKeepalive;
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

use crate::config::ListenAddr;
use crate::forward::connection::{self, ConnectionShared};

/// How long, at shutdown, to wait for one more connection already queued by the kernel.
const BACKLOG_DRAIN: Duration = Duration::from_millis(10);

/// A bound listening socket.
#[derive(Debug)]
pub enum Listener {
    /// A TCP socket.
    Tcp(TcpListener),
    /// A Unix socket and its path, removed when the listener stops.
    Unix(UnixListener, PathBuf),
}

/// Why a listen address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("input.listen: cannot listen on {address}: {source}")]
pub struct BindError {
    /// The address as configured.
    pub address: String,
    /// The operating system's reason.
    pub source: io::Error,
}

impl Listener {
    /// Binds `address`. A Unix socket file left behind by an earlier run is replaced.
    ///
    /// # Errors
    ///
    /// [`BindError`] naming the address.
    pub async fn bind(address: &ListenAddr) -> Result<Self, BindError> {
        let bind_error = |source| BindError { address: address.to_string(), source };
        match address {
            ListenAddr::Tcp(address) => {
                TcpListener::bind(address.as_str()).await.map(Self::Tcp).map_err(bind_error)
            }
            ListenAddr::Unix(path) => {
                remove_stale_socket(path).map_err(bind_error)?;
                UnixListener::bind(path)
                    .map(|listener| Self::Unix(listener, path.clone()))
                    .map_err(bind_error)
            }
        }
    }

    /// The bound address: `ip:port` (with the actual port when 0 was asked) or `unix:/path`.
    pub fn local_addr(&self) -> String {
        match self {
            Self::Tcp(listener) => listener
                .local_addr()
                .map_or_else(|error| format!("unknown ({error})"), |addr| addr.to_string()),
            Self::Unix(_, path) => format!("unix:{}", path.display()),
        }
    }

    /// Accepts connections until `shared.shutdown` is cancelled, serving each in a task
    /// tracked by `connections`.
    pub(crate) async fn serve(self, shared: Arc<ConnectionShared>, connections: TaskTracker) {
        let local = self.local_addr();
        let mut failures = 0u32;
        loop {
            let accepted = tokio::select! {
                accepted = self.accept() => accepted,
                () = shared.shutdown.cancelled() => break,
            };
            match accepted {
                Ok(connection) => {
                    failures = 0;
                    spawn_connection(connection, &local, &shared, &connections);
                }
                Err(error) => {
                    // Running out of file descriptors is the usual cause; waiting lets
                    // connections close instead of spinning on the error.
                    failures = failures.saturating_add(1);
                    let wait = Duration::from_millis(10 << failures.min(7));
                    error!(listen = %local, %error, wait = ?wait, "accept failed");
                    tokio::time::sleep(wait).await;
                }
            }
        }
        // Clients whose connections the kernel has already completed may have sent data
        // believing it delivered: take them in too, and they are read like every other.
        while let Ok(Ok(connection)) = tokio::time::timeout(BACKLOG_DRAIN, self.accept()).await {
            spawn_connection(connection, &local, &shared, &connections);
        }
        if let Self::Unix(_, path) = &self {
            let _ = std::fs::remove_file(path);
        }
        info!(listen = %local, "stopped accepting");
    }

    async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Self::Tcp(listener) => {
                let (stream, peer) = listener.accept().await?;
                // Acks are small writes that a client waits for.
                stream.set_nodelay(true)?;
                // Keepalive finds peers that vanished (a rebooted node, a cut network), so
                // that their connections do not hold slots forever.
                let keepalive = TcpKeepalive::new()
                    .with_time(Duration::from_secs(60))
                    .with_interval(Duration::from_secs(10));
                socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive)?;
                Ok(Accepted::Tcp(stream, peer.to_string()))
            }
            Self::Unix(listener, path) => {
                let (stream, _) = listener.accept().await?;
                Ok(Accepted::Unix(stream, format!("unix:{}", path.display())))
            }
        }
    }
}

/// An accepted connection and a name for its peer.
enum Accepted {
    Tcp(tokio::net::TcpStream, String),
    Unix(tokio::net::UnixStream, String),
}

/// Serves an accepted connection in its own task, if a connection slot is free.
fn spawn_connection(
    accepted: Accepted,
    listener: &str,
    shared: &Arc<ConnectionShared>,
    tasks: &TaskTracker,
) {
    let Ok(slot) = Arc::clone(&shared.slots).try_acquire_owned() else {
        // Dropping the accepted stream closes it at once.
        shared.metrics.input_error("too_many_connections");
        if let Some(held_back) = shared.log_limiter.allow("too_many_connections") {
            warn!(
                listen = listener,
                held_back, "connection limit reached; closing new connections"
            );
        }
        return;
    };
    let shared = Arc::clone(shared);
    let listener = listener.to_owned();
    match accepted {
        Accepted::Tcp(stream, peer) => {
            let span = info_span!("connection", peer = %peer);
            let serve = async move {
                match shared.tls.clone() {
                    Some(acceptor) => serve_tls(acceptor, stream, &peer, &listener, shared).await,
                    None => connection::serve(stream, &peer, &listener, shared).await,
                }
                drop(slot);
            };
            tasks.spawn(serve.instrument(span));
        }
        Accepted::Unix(stream, peer) => {
            let span = info_span!("connection", peer = %peer);
            let serve = async move {
                connection::serve(stream, &peer, &listener, shared).await;
                drop(slot);
            };
            tasks.spawn(serve.instrument(span));
        }
    }
}

/// Runs the TLS handshake, then serves the connection inside it.
async fn serve_tls(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: &str,
    listener: &str,
    shared: Arc<ConnectionShared>,
) {
    let timeout = shared.idle_timeout;
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => connection::serve(stream, peer, listener, shared).await,
        Ok(Err(error)) => {
            shared.metrics.input_error("tls_handshake");
            if let Some(held_back) = shared.log_limiter.allow("tls_handshake") {
                warn!(peer, %error, held_back, "TLS handshake failed");
            }
        }
        Err(_) => shared.metrics.input_error("idle_timeout"),
    }
}

/// Removes a socket file left by an earlier run; any other kind of file is left alone, so that
/// binding fails with a clear error instead of deleting it.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) | Err(_) => Ok(()),
    }
}
