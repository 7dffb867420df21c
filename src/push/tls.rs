//! HTTPS for the endpoint when `push.tls_cert_file`/`tls_key_file` are set:
//! rustls (the TLS stack reqwest already brings), handshakes done off the accept
//! loop so a slow client cannot hold up the others.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::TlsFiles;

/// The longest a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` over TLS on `listener` until `shutdown`.
pub fn serve(
    listener: TcpListener,
    files: &TlsFiles,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(Arc::new(server_config(files)?));
    let local = listener.local_addr()?;
    let (sender, receiver) = mpsc::channel(64);
    let accepting = shutdown.clone();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = accepting.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, peer)) = accepted else {
                continue;
            };
            let (acceptor, sender) = (acceptor.clone(), sender.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = sender.send((tls, peer)).await;
                    }
                    _ => tracing::debug!(%peer, "A TLS handshake failed or took too long."),
                }
            });
        }
    });
    let handshaken = Handshaken { receiver, local };
    tokio::spawn(async move {
        let served = axum::serve(handshaken, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(err) = served {
            tracing::error!(error = %err, "The SCIM listener failed.");
        }
    });
    Ok(())
}

fn server_config(files: &TlsFiles) -> std::io::Result<ServerConfig> {
    let invalid = |what: &str, err: &dyn std::fmt::Display| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{what}: {err}"))
    };
    let chain = CertificateDer::pem_slice_iter(&files.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| invalid("push.tls_cert_file", &err))?;
    let key = PrivateKeyDer::from_pem_slice(files.key_pem.expose().as_bytes())
        .map_err(|err| invalid("push.tls_key_file", &err))?;
    ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|err| invalid("TLS", &err))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|err| invalid("push.tls_cert_file and tls_key_file", &err))
}

/// Connections whose handshake is done, for axum to serve.
struct Handshaken {
    receiver: mpsc::Receiver<(TlsStream<TcpStream>, std::net::SocketAddr)>,
    local: std::net::SocketAddr,
}

impl axum::serve::Listener for Handshaken {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.receiver.recv().await {
            Some(connection) => connection,
            // The accept loop ended (shutdown): wait for the graceful shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
