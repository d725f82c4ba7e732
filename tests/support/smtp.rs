//! An SMTP sink for tests: a real SMTP server on 127.0.0.1 that keeps every
//! message it accepts, and fails on demand.
//!
//! What it does:
//!
//! - Speaks SMTP through mailin (the state machine) and mailin-embedded (the
//!   server), so clients such as lettre go through EHLO, MAIL, RCPT, DATA
//!   and QUIT as with a real relay, and a message counts as delivered only
//!   when the final `250` after its data was sent.
//! - Keeps each accepted message: envelope sender, envelope recipients, and
//!   the raw RFC 5322 text as received (CRLF line ends, dot-unstuffed).
//! - Fails on demand: [`SmtpSink::go_down`] makes new connections refused
//!   and cuts open ones (a pooled client finds its connection dead);
//!   [`SmtpSink::refuse_next`] answers the next transactions' `DATA` with a
//!   4xx or 5xx code; [`SmtpSink::reject_recipient`] answers `RCPT TO` for
//!   one address with a code, other recipients unaffected.
//!
//! What it deliberately does not do:
//!
//! - No TLS, no STARTTLS, and no AUTH: mailin-embedded only offers AUTH
//!   after STARTTLS, and offering it would make it mandatory. Point the
//!   client at [`SmtpSink::url`] without credentials (lettre fails with
//!   "No compatible authentication mechanism" if it is given some).
//! - Refusals come at `DATA`, not after the message text: mailin stays in
//!   its data state after an error at the end of the text, so the client's
//!   following RSET or QUIT would be swallowed as message text.
//! - No relaying, no size limits, no MIME decoding (see
//!   [`ReceivedMail::header`] for raw header values).
//!
//! How: mailin-embedded listens on a private loopback port, with blocking
//! threads and no way to stop. The port tests see belongs to a small Tokio
//! proxy in front of it, which is what goes down and comes up, and which
//! stops (closing every connection) when the sink is dropped. mailin's
//! threads stay behind, idle, until the process ends: 17 per sink.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener as StdTcpListener};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mailin_embedded::{Handler, Response, Server, SslConfig, response};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// How many SMTP sessions mailin serves at once. Idle pooled connections
/// hold one each; lettre's pool keeps at most 10 by default.
const SESSIONS: u32 = 16;

/// A message the sink accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedMail {
    /// The envelope sender (`MAIL FROM`), without angle brackets.
    pub from: String,
    /// The envelope recipients (`RCPT TO`), in order.
    pub to: Vec<String>,
    /// The message as sent: headers, blank line, body, CRLF line ends.
    pub data: String,
}

impl ReceivedMail {
    /// The raw value of the first header with this name (case-insensitive),
    /// folded lines joined, encoded words left as they are.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default().replace("\r\n ", " ").replace("\r\n\t", " ");
        head.split("\r\n").find_map(|line| {
            let (field, value) = line.split_once(':')?;
            field.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
        })
    }

    /// The text after the headers.
    pub fn body(&self) -> &str {
        self.data.split_once("\r\n\r\n").map_or("", |(_, body)| body)
    }
}

#[derive(Default)]
struct SinkState {
    messages: Vec<ReceivedMail>,
    refusals: VecDeque<u16>,
    rejected_recipients: HashMap<String, u16>,
}

type SharedState = Arc<Mutex<SinkState>>;

fn lock(state: &SharedState) -> MutexGuard<'_, SinkState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running SMTP sink. The port closes when this is dropped.
pub struct SmtpSink {
    port: u16,
    upstream: SocketAddr,
    state: SharedState,
    runtime: Handle,
    /// The proxy's accept loop while the sink is up.
    front: Mutex<Option<Front>>,
}

