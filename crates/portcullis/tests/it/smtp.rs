//! A real SMTP server for tests (mailin-embedded, on 127.0.0.1): it receives
//! every message Portcullis sends through lettre, and tests read links and codes
//! from what was delivered. It can refuse (`421`, `451`) while marked down, and a sink
//! can be started later on a port chosen in advance (the server "comes back").

use std::{
    net::{SocketAddr, TcpListener},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use mailin_embedded::{Handler, Response, Server, response};

/// One delivered message.
#[derive(Debug, Clone)]
pub struct Mail {
    /// Envelope recipients.
    pub to: Vec<String>,
    /// The whole message as received.
    pub raw: Vec<u8>,
}

impl Mail {
    fn parsed(&self) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default().parse(&self.raw).expect("a MIME message")
    }

    /// The subject.
    pub fn subject(&self) -> String {
        self.parsed().subject().unwrap_or_default().to_owned()
    }

    /// The plain-text part, decoded.
    pub fn text(&self) -> String {
        self.parsed().body_text(0).map(|t| t.into_owned()).unwrap_or_default()
    }

    /// The HTML part, decoded.
    pub fn html(&self) -> String {
        self.parsed().body_html(0).map(|t| t.into_owned()).unwrap_or_default()
    }

    /// The `From` header as sent.
    pub fn sender(&self) -> String {
        let p = self.parsed();
        let a = p.from().and_then(|a| a.first()).expect("a From");
        format!("{} <{}>", a.name().unwrap_or_default(), a.address().unwrap_or_default())
    }

    /// The first link of the text part.
    pub fn link(&self) -> String {
        let text = self.text();
        let start = text.find("http").expect("a link in the message");
        text[start..].split_whitespace().next().unwrap().to_owned()
    }

    /// The token of the first link.
    pub fn token(&self) -> String {
        let link = self.link();
        let url = url::Url::parse(&link).unwrap();
        url.query_pairs().find(|(k, _)| k == "token").map(|(_, v)| v.into_owned()).expect("a token")
    }

    /// The 6-digit code of the text part.
    pub fn code(&self) -> String {
        let text = self.text();
        let at = text.find("code: ").expect("a code in the message") + 6;
        text[at..at + 6].to_owned()
    }
}

#[derive(Clone)]
struct Collect {
    inbox: Arc<Mutex<Vec<Mail>>>,
    down: Arc<AtomicBool>,
    to: Vec<String>,
    buf: Vec<u8>,
}

impl Handler for Collect {
    fn helo(&mut self, _ip: std::net::IpAddr, _domain: &str) -> Response {
        if self.down.load(Ordering::SeqCst) { response::NO_SERVICE } else { response::OK }
    }

    fn mail(&mut self, _ip: std::net::IpAddr, _domain: &str, _from: &str) -> Response {
        // A pooled connection skips HELO: refuse the transaction too (451, retry).
        if self.down.load(Ordering::SeqCst) { response::INTERNAL_ERROR } else { response::OK }
    }

    fn data_start(&mut self, _domain: &str, _from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.to = to.to_vec();
        self.buf.clear();
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.buf.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let mail = Mail { to: std::mem::take(&mut self.to), raw: std::mem::take(&mut self.buf) };
        self.inbox.lock().unwrap().push(mail);
        response::OK
    }
}

/// A running SMTP server.
pub struct Sink {
    /// Where it listens.
    pub addr: SocketAddr,
    inbox: Arc<Mutex<Vec<Mail>>>,
    down: Arc<AtomicBool>,
}

/// A free loopback port, for a sink started later.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Sink {
    /// A sink on an ephemeral port.
    pub fn start() -> Self {
        Self::on(TcpListener::bind("127.0.0.1:0").unwrap())
    }

    /// A sink on `port` (chosen earlier with [`free_port`]).
    pub fn start_on(port: u16) -> Self {
        Self::on(TcpListener::bind(("127.0.0.1", port)).unwrap())
    }

    fn on(listener: TcpListener) -> Self {
        let addr = listener.local_addr().unwrap();
        let inbox = Arc::new(Mutex::new(Vec::new()));
        let down = Arc::new(AtomicBool::new(false));
        let handler = Collect { inbox: inbox.clone(), down: down.clone(), to: Vec::new(), buf: Vec::new() };
        let mut server = Server::new(handler);
        server.with_name("sink.test").with_num_threads(4).with_tcp_listener(listener);
        // It serves until the test process ends (the server has no stop).
        std::thread::spawn(move || {
            let _ = server.serve();
        });
        Self { addr, inbox, down }
    }

    /// `smtp://…` for `email.smtp_url`.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// While down, new connections get `421` and new messages `451`.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Every message to `to` so far.
    pub fn to(&self, to: &str) -> Vec<Mail> {
        self.inbox.lock().unwrap().iter().filter(|m| m.to.iter().any(|t| t == to)).cloned().collect()
    }

    /// Waits (up to 15 s) until `n` messages to `to` arrived; returns them all.
    pub async fn wait_for(&self, to: &str, n: usize) -> Vec<Mail> {
        self.wait_up_to(to, n, Duration::from_secs(15)).await
    }

    /// Waits up to `limit` until `n` messages to `to` arrived; returns them all.
    pub async fn wait_up_to(&self, to: &str, n: usize, limit: Duration) -> Vec<Mail> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let got = self.to(to);
            if got.len() >= n {
                return got;
            }
            assert!(std::time::Instant::now() < deadline, "{} of {n} messages to {to} arrived", got.len());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The newest message to `to`, waiting for the `n`th.
    pub async fn nth(&self, to: &str, n: usize) -> Mail {
        self.wait_for(to, n).await.into_iter().nth(n - 1).unwrap()
    }
}

/// Points a config at `sink`.
pub fn smtp(cfg: &mut portcullis::config::Config, url: &str) {
    cfg.email.transport = portcullis::config::MailTransport::Smtp;
    cfg.email.smtp_url = Some(url.to_owned());
    cfg.email.from = "Acme <no-reply@acme.test>".into();
    cfg.email.product_name = "Acme".into();
}
