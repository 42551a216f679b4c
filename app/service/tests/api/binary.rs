//! The shipped binary, run as a process: what it writes to stdout for hostile requests, in both log formats, and
//! how it refuses to start.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::helpers::{admin_token_file, ADMIN_TOKEN};

/// Longest log line accepted from a request, whatever it sent.
const MAX_LINE: usize = 1024;

struct Running {
    child: Child,
    api: String,
    lines: mpsc::Receiver<Vec<u8>>,
    seen: Vec<Vec<u8>>,
}

/// Starts the binary with `format` logs on free ports, fault injection on, and waits for its `listening` line.
fn start(format: &str) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_app"))
        .env("APP_LISTEN_ADDR", "127.0.0.1:0")
        .env("APP_ADMIN_ADDR", "127.0.0.1:0")
        .env("APP_LOG_FORMAT", format)
        .env("APP_LOG_LEVEL", "info")
        .env("APP_FAULT_INJECTION_ENABLED", "true")
        .env("APP_ADMIN_TOKEN_FILE", admin_token_file())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the app binary starts");
    let (tx, lines) = mpsc::channel();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || loop {
        let mut line = Vec::new();
        match stdout.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if tx.send(line).is_err() {
                    return;
                }
            }
        }
    });
    let mut running = Running {
        child,
        api: String::new(),
        lines,
        seen: Vec::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while running.api.is_empty() {
        let line = running
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the app logs that it is listening");
        let text = String::from_utf8_lossy(&line).into_owned();
        if text.contains("listening") {
            running.api = field(&text, "api").expect("the listening line names the API address");
        }
        running.seen.push(line);
    }
    running
}

/// The value of `name` in a JSON line or a text line (`name=value`).
fn field(line: &str, name: &str) -> Option<String> {
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(line) {
        return json[name].as_str().map(str::to_owned);
    }
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    Some(line[start..].split(' ').next()?.trim_end().to_owned())
}

impl Running {
    /// Sends raw bytes, reads the answer until the server closes.
    fn send(&self, request: &[u8]) -> Vec<u8> {
        let mut stream = TcpStream::connect(&self.api).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(request).unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        answer
    }

    /// Stops the process with SIGTERM (which flushes the log) and returns every line it wrote.
    fn stop(mut self) -> Vec<Vec<u8>> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "{exit:?}");
        self.seen.extend(self.lines.iter());
        self.seen
    }
}

/// Bytes that must never reach a log line raw: C0 controls (but the final newline), DEL, and the C1 controls
/// (`U+0080`–`U+009F`, UTF-8 `C2 80`–`C2 9F`), which terminals also read as escape sequences.
fn raw_controls(line: &[u8]) -> Vec<usize> {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    let mut found = Vec::new();
    for (i, window) in body.windows(2).enumerate() {
        if window[0] == 0xc2 && (0x80..=0x9f).contains(&window[1]) {
            found.push(i);
        }
    }
    found.extend(
        body.iter()
            .enumerate()
            .filter(|(_, b)| **b < 0x20 || **b == 0x7f)
            .map(|(i, _)| i),
    );
    found
}

/// Whether `line` is the request line of the request with id `id`. JSON lines are compared field by field, since
/// they carry `"` and `\\` escaped. (Lines logged inside the request's span, such as a dependency warning while the
/// app's pools warm up on a loaded machine, carry the id too; they are checked like every line, not counted.)
fn is_request_line(line: &str, id: &str) -> bool {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(json) => json["message"] == "request" && json["request_id"] == id,
        Err(_) => line.contains(" request method=") && line.trim_end().ends_with(&format!(" request_id={id}")),
    }
}

/// A request id a client may send (visible ASCII) that needs escaping in JSON.
const QUOTED_ID: &str = r#"q"uo\te{"forged":1}"#;

