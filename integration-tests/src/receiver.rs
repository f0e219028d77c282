//! A small HTTP/1.1 server for the HTTP sink's tests: it answers every request by a policy
//! the test gives (so it can fail on purpose), keeps what it was sent, and can go down and
//! come back on the same port.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status it was answered with.
    pub status: u16,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The answer to a request: status and extra headers. The policy sees the request and how
/// many requests to the same path came before it.
pub type Policy = Arc<dyn Fn(&Request, usize) -> (u16, Vec<(String, String)>) + Send + Sync>;

pub struct Receiver {
    pub port: u16,
    policy: Policy,
    requests: Arc<Mutex<Vec<Request>>>,
    cancel: Option<CancellationToken>,
}

impl Receiver {
    /// Listens on a free port of 127.0.0.1.
    pub async fn start(policy: Policy) -> Receiver {
        let mut receiver = Receiver {
            port: crate::free_port(),
            policy,
            requests: Arc::new(Mutex::new(Vec::new())),
            cancel: None,
        };
        receiver.up().await;
        receiver
    }

    /// Starts answering again (after `down`), on the same port.
    pub async fn up(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind the receiver's port");
        let cancel = CancellationToken::new();
        let (policy, requests, stop) = (
            Arc::clone(&self.policy),
            Arc::clone(&self.requests),
            cancel.clone(),
        );
        sluice_core::task::spawn_in_span(async move {
            loop {
                let stream = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                };
                let (policy, requests, stop) =
                    (Arc::clone(&policy), Arc::clone(&requests), stop.clone());
                sluice_core::task::spawn_in_span(async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = serve(stream, policy, requests) => {}
                    }
                });
            }
        });
        self.cancel = Some(cancel);
    }

    /// Stops listening and drops every open connection: the endpoint is down.
    pub fn down(&mut self) {
        if let Some(cancel) = self.cancel.take() {
            cancel.cancel();
        }
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("requests").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.down();
    }
}

async fn serve(mut stream: TcpStream, policy: Policy, requests: Arc<Mutex<Vec<Request>>>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let path = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or("/")
            .to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 65536];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[head_end..head_end + length].to_vec();
        buf.drain(..head_end + length);
        let mut request = Request {
            path,
            headers,
            body,
            status: 0,
        };
        let (status, extra) = {
            let mut all = requests.lock().expect("requests");
            let earlier = all.iter().filter(|r| r.path == request.path).count();
            let answer = policy(&request, earlier);
            request.status = answer.0;
            all.push(request);
            answer
        };
        let mut response = format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\n");
        for (name, value) in extra {
            response.push_str(&format!("{name}: {value}\r\n"));
        }
        response.push_str(if (200..300).contains(&status) {
            "\r\nok"
        } else {
            "\r\nno"
        });
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}