/// The running proxy: a way to stop it and its task, which ends once the
/// listener is closed and every relayed connection is gone.
struct Front {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl SmtpSink {
    /// Starts a sink on a free port of 127.0.0.1. Must be called inside a
    /// Tokio runtime (the proxy in front of the SMTP server runs on it).
    pub fn start() -> anyhow::Result<SmtpSink> {
        let runtime = Handle::try_current().context("SmtpSink::start must run inside a Tokio runtime")?;
        let state = SharedState::default();

        let upstream_listener = StdTcpListener::bind("127.0.0.1:0").context("bind the SMTP server to 127.0.0.1")?;
        let upstream = upstream_listener.local_addr()?;
        let mut server = Server::new(SinkHandler::new(Arc::clone(&state)));
        server
            .with_name("kanpa-smtp-sink")
            .with_ssl(SslConfig::None)
            .map_err(|error| anyhow::anyhow!("configure the SMTP server: {error}"))?
            .with_num_threads(SESSIONS)
            .with_tcp_listener(upstream_listener);
        std::thread::Builder::new()
            .name("smtp-sink".to_owned())
            .spawn(move || {
                if let Err(error) = server.serve() {
                    eprintln!("SMTP sink stopped: {error}");
                }
            })
            .context("start the SMTP server thread")?;

        let listener = bind_front(&runtime, 0)?;
        let sink = SmtpSink { port: listener.local_addr()?.port(), upstream, state, runtime, front: Mutex::new(None) };
        sink.run_front(listener);
        Ok(sink)
    }

    /// A lettre URL for a plaintext connection:
    /// `smtp://127.0.0.1:PORT` (lettre 0.11 takes no `tls=none`; leaving
    /// `tls` out means no TLS).
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The port tests connect to (the same after `go_down`/`come_up`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every message accepted so far, in order.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        lock(&self.state).messages.clone()
    }

    /// Waits until at least `count` messages were accepted, checking every
    /// 20 ms, and returns them all; fails after `timeout`.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> anyhow::Result<Vec<ReceivedMail>> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= count {
                return Ok(messages);
            }
            if Instant::now() >= deadline {
                bail!("expected {count} messages within {timeout:?}, got {}", messages.len());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The sink goes away: when this returns, new connections are refused
    /// and open ones are closed. Messages already accepted stay.
    pub async fn go_down(&self) {
        let front = self.front_slot().take();
        if let Some(front) = front {
            let _ = front.stop.send(());
            let _ = front.task.await;
        }
    }

    /// The sink comes back on the same port.
    pub fn come_up(&self) -> anyhow::Result<()> {
        if self.front_slot().is_some() {
            return Ok(());
        }
        let listener = bind_front(&self.runtime, self.port)?;
        self.run_front(listener);
        Ok(())
    }

    /// Answers the `DATA` command of the next `count` transactions with
    /// `code` (451, 452: temporary; 550, 554: permanent). Nothing of those
    /// transactions is kept. Calls queue up.
    pub fn refuse_next(&self, count: usize, code: u16) {
        lock(&self.state).refusals.extend(std::iter::repeat_n(code, count));
    }

    /// Answers `RCPT TO:<address>` (case-insensitive) with `code`, e.g. 550,
    /// until [`SmtpSink::accept_recipient`].
    pub fn reject_recipient(&self, address: &str, code: u16) {
        lock(&self.state).rejected_recipients.insert(address.to_lowercase(), code);
    }

    /// Undoes [`SmtpSink::reject_recipient`].
    pub fn accept_recipient(&self, address: &str) {
        lock(&self.state).rejected_recipients.remove(&address.to_lowercase());
    }

    fn front_slot(&self) -> MutexGuard<'_, Option<Front>> {
        self.front.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run_front(&self, listener: TcpListener) {
        let upstream = self.upstream;
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = self.runtime.spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    // Asked to stop, or the sink was dropped.
                    _ = &mut stopped => break,
                    accepted = listener.accept() => match accepted {
                        Ok((client, _)) => {
                            while connections.try_join_next().is_some() {}
                            connections.spawn(relay(client, upstream));
                        }
                        // Out of file descriptors and the like.
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    },
                }
            }
            drop(listener);
            connections.shutdown().await;
        });
        *self.front_slot() = Some(Front { stop, task });
    }
}