fn hostile_requests_leave_one_bounded_clean_line_each(format: &str) {
    let app = start(format);
    let long_method = "X".repeat(8000);
    let requests: Vec<(&str, Vec<u8>)> = [
        (
            "long-method",
            format!("{long_method} /helloworld HTTP/1.1\r\nHost: x\r\nX-Request-Id: long-method\r\n"),
        ),
        (
            "hostile-key",
            "GET /get/a%0Ab%1B%5B31mred%1B%5B0m%C2%9B%7F HTTP/1.1\r\nHost: x\r\nX-Request-Id: hostile-key\r\n"
                .to_owned(),
        ),
        (
            "hostile-set-key",
            "GET /set_key/k%0A%1B%5B31m/v%0D%0Aforged%20line HTTP/1.1\r\nHost: x\r\nX-Request-Id: hostile-set-key\r\n"
                .to_owned(),
        ),
        (
            "hostile-agent",
            "GET /helloworld HTTP/1.1\r\nHost: x\r\nUser-Agent: \u{9b}31mevil\u{85}\r\nX-Request-Id: hostile-agent\r\n"
                .to_owned(),
        ),
        (
            "hostile-query",
            "GET /query?param=%0A%1B%5B31m HTTP/1.1\r\nHost: x\r\nX-Request-Id: hostile-query\r\n".to_owned(),
        ),
        (
            "escaped-utf8",
            "GET /get/%FF%C0%80%ED%A0%80 HTTP/1.1\r\nHost: x\r\nX-Request-Id: escaped-utf8\r\n".to_owned(),
        ),
        (
            QUOTED_ID,
            format!("GET /helloworld HTTP/1.1\r\nHost: x\r\nX-Request-Id: {QUOTED_ID}\r\n"),
        ),
    ]
    .into_iter()
    .map(|(id, request)| (id, request.into_bytes()))
    .collect();
    // Raw bytes that are not UTF-8 in the path: hyper refuses the request line (400) before the app sees it, so
    // the request leaves no line at all, and nothing of it reaches the log.
    let raw = b"GET /get/\xff\xfe\xc0 HTTP/1.1\r\nHost: x\r\nX-Request-Id: raw-utf8\r\nConnection: close\r\n\r\n";
    let answer = app.send(raw);
    assert!(
        answer.starts_with(b"HTTP/1.1 400 "),
        "{format}: {}",
        String::from_utf8_lossy(&answer)
    );
    for (_, request) in &requests {
        let answer = app.send(&[&request[..], b"Connection: close\r\n\r\n"].concat());
        assert!(
            answer.starts_with(b"HTTP/1.1 "),
            "{format}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    let lines = app.stop();
    assert!(
        !lines.iter().any(|l| String::from_utf8_lossy(l).contains("raw-utf8")),
        "{format}: a request hyper refused was logged"
    );
    for line in &lines {
        let text = String::from_utf8_lossy(line);
        assert!(
            std::str::from_utf8(line).is_ok(),
            "{format}: a line that is not UTF-8: {text:?}"
        );
        assert!(
            raw_controls(line).is_empty(),
            "{format}: raw control characters in {text:?}"
        );
        assert!(
            line.len() <= MAX_LINE,
            "{format}: a line of {} bytes: {text:.300}",
            line.len()
        );
        assert!(
            !text.contains(ADMIN_TOKEN),
            "{format}: the admin token was logged: {text}"
        );
        if format == "json" {
            serde_json::from_slice::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {text}"));
        }
    }
    for (id, _) in &requests {
        let with_id: Vec<_> = lines
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .filter(|l| is_request_line(l, id))
            .collect();
        let [line] = &with_id[..] else {
            panic!("{format}: expected one request line for request {id}, got {with_id:#?}")
        };
        if *id == "long-method" {
            let method = field(line, "method").unwrap_or_default();
            assert!(
                method.starts_with("XXXX") && method.contains("cut"),
                "{format}: {line:.400}"
            );
        }
        if format == "json" && *id == QUOTED_ID {
            // The request line of the shipped writer, read back field by field.
            let json: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(json["message"], "request", "{line}");
            assert_eq!(json["target"], "app::http", "{line}");
            assert_eq!(json["method"], "GET", "{line}");
            assert_eq!(json["route"], "/helloworld", "{line}");
            assert_eq!(json["status"], 200, "{line}");
            assert!(json["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{line}");
            let timestamp = json["timestamp"].as_str().unwrap_or_default();
            assert!(
                timestamp.len() == "2026-11-23T07:55:52.123456Z".len() && timestamp.ends_with('Z'),
                "{line}"
            );
        }
    }
}

#[test]
fn hostile_requests_leave_one_bounded_clean_json_line_each() {
    hostile_requests_leave_one_bounded_clean_line_each("json");
}

#[test]
fn hostile_requests_leave_one_bounded_clean_text_line_each() {
    hostile_requests_leave_one_bounded_clean_line_each("text");
}

#[test]
fn the_binary_refuses_fault_injection_without_a_token_file() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_app"))
        .env("APP_LISTEN_ADDR", "127.0.0.1:0")
        .env("APP_ADMIN_ADDR", "127.0.0.1:0")
        .env("APP_FAULT_INJECTION_ENABLED", "true")
        .env_remove("APP_ADMIN_TOKEN_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the app binary runs");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the app started with fault injection and no admin token");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("APP_ADMIN_TOKEN_FILE"), "{stderr}");
}
