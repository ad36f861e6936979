//! What the services' integration tests share.
#![allow(clippy::unwrap_used)]

use sqlx::postgres::PgConnectOptions;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// A TCP relay to the test's database that can be cut (connections dropped, new ones refused)
/// and restored, as a database restart or a lost network does.
pub struct Relay {
    pub port: u16,
    up: watch::Sender<bool>,
}

impl Relay {
    /// Options that reach the same database through the relay.
    pub fn options(&self, connect: &PgConnectOptions) -> PgConnectOptions {
        connect.clone().host("127.0.0.1").port(self.port)
    }

    pub async fn start(connect: &PgConnectOptions) -> Self {
        let target = format!("{}:{}", connect.get_host(), connect.get_port());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (up, seen) = watch::channel(true);
        tokio::spawn(relay(Some(listener), port, target, seen));
        Self { port, up }
    }

    /// Up: connections pass. Down: open ones are dropped and new ones refused.
    pub fn set(&self, up: bool) {
        self.up.send_replace(up);
    }
}

async fn relay(
    mut listener: Option<TcpListener>,
    port: u16,
    target: String,
    mut up: watch::Receiver<bool>,
) {
    loop {
        if let Some(l) = &listener {
            tokio::select! {
                accepted = l.accept() => {
                    if let Ok((client, _)) = accepted {
                        tokio::spawn(pipe(client, target.clone(), up.clone()));
                    }
                }
                _ = up.changed() => {}
            }
        } else if up.changed().await.is_err() {
            return;
        }
        let wanted = *up.borrow();
        if wanted != listener.is_some() {
            listener = if wanted {
                Some(TcpListener::bind(("127.0.0.1", port)).await.unwrap())
            } else {
                None
            };
        }
    }
}

async fn pipe(mut client: TcpStream, target: String, mut up: watch::Receiver<bool>) {
    let Ok(mut server) = TcpStream::connect(target).await else {
        return;
    };
    let cut = async {
        while *up.borrow_and_update() {
            if up.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        () = cut => {}
    }
}