fn bind_front(runtime: &Handle, port: u16) -> anyhow::Result<TcpListener> {
    // Tokio sockets register with the runtime's reactor.
    let _runtime = runtime.enter();
    let socket = TcpSocket::new_v4()?;
    // The port may hold connections in TIME_WAIT from before go_down.
    socket.set_reuseaddr(true)?;
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .with_context(|| format!("bind the SMTP sink to 127.0.0.1:{port}"))?;
    Ok(socket.listen(128)?)
}

/// Passes bytes both ways between a client and mailin until either closes.
/// Both legs disable Nagle's algorithm: SMTP is a chatty request/answer
/// protocol, and with it each answer would wait out the peer's delayed ACK.
async fn relay(mut client: TcpStream, upstream: SocketAddr) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        // The proxy stops on its own once told; nothing to wait for here.
        if let Some(front) = self.front_slot().take() {
            let _ = front.stop.send(());
        }
    }
}

impl std::fmt::Debug for SmtpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSink").field("port", &self.port).finish_non_exhaustive()
    }
}

/// mailin's callbacks for one SMTP session (mailin-embedded clones the
/// handler for each connection).
#[derive(Clone)]
struct SinkHandler {
    state: SharedState,
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
}

impl SinkHandler {
    fn new(state: SharedState) -> SinkHandler {
        SinkHandler { state, from: String::new(), to: Vec::new(), data: Vec::new() }
    }
}

impl Handler for SinkHandler {
    fn helo(&mut self, _ip: IpAddr, _domain: &str) -> Response {
        response::OK
    }

    fn mail(&mut self, _ip: IpAddr, _domain: &str, from: &str) -> Response {
        self.from = from.to_owned();
        self.to.clear();
        self.data.clear();
        response::OK
    }

