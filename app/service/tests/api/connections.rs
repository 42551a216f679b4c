//! Connection handling on the real listeners: the header-read, body-read, write and idle timeouts, the bound on open
//! connections (and the admin listener beside it), and the requests rejected before routing, each answered and
//! counted.
//! Raw TCP where a client library would hide what the server does (how it closes, what it answers).

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::{spawn_with, test_config, TestApp};

const HEALTHCHECK: &[u8] = b"GET /healthcheck HTTP/1.1\r\nHost: test\r\n\r\n";

fn addr(base: &str) -> String {
    base.trim_start_matches("http://").to_string()
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(addr(&app.api)).await.expect("the API accepts")
}

/// Reads until the server closes, for at most `limit`; `None` if it was still open then.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut answer = Vec::new();
    match tokio::time::timeout(limit, stream.read_to_end(&mut answer)).await {
        Ok(Ok(_)) => Some(answer),
        // A reset after the answer also means closed; what arrived before it is kept.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => Some(answer),
        Ok(Err(e)) => panic!("read failed: {e}"),
        Err(_) => None,
    }
}

/// Reads one response with a `content-length` body off a keep-alive connection: (head, body).
async fn read_response(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().unwrap())
                })
                .expect("a content-length");
            while buf.len() < end + 4 + length {
                let n = stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "closed mid-body: {head}");
                buf.extend_from_slice(&chunk[..n]);
            }
            return (head, buf[end + 4..end + 4 + length].to_vec());
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("a response within 5 s")
            .unwrap();
        assert!(n > 0, "closed before a response: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Splits a raw answer into its head (lowercased) and body.
fn split_answer(answer: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(answer).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_ascii_lowercase(), body.to_string())
}

fn rejected(app_metrics: &crate::helpers::Metrics, reason: &str) -> f64 {
    app_metrics.value_or_zero(
        "http_server_rejected_requests_total",
        &[("listener", "api"), ("reason", reason)],
    )
}

