//! A TCP server on the loopback interface whose tasks all end when it is dropped, so a bench
//! run that fails or times out leaves nothing running.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tracing::debug;

/// A listener on `127.0.0.1` with an ephemeral port, serving each connection in its own task.
#[derive(Debug)]
pub struct LoopbackServer {
    address: SocketAddr,
    /// The accept loop; dropping it aborts the loop and, with it, every connection task.
    _tasks: JoinSet<()>,
}

impl LoopbackServer {
    /// Binds and starts accepting; `serve` is called for every connection.
    ///
    /// # Errors
    ///
    /// When the port cannot be bound.
    pub async fn start<F, Fut>(serve: F) -> std::io::Result<Self>
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let address = listener.local_addr()?;
        let mut tasks = JoinSet::new();
        tasks.spawn(accept_loop(listener, serve));
        Ok(Self { address, _tasks: tasks })
    }

    /// The address the server listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

async fn accept_loop<F, Fut>(listener: TcpListener, serve: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                // Small writes such as HTTP answers must not wait for Nagle's algorithm.
                let _ = stream.set_nodelay(true);
                connections.spawn(serve(stream));
            }
            Err(error) => debug!(%error, "accept failed"),
        }
        while connections.try_join_next().is_some() {}
    }
}