    fn rcpt(&mut self, to: &str) -> Response {
        match lock(&self.state).rejected_recipients.get(&to.to_lowercase()) {
            Some(&code) => Response::custom(code, format!("<{to}>: recipient rejected")),
            None => response::OK,
        }
    }

    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        if let Some(code) = lock(&self.state).refusals.pop_front() {
            return Response::custom(code, "transaction refused".to_owned());
        }
        self.from = from.to_owned();
        self.to = to.to_vec();
        self.data.clear();
        response::OK
    }

    fn data(&mut self, buffer: &[u8]) -> io::Result<()> {
        self.data.extend_from_slice(buffer);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let mail = ReceivedMail {
            from: std::mem::take(&mut self.from),
            to: std::mem::take(&mut self.to),
            data: String::from_utf8_lossy(&std::mem::take(&mut self.data)).into_owned(),
        };
        lock(&self.state).messages.push(mail);
        response::OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lettre::message::Mailbox;
    use lettre::transport::smtp::Error as SmtpError;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    fn transport(sink: &SmtpSink) -> AsyncSmtpTransport<Tokio1Executor> {
        AsyncSmtpTransport::<Tokio1Executor>::from_url(&sink.url())
            .expect("the sink's URL is one lettre takes")
            .timeout(Some(Duration::from_secs(5)))
            .build()
    }

    fn message(to: &str, subject: &str) -> Message {
        let from: Mailbox = "Kanpa <noreply@kanpa.example>".parse().expect("mailbox");
        let to: Mailbox = to.parse().expect("mailbox");
        Message::builder()
            // lettre adds a Message-ID only when asked to.
            .message_id(None)
            .from(from)
            .to(to)
            .subject(subject)
            .body("ご支援ありがとうございます。\r\nThank you for your pledge.".to_owned())
            .expect("message")
    }

    async fn send(transport: &AsyncSmtpTransport<Tokio1Executor>, message: Message) -> Result<(), SmtpError> {
        transport.send(message).await.map(|_| ())
    }

    #[tokio::test]
    async fn a_sent_message_is_kept_with_envelope_and_headers() {
        let sink = SmtpSink::start().expect("start the sink");
        let transport = transport(&sink);
        send(&transport, message("patron@example.com", "Your pledge")).await.expect("delivered");
        let messages = sink.wait_for(1, Duration::from_secs(5)).await.expect("one message");
        let mail = &messages[0];
        assert_eq!(mail.from, "noreply@kanpa.example");
        assert_eq!(mail.to, ["patron@example.com"]);
        assert_eq!(mail.header("subject").as_deref(), Some("Your pledge"));
        assert_eq!(mail.header("From").as_deref(), Some("Kanpa <noreply@kanpa.example>"));
        assert_eq!(mail.header("to").as_deref(), Some("patron@example.com"));
        assert!(mail.header("message-id").is_some());
        assert!(mail.header("date").is_some());
        assert!(!mail.body().is_empty());
        assert!(sink.wait_for(2, Duration::from_millis(100)).await.is_err(), "only one message");
    }

    #[tokio::test]
    async fn while_down_sending_fails_to_connect_and_works_again_when_up() {
        let sink = SmtpSink::start().expect("start the sink");
        let transport = transport(&sink);
        send(&transport, message("a@example.com", "before")).await.expect("delivered");

        sink.go_down().await;
        let error = send(&transport, message("b@example.com", "while down")).await.expect_err("the sink is down");
        assert!(!error.is_transient() && !error.is_permanent(), "a connection error, not an SMTP answer: {error:?}");
        assert!(error.to_string().contains("refused"), "{error}");
        assert!(tokio::net::TcpStream::connect(("127.0.0.1", sink.port())).await.is_err(), "connections are refused");

        sink.come_up().expect("come back up");
        send(&transport, message("c@example.com", "after")).await.expect("delivered again");
        let subjects: Vec<Option<String>> = sink.messages().iter().map(|mail| mail.header("subject")).collect();
        assert_eq!(subjects, [Some("before".to_owned()), Some("after".to_owned())]);
    }

    #[tokio::test]
    async fn refused_transactions_are_transient_or_permanent_by_code() {
        let sink = SmtpSink::start().expect("start the sink");
        let transport = transport(&sink);
        sink.refuse_next(1, 451);
        let error = send(&transport, message("a@example.com", "first try")).await.expect_err("refused");
        assert!(error.is_transient(), "451 is temporary: {error:?}");
        send(&transport, message("a@example.com", "second try")).await.expect("the retry is delivered");

        sink.refuse_next(1, 554);
        let error = send(&transport, message("a@example.com", "refused for good")).await.expect_err("refused");
        assert!(error.is_permanent(), "554 is permanent: {error:?}");
        let messages = sink.messages();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].header("subject").as_deref(), Some("second try"));
    }

    #[tokio::test]
    async fn a_rejected_recipient_fails_alone() {
        let sink = SmtpSink::start().expect("start the sink");
        let transport = transport(&sink);
        sink.reject_recipient("Gone@Example.com", 550);
        let error = send(&transport, message("gone@example.com", "to the gone")).await.expect_err("rejected");
        assert!(error.is_permanent(), "550 is permanent: {error:?}");
        assert_eq!(error.status().map(u16::from), Some(550));
        send(&transport, message("here@example.com", "to the living")).await.expect("other recipients are unaffected");
        sink.accept_recipient("gone@example.com");
        send(&transport, message("gone@example.com", "back again")).await.expect("accepted again");
        let recipients: Vec<Vec<String>> = sink.messages().into_iter().map(|mail| mail.to).collect();
        assert_eq!(recipients, [["here@example.com"], ["gone@example.com"]]);
    }
}