/// Waits until a counter of the API listener reaches `want` (connection-level counts are recorded when the
/// connection ends, just after the client saw it close).
async fn wait_for_count(app: &TestApp, name: &str, labels: &[(&str, &str)], want: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let value = app.metrics().await.value_or_zero(name, labels);
        if value >= want || Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_client_trickling_its_request_head_is_cut_off_after_the_header_read_timeout() {
    let mut config = test_config();
    config.header_read_timeout = Duration::from_millis(1000);
    config.idle_timeout = Duration::from_secs(30);
    let app = spawn_with(config).await;
    let stream = connect(&app).await;
    let (mut reader, mut writer) = stream.into_split();
    // One byte of the head every 2 s, as a slowloris client sends it.
    let trickle = tokio::spawn(async move {
        for byte in HEALTHCHECK {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(6), reader.read_to_end(&mut answer)).await;
    trickle.abort();
    assert!(
        read.is_ok(),
        "the connection was still open {:?} after the first byte (header read timeout 1 s)",
        started.elapsed()
    );
    let (head, body) = split_answer(&answer);
    assert!(head.starts_with("http/1.1 408"), "{head}");
    assert!(head.contains("x-request-id: "), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    let body: Value = serde_json::from_str(&body).expect("a JSON body");
    assert_eq!(body["status"], "error");
    let count = wait_for_count(
        &app,
        "http_server_rejected_requests_total",
        &[("listener", "api"), ("reason", "header_timeout")],
        1.0,
    )
    .await;
    assert_eq!(count, 1.0);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout_and_not_before() {
    let mut config = test_config();
    config.header_read_timeout = Duration::from_millis(500);
    config.idle_timeout = Duration::from_secs(2);
    let app = spawn_with(config).await;
    let mut stream = connect(&app).await;
    stream.write_all(HEALTHCHECK).await.unwrap();
    let (head, body) = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"OK");
    // Idle for longer than the header read timeout: that one counts from a request's first byte, not from the
    // previous response, so the connection is still there for the next request.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stream.write_all(HEALTHCHECK).await.unwrap();
    let (head, _) = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Then nothing more: closed once the idle timeout has passed, without an answer (nothing was asked).
    let answer = read_until_closed(&mut stream, Duration::from_secs(6)).await;
    assert_eq!(
        answer.as_deref(),
        Some(&b""[..]),
        "the idle connection was not closed within 6 s (idle timeout 2 s)"
    );
    // A connection that never sends anything is closed the same way.
    let mut silent = connect(&app).await;
    let answer = read_until_closed(&mut silent, Duration::from_secs(6)).await;
    assert_eq!(answer.as_deref(), Some(&b""[..]), "a silent connection stayed open");
    let count = wait_for_count(&app, "http_server_idle_timeouts_total", &[("listener", "api")], 2.0).await;
    assert_eq!(count, 2.0);
}

#[tokio::test]
async fn at_the_connection_limit_new_connections_get_503_and_are_counted_while_admin_still_answers() {
    let mut config = test_config();
    config.max_connections = 4;
    let app = spawn_with(config).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = connect(&app).await;
        stream.write_all(HEALTHCHECK).await.unwrap();
        let (head, _) = read_response(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        held.push(stream);
    }

    let mut extra = connect(&app).await;
    extra.write_all(HEALTHCHECK).await.unwrap();
    let answer = read_until_closed(&mut extra, Duration::from_secs(5))
        .await
        .expect("the connection over the limit is closed");
    let (head, body) = split_answer(&answer);
    assert!(head.starts_with("http/1.1 503"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    let body: Value = serde_json::from_str(&body).expect("a JSON body");
    assert_eq!(body["status"], "error");

    // The admin listener has its own bound: it answers while the API is full.
    let metrics = app.metrics().await;
    let api = [("listener", "api")];
    assert_eq!(metrics.value("http_server_rejected_connections_total", &api), Some(1.0));
    assert_eq!(metrics.value("http_server_open_connections", &api), Some(4.0));
    assert_eq!(metrics.value("http_server_connection_max", &api), Some(4.0));
    assert_eq!(
        metrics.value("http_server_open_connections", &[("listener", "admin")]),
        Some(1.0),
        "the scrape's own connection"
    );

    // A connection that closes makes room for a new one.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut stream = connect(&app).await;
        stream.write_all(HEALTHCHECK).await.unwrap();
        let answer = read_until_closed(&mut stream, Duration::from_millis(500)).await;
        match answer {
            // Still full: the closed connection's slot is not free yet.
            Some(a) if a.starts_with(b"HTTP/1.1 503") => {}
            // Open after an answer: served (keep-alive).
            None => break,
            Some(a) => panic!("unexpected answer {:?}", String::from_utf8_lossy(&a)),
        }
        assert!(Instant::now() < deadline, "no slot came free after a connection closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn oversized_headers_get_a_json_431_with_a_request_id_and_are_counted() {
    let app = spawn_with(test_config()).await;
    // Over APP_MAX_HEADER_BYTES (16 KiB by default): our answer.
    let response = app
        .client
        .get(format!("{}/healthcheck", app.api))
        .header("x-filler", "a".repeat(20_000))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "error");
    assert!(body["message"].as_str().unwrap().contains("16384"), "{body}");
    assert_eq!(rejected(&app.metrics().await, "header_too_large"), 1.0);

    // Past hyper's own limit on a request head, hyper answers (without a body) and it is still counted.
    let mut stream = connect(&app).await;
    let request = format!(
        "GET /healthcheck HTTP/1.1\r\nHost: test\r\nx-filler: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let _ = stream.write_all(request.as_bytes()).await;
    let answer = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("closed after the answer");
    assert!(
        answer.starts_with(b"HTTP/1.1 431"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    let count = wait_for_count(
        &app,
        "http_server_rejected_requests_total",
        &[("listener", "api"), ("reason", "header_too_large")],
        2.0,
    )
    .await;
    assert_eq!(count, 2.0);
}

#[tokio::test]
async fn a_long_uri_gets_a_json_414_with_a_request_id_and_is_counted() {
    let app = spawn_with(test_config()).await;
    let response = app
        .client
        .get(format!("{}/get/{}", app.api, "k".repeat(10_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 414);
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "error");
    assert!(body["message"].as_str().unwrap().contains("8192"), "{body}");
    let metrics = app.metrics().await;
    assert_eq!(rejected(&metrics, "uri_too_long"), 1.0);
    // Rejected before routing: not an API request of the SLOs.
    assert_eq!(
        metrics.value_or_zero(
            "http_server_request_duration_seconds_count",
            &[
                ("http_request_method", "GET"),
                ("http_route", "unmatched"),
                ("http_response_status_code", "414")
            ]
        ),
        0.0
    );
}

#[tokio::test]
async fn a_malformed_request_is_answered_400_by_the_parser_and_counted() {
    let app = spawn_with(test_config()).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /healthcheck HTTP/1.1\r\nHost: test\r\nthis is not a header\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("closed after the answer");
    assert!(
        answer.starts_with(b"HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    let count = wait_for_count(
        &app,
        "http_server_rejected_requests_total",
        &[("listener", "api"), ("reason", "malformed")],
        1.0,
    )
    .await;
    assert_eq!(count, 1.0);
}

#[tokio::test]
async fn shutdown_closes_idle_and_silent_connections_at_once() {
    // The default idle timeout (60 s) is far longer than the shutdown may take.
    let mut app = spawn_with(test_config()).await;
    let mut idle = connect(&app).await;
    idle.write_all(HEALTHCHECK).await.unwrap();
    let (head, _) = read_response(&mut idle).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut silent = connect(&app).await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let (result, took) = app.shutdown().await;
    result.expect("clean shutdown");
    assert!(
        took < Duration::from_secs(5),
        "shutdown waited for idle connections: {took:?}"
    );
    for (what, stream) in [("keep-alive", &mut idle), ("silent", &mut silent)] {
        let answer = read_until_closed(stream, Duration::from_secs(1)).await;
        assert_eq!(
            answer.as_deref(),
            Some(&b""[..]),
            "the {what} connection was not closed"
        );
    }
}

/// The head of a `POST /set` announcing a body of `length` bytes.
fn set_head(length: usize) -> String {
    format!("POST /set HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n")
}

/// Sends a `POST /set` head at once, then its body one byte per `every`, as a slow-body client does; stops when the
/// server closes. Returns the read half.
async fn trickle_body(app: &TestApp, every: Duration) -> (tokio::net::tcp::OwnedReadHalf, tokio::task::JoinHandle<()>) {
    let body = br#"{"key":"trickle","value":"a slow client"}"#;
    let (reader, mut writer) = connect(app).await.into_split();
    writer.write_all(set_head(body.len()).as_bytes()).await.unwrap();
    let trickle = tokio::spawn(async move {
        for byte in body {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    });
    (reader, trickle)
}

#[tokio::test]
async fn a_client_trickling_its_request_body_gets_a_json_408_after_the_body_read_timeout_and_is_counted() {
    let mut config = test_config();
    config.body_read_timeout = Duration::from_millis(1000);
    config.idle_timeout = Duration::from_secs(30);
    let app = spawn_with(config).await;
    let started = Instant::now();
    let (mut reader, trickle) = trickle_body(&app, Duration::from_secs(2)).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(6), reader.read_to_end(&mut answer)).await;
    trickle.abort();
    assert!(
        read.is_ok(),
        "the connection was still open {:?} after the head (body read timeout 1 s)",
        started.elapsed()
    );
    let (head, body) = split_answer(&answer);
    assert!(head.starts_with("http/1.1 408"), "{head}");
    assert!(head.contains("x-request-id: "), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    let body: Value = serde_json::from_str(&body).expect("a JSON body");
    assert_eq!(body["status"], "error");
    assert!(body["message"].as_str().unwrap().contains("1000 ms"), "{body}");
    let count = wait_for_count(
        &app,
        "http_server_rejected_requests_total",
        &[("listener", "api"), ("reason", "body_timeout")],
        1.0,
    )
    .await;
    assert_eq!(count, 1.0);
}

#[tokio::test]
async fn a_client_that_never_reads_its_responses_is_disconnected_after_the_write_timeout() {
    let mut config = test_config();
    config.write_timeout = Duration::from_millis(1000);
    config.idle_timeout = Duration::from_secs(30);
    let app = spawn_with(config).await;
    // A small receive window, so that the socket buffers between us fill after a few responses.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr(&app.api).parse().unwrap()).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // Pipelined requests for a response of about 12 KiB each, never read: megabytes the client will not take.
    let requests = b"GET /openapi.json HTTP/1.1\r\nHost: test\r\n\r\n".repeat(1000);
    let pipeline = tokio::spawn(async move {
        let _ = writer.write_all(&requests).await;
        // Keeps the sending side open: the server must not see the client go away.
        std::future::pending::<()>().await;
    });
    let api = [("listener", "api")];
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.metrics().await.value("http_server_open_connections", &api),
        Some(1.0),
        "the connection is open, its responses stuck"
    );
    let deadline = Instant::now() + Duration::from_secs(6);
    while app.metrics().await.value("http_server_open_connections", &api) != Some(0.0) {
        assert!(
            Instant::now() < deadline,
            "the connection was still open 6 s after its responses stalled (write timeout 1 s)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let count = wait_for_count(
        &app,
        "http_server_rejected_requests_total",
        &[("listener", "api"), ("reason", "write_timeout")],
        1.0,
    )
    .await;
    assert_eq!(count, 1.0);
    // The client sees the end too: what reached it, then a close or a reset.
    let mut sink = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut sink)).await;
    pipeline.abort();
    assert!(end.is_ok(), "the client's side was still open");
}

#[tokio::test]
async fn at_the_connection_limit_trickling_bodies_do_not_keep_new_clients_out() {
    let mut config = test_config();
    config.max_connections = 4;
    config.body_read_timeout = Duration::from_millis(1000);
    config.idle_timeout = Duration::from_secs(30);
    let app = spawn_with(config).await;
    let mut slow = Vec::new();
    for _ in 0..4 {
        slow.push(trickle_body(&app, Duration::from_millis(500)).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = connect(&app).await;
    extra.write_all(HEALTHCHECK).await.unwrap();
    let answer = read_until_closed(&mut extra, Duration::from_secs(2)).await;
    assert!(
        answer.as_deref().is_some_and(|a| a.starts_with(b"HTTP/1.1 503")),
        "the slow clients fill the bound: {answer:?}"
    );
    // Cut off after the body read timeout, they make room, though they are still sending.
    let started = Instant::now();
    loop {
        let mut stream = connect(&app).await;
        stream.write_all(HEALTHCHECK).await.unwrap();
        let mut first = [0u8; 12];
        let read = tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut first)).await;
        if matches!(read, Ok(Ok(_))) && first.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "new clients were still refused 6 s on (body read timeout 1 s)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (_, trickle) in slow {
        trickle.abort();
    }
}
