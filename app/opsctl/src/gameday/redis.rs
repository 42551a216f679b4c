//! Redis as the game day reaches it, through the `redis` crate: one short-lived connection per command (the drills
//! run beside one that fills maxclients, so a held connection would not tell them apart from any other client),
//! authenticated first as the ACL user `admin` on the secured stack, each command under a time limit.

use std::str::FromStr;
use std::time::Duration;

use redis::{ConnectionAddr, FromRedisValue, InfoDict, IntoConnectionInfo, RedisConnectionInfo};

use super::error::Error;
use crate::secrets::Secret;

/// Time limit of one command, connection and login included.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Redis as the game day reaches it: its address and, on the secured stack, the ACL user and password every
/// connection authenticates as first.
#[derive(Debug, Clone)]
pub struct Redis {
    /// `host:port`.
    pub addr: String,
    /// `(user, password)` for `AUTH`; `None` on an unauthenticated Redis.
    pub auth: Option<(String, Secret)>,
}

impl Redis {
    /// Sends one command and decodes its reply; messages name the command by its arguments.
    pub async fn run<T: FromRedisValue>(&self, args: &[&str]) -> Result<T, Error> {
        self.run_named(&args.join(" "), args).await
    }

    /// [`Redis::run`], with messages naming the command `what` (for commands whose arguments are not for logs).
    pub async fn run_named<T: FromRedisValue>(&self, what: &str, args: &[&str]) -> Result<T, Error> {
        let mut cmd = redis::cmd(args.first().copied().unwrap_or_default());
        for a in args.iter().skip(1) {
            cmd.arg(*a);
        }
        let call = async {
            let mut connection = self.connect().await?;
            cmd.query_async::<T>(&mut connection)
                .await
                .map_err(|source| Error::Redis {
                    what: what.to_string(),
                    source,
                })
        };
        tokio::time::timeout(TIMEOUT, call)
            .await
            .map_err(|_| Error::RedisTimeout(what.to_string()))?
    }

    async fn connect(&self) -> Result<redis::aio::MultiplexedConnection, Error> {
        let (host, port) = self
            .addr
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
            .ok_or_else(|| Error::RedisAddr(self.addr.clone()))?;
        let mut settings = RedisConnectionInfo::default().set_skip_set_lib_name();
        if let Some((user, password)) = &self.auth {
            settings = settings.set_username(user).set_password(password.expose());
        }
        let connect_error = |source| Error::RedisConnect {
            addr: self.addr.clone(),
            user: self.auth.as_ref().map(|(u, _)| u.clone()),
            source,
        };
        let info = ConnectionAddr::Tcp(host, port)
            .into_connection_info()
            .map_err(connect_error)?
            .set_redis_settings(settings);
        let client = redis::Client::open(info).map_err(connect_error)?;
        client.get_multiplexed_async_connection().await.map_err(connect_error)
    }

    /// One setting, as `CONFIG GET` returns it.
    pub async fn config_get(&self, name: &str) -> Result<String, Error> {
        let reply: Vec<String> = self.run(&["CONFIG", "GET", name]).await?;
        reply.into_iter().nth(1).ok_or_else(|| Error::RedisReply {
            what: format!("CONFIG GET {name}"),
            expected: "the setting's name and value",
        })
    }

    /// One numeric field of a section of `INFO`.
    pub async fn info_field<T: FromStr>(&self, section: &str, field: &str) -> Result<T, Error> {
        let info: InfoDict = self.run(&["INFO", section]).await?;
        info.get::<String>(field)
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| Error::RedisReply {
                what: format!("INFO {section}"),
                expected: "the numeric field asked for",
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    /// A one-connection RESP server: answers each command from `replies`, in order, and returns what it received.
    async fn fake_redis(replies: &[&str]) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let replies: Vec<String> = replies.iter().map(|r| r.to_string()).collect();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut stream = BufReader::new(stream);
            let mut received = Vec::new();
            for reply in replies {
                // `*<n>` then `$<len>` / `<arg>` pairs.
                let mut line = String::new();
                stream.read_line(&mut line).await.unwrap();
                let n: usize = line.trim()[1..].parse().unwrap();
                let mut args = Vec::new();
                for _ in 0..n {
                    let (mut len, mut arg) = (String::new(), String::new());
                    stream.read_line(&mut len).await.unwrap();
                    stream.read_line(&mut arg).await.unwrap();
                    args.push(arg.trim_end().to_string());
                }
                received.push(args.join(" "));
                stream.get_mut().write_all(reply.as_bytes()).await.unwrap();
            }
            received
        });
        (addr, task)
    }

    #[tokio::test]
    async fn redis_commands_authenticate_first_when_configured() {
        let (addr, server) = fake_redis(&["+OK\r\n", "+PONG\r\n"]).await;
        let redis = Redis {
            addr,
            auth: Some(("admin".into(), Secret::new("redis-pass"))),
        };
        assert_eq!(redis.run::<String>(&["PING"]).await.unwrap(), "PONG");
        assert_eq!(server.await.unwrap(), vec!["AUTH admin redis-pass", "PING"]);

        let (addr, server) = fake_redis(&["+PONG\r\n"]).await;
        let plain = Redis { addr, auth: None };
        assert_eq!(plain.run::<String>(&["PING"]).await.unwrap(), "PONG");
        assert_eq!(server.await.unwrap(), vec!["PING"]);
    }

    #[tokio::test]
    async fn a_refused_login_is_reported_without_the_password() {
        let (addr, _server) = fake_redis(&["-WRONGPASS invalid username-password pair or user is disabled.\r\n"]).await;
        let redis = Redis {
            addr,
            auth: Some(("admin".into(), Secret::new("redis-pass"))),
        };
        let err = redis.run::<String>(&["PING"]).await.unwrap_err();
        assert!(
            matches!(&err, Error::RedisConnect { user: Some(u), .. } if u == "admin"),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("as admin"), "{message}");
        assert!(
            !message.contains("redis-pass") && !format!("{err:?}").contains("redis-pass"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn settings_and_info_fields_are_read_from_their_replies() {
        let (addr, _server) = fake_redis(&["*2\r\n$9\r\nmaxmemory\r\n$3\r\n100\r\n"]).await;
        let redis = Redis { addr, auth: None };
        assert_eq!(redis.config_get("maxmemory").await.unwrap(), "100");
        let info = "# Clients\r\nconnected_clients:7\r\nblocked_clients:0\r\n";
        let (addr, _server) = fake_redis(&[&format!("${}\r\n{info}\r\n", info.len())]).await;
        let redis = Redis { addr, auth: None };
        assert_eq!(
            redis.info_field::<u64>("clients", "connected_clients").await.unwrap(),
            7
        );
    }
}
