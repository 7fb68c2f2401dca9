//! An in-process relayd for tests: the real control plane, datapath and HTTP service on an
//! ephemeral loopback port, with a given configuration, stopped on drop.

use std::{
    net::{SocketAddr, TcpListener},
    sync::Arc,
    thread::JoinHandle,
    time::Duration,
};

use relay_userspace::{
    api::{self, ApiState},
    config::Config,
    datapath::{DatapathOptions, SocketDatapath},
    relay::Relay,
};
use serde_json::Value;

use crate::loadgen::http::{HttpClient, Response, Token};

/// The token every test relay accepts.
pub const TOKEN: &str = "test-token-0123456789abcdef";

/// A running relay.
pub struct TestRelay {
    /// The control API's address.
    pub addr: SocketAddr,
    /// A client with the right token.
    pub client: HttpClient,
    /// The relay itself (for direct inspection).
    pub relay: Arc<Relay>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TestRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRelay")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// A configuration for tests: loopback, the given port range, short timers.
pub fn config(port_min: u16, port_max: u16) -> Config {
    let mut config = Config::default();
    config.interfaces[0].port_min = port_min;
    config.interfaces[0].port_max = port_max;
    config.media.port_quarantine_secs = 0;
    config.media.latch_window_secs = 0;
    config.datapath.workers = 2;
    config
}

impl TestRelay {
    /// Starts a relay with `config` (validated) and the test token.
    ///
    /// # Panics
    /// When the configuration is invalid or the relay cannot start: a test bug.
    pub fn start(config: Config) -> Self {
        config.validate().expect("test configuration");
        let datapath = SocketDatapath::start(&DatapathOptions {
            workers: config.datapath.workers.max(1),
            cpus: Vec::new(),
            batch: config.datapath.batch,
        })
        .expect("datapath");
        let max_body = config.http.max_body_bytes;
        let relay = Arc::new(Relay::new(config, datapath));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the API port");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = ApiState::new(Arc::clone(&relay), TOKEN.to_owned(), None);
        let timeouts = Arc::clone(&relay);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let ticker = tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_millis(200));
                    loop {
                        tick.tick().await;
                        let relay = Arc::clone(&timeouts);
                        let _ =
                            tokio::task::spawn_blocking(move || relay.check_media_timeouts()).await;
                    }
                });
                let _ = axum::serve(listener, api::router(state, max_body))
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await;
                ticker.abort();
            });
        });
        let client = HttpClient::new(
            &format!("http://{addr}"),
            Some(Token::new(TOKEN.to_owned())),
            Duration::from_secs(5),
        )
        .expect("client");
        Self {
            addr,
            client,
            relay,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Sends a request with a JSON body (or none) and returns the response.
    ///
    /// # Panics
    /// When the request cannot be sent.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Response {
        let body = body.map(|b| serde_json::to_vec(b).expect("JSON"));
        self.client
            .request(method, path, body.as_deref())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// `call`, then parses the body as JSON.
    ///
    /// # Panics
    /// When the body is not JSON.
    pub fn json(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let response = self.call(method, path, body);
        let value = if response.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&response.body).unwrap_or_else(|e| {
                panic!(
                    "{method} {path}: body is not JSON ({e}): {}",
                    String::from_utf8_lossy(&response.body)
                )
            })
        };
        (response.status, value)
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
