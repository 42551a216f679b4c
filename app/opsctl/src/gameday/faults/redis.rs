//! Faults of Redis: memory at maxmemory, clients at maxclients, the app's user denied GET, Redis stopped.

use std::time::Duration;

use tokio::time::sleep;

use super::{Handle, Phase};
use crate::gameday::error::Error;
use crate::gameday::proofs::{self, Proof};
use crate::gameday::stack::{now_ms, Redis};

/// Fills Redis with a working set and lowers maxmemory to just above its used memory.
pub(super) async fn maxmemory(h: &mut Handle) -> Result<Vec<Proof>, Error> {
    let ctx = h.ctx.clone();
    let redis = &ctx.redis;
    let original = with_retries(|| redis.config_get("maxmemory")).await?;
    // A working set that fills the limit. Without it the cache holds about 1 MiB, so the memory of
    // client connections swings the ratio: a burst of connections (the redis-clients drill runs
    // beside this one) read at the wrong moment once set the limit so high that the ratio sat at
    // 58%. Beside this one (about 80 MiB in use) such a burst is under 2%.
    with_retries(|| async {
        redis_ballast(redis, true).await?;
        let used: u64 = redis.info_field("memory", "used_memory").await?;
        // 4% above what is used now: the ratio sits near 96%, above the 90% threshold.
        let max = used + used / 25;
        redis.run::<()>(&["CONFIG", "SET", "maxmemory", &max.to_string()]).await
    })
    .await?;
    h.ready();
    h.until(Phase::Clear).await;
    with_retries(|| async {
        redis.run::<()>(&["CONFIG", "SET", "maxmemory", &original]).await?;
        redis_ballast(redis, false).await
    })
    .await?;
    Ok(vec![])
}

pub(super) async fn clients(h: &mut Handle) -> Result<Vec<Proof>, Error> {
    let ctx = h.ctx.clone();
    let redis = ctx.redis.clone();
    let original = redis.config_get("maxclients").await?;
    let connected: u64 = redis.info_field("clients", "connected_clients").await?;
    // Room for 60 more clients; hold 85% of the new limit (the rule's threshold is 80%), which leaves the app's
    // pool and the exporter enough free slots to reconnect.
    let max = connected + 60;
    let hold = (max * 85).div_ceil(100).saturating_sub(connected);
    redis
        .run::<()>(&["CONFIG", "SET", "maxclients", &max.to_string()])
        .await?;
    let mut held = Vec::new();
    for _ in 0..hold {
        held.push(
            tokio::net::TcpStream::connect(&redis.addr)
                .await
                .map_err(Error::RedisSocket)?,
        );
    }
    // A burst past the limit: Redis accepts each connection, answers "max number of clients reached", closes it,
    // and counts it in rejected_connections.
    let mut burst = Vec::new();
    for _ in 0..(max - connected - hold + 10) {
        if let Ok(s) = tokio::net::TcpStream::connect(&redis.addr).await {
            burst.push(s);
        }
    }
    sleep(Duration::from_millis(500)).await;
    drop(burst);
    h.ready();
    // Other clients come and go (the app's pool reconnects after a restart): keep the total near 85%.
    while h.holding() {
        if let Ok(now) = redis.info_field::<u64>("clients", "connected_clients").await {
            let want = (max * 85).div_ceil(100);
            if now < want {
                for _ in now..want {
                    if let Ok(s) = tokio::net::TcpStream::connect(&redis.addr).await {
                        held.push(s);
                    }
                }
            } else if now > (max * 95) / 100 {
                held.truncate(held.len().saturating_sub((now - want) as usize));
            }
        }
        tokio::select! {
            _ = sleep(Duration::from_secs(2)) => {}
            _ = h.until(Phase::Clear) => {}
        }
    }
    drop(held);
    redis.run::<()>(&["CONFIG", "SET", "maxclients", &original]).await?;
    Ok(vec![])
}

/// Takes GET from the app's Redis user; gives back exactly the command rules it had.
pub(super) async fn deny_get(h: &mut Handle) -> Result<Vec<Proof>, Error> {
    let ctx = h.ctx.clone();
    let (redis, user) = (&ctx.redis, ctx.args.redis_app_user.as_str());
    let before = acl_command_rules(redis, user).await?;
    redis.run::<()>(&["ACL", "SETUSER", user, "-get"]).await?;
    h.ready();
    h.until(Phase::Clear).await;
    restore_command_rules(redis, user, &before).await?;
    Ok(vec![])
}

/// Stops Redis under read load; the proof: no read of an existing key fails.
pub(super) async fn down(h: &mut Handle) -> Result<Vec<Proof>, Error> {
    let ctx = h.ctx.clone();
    let readers = proofs::Readers::start(ctx.clone(), 40.0);
    sleep(Duration::from_secs(3)).await;
    ctx.supervisor("stop", "redis").await?;
    h.ready();
    h.until(Phase::Clear).await;
    ctx.supervisor("start", "redis").await?;
    let removed = now_ms();
    // Keep reading while the app finds Redis again; the next scenario may not start meanwhile.
    sleep(Duration::from_secs(10)).await;
    let proof = readers.stop().await;
    h.cleared(Ok(removed));
    Ok(vec![proof])
}

/// The command rules of `user`'s root permissions as `ACL LIST` shows them (`-@all`, `+get`, `+client|setname`,
/// `allcommands`, …), in order. Passwords, key and channel patterns, flags and selectors are left out: the
/// redis-errors drill changes commands only, and the list's password hashes are not for messages.
async fn acl_command_rules(redis: &Redis, user: &str) -> Result<Vec<String>, Error> {
    let list: Vec<String> = redis.run(&["ACL", "LIST"]).await?;
    let rules = list
        .iter()
        .map(|line| acl_tokens(line))
        .find(|tokens| tokens.len() >= 2 && tokens[0] == "user" && tokens[1] == user)
        .ok_or_else(|| Error::NoAclUser(user.to_string()))?;
    Ok(rules
        .into_iter()
        .skip(2)
        .filter(|t| t.starts_with(['+', '-']) || t == "allcommands" || t == "nocommands")
        .collect())
}

/// One `ACL LIST` line split into its rules; a selector, `(…)` with spaces inside, stays one rule.
fn acl_tokens(line: &str) -> Vec<String> {
    let mut tokens: Vec<String> = Vec::new();
    let mut in_selector = false;
    for word in line.split_whitespace() {
        match tokens.last_mut() {
            Some(open) if in_selector => {
                open.push(' ');
                open.push_str(word);
            }
            _ => tokens.push(word.to_string()),
        }
        if word.starts_with('(') && !in_selector {
            in_selector = true;
        }
        if in_selector && word.ends_with(')') {
            in_selector = false;
        }
    }
    tokens
}

/// Gives `user` back the command rules it had: all of them dropped and the saved ones applied, in one command
/// (Redis applies a SETUSER's rules together, so the app never sees a user without commands), then checked.
async fn restore_command_rules(redis: &Redis, user: &str, before: &[String]) -> Result<(), Error> {
    let mut args = vec!["ACL", "SETUSER", user, "nocommands"];
    args.extend(before.iter().map(String::as_str));
    redis
        .run_named::<()>(
            &format!("ACL SETUSER {user} <its command rules before the drill>"),
            &args,
        )
        .await?;
    let after = acl_command_rules(redis, user).await?;
    if after == before {
        Ok(())
    } else {
        Err(Error::AclNotRestored {
            user: user.to_string(),
            after,
            before: before.to_vec(),
        })
    }
}

/// The redis-maxmemory drill's working set: 64 keys of 1 MiB under `gameday:ballast:`, written (expiring within the
/// hour, in case the drill dies) or removed by one script, so that one connection does it even while the
/// redis-clients drill holds most of maxclients.
async fn redis_ballast(redis: &Redis, write: bool) -> Result<(), Error> {
    const SCRIPT: &str = "local value = string.rep('x', 1048576) \
        for i = 1, 64 do \
          if ARGV[1] == 'write' then redis.call('SET', KEYS[1] .. i, value, 'EX', 3600) \
          else redis.call('UNLINK', KEYS[1] .. i) end \
        end \
        return 1";
    let action = if write { "write" } else { "remove" };
    redis
        .run::<()>(&["EVAL", SCRIPT, "1", "gameday:ballast:", action])
        .await
}

/// Runs `step` until it succeeds, up to five times a second apart: for the Redis drills that run beside the
/// redis-clients drill, whose burst past maxclients refuses every new connection for half a second.
async fn with_retries<T, F, Fut>(mut step: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let mut tries = 0;
    loop {
        match step().await {
            Ok(v) => return Ok(v),
            Err(e) if tries >= 4 => return Err(e),
            Err(_) => tries += 1,
        }
        sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::Secret;
    use std::process::{Child, Command, Stdio};

    #[test]
    fn acl_lines_split_into_rules_with_selectors_whole() {
        let line = "user app on #0a1b ~app:* resetchannels -@all +get +client|setname (~x:* +set) +hello";
        assert_eq!(
            acl_tokens(line),
            vec![
                "user",
                "app",
                "on",
                "#0a1b",
                "~app:*",
                "resetchannels",
                "-@all",
                "+get",
                "+client|setname",
                "(~x:* +set)",
                "+hello"
            ]
        );
    }

    /// A Redis of the test's own (Debian's `redis-server`, which `native/install.sh` installs) on a free port,
    /// with ACL users like the native stack's; stopped when dropped.
    struct TestRedis {
        child: Child,
        dir: std::path::PathBuf,
        redis: Redis,
    }

    impl Drop for TestRedis {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    async fn test_redis() -> TestRedis {
        let dir = super::super::temp_dir("redis");
        std::fs::write(
            dir.join("users.acl"),
            "user default off resetkeys resetchannels -@all\n\
             user admin on >admin-pass ~* &* +@all\n\
             user app on >app-pass resetchannels ~app:* -@all +get +set +del +unlink +eval +ping +client|setname +hello\n",
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--aclfile")
            .arg(dir.join("users.acl"))
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: run native/install.sh (make test does)");
        let redis = Redis {
            addr: format!("127.0.0.1:{port}"),
            auth: Some(("admin".into(), Secret::new("admin-pass"))),
        };
        let test = TestRedis { child, dir, redis };
        for _ in 0..100 {
            if test.redis.run::<String>(&["PING"]).await.is_ok() {
                return test;
            }
            sleep(Duration::from_millis(50)).await;
        }
        panic!("the test's redis-server did not answer");
    }

    #[tokio::test]
    async fn the_redis_errors_drill_takes_get_from_the_apps_user_and_gives_back_exactly_that() {
        let test = test_redis().await;
        let redis = &test.redis;
        let app = Redis {
            addr: redis.addr.clone(),
            auth: Some(("app".into(), Secret::new("app-pass"))),
        };
        let list = || async { redis.run::<Vec<String>>(&["ACL", "LIST"]).await.unwrap() };
        let before_list = list().await;
        let before = acl_command_rules(redis, "app").await.unwrap();
        assert!(before.contains(&"+get".to_string()), "{before:?}");
        assert_eq!(app.run::<Option<String>>(&["GET", "app:k"]).await.unwrap(), None);

        redis.run::<()>(&["ACL", "SETUSER", "app", "-get"]).await.unwrap();
        let denied = app.run::<Option<String>>(&["GET", "app:k"]).await.unwrap_err();
        assert!(
            matches!(&denied, Error::Redis { source, .. } if source.code() == Some("NOPERM")),
            "{denied:?}"
        );
        assert_eq!(app.run::<String>(&["SET", "app:k", "v"]).await.unwrap(), "OK");

        restore_command_rules(redis, "app", &before).await.unwrap();
        assert_eq!(list().await, before_list, "every user's rules as before");
        assert_eq!(
            app.run::<Option<String>>(&["GET", "app:k"]).await.unwrap().as_deref(),
            Some("v")
        );

        // Without the admin password, nothing runs: the default user is off.
        let anonymous = Redis {
            addr: redis.addr.clone(),
            auth: None,
        };
        assert!(anonymous.run::<Vec<String>>(&["ACL", "LIST"]).await.is_err());
        let missing = acl_command_rules(redis, "nobody").await.unwrap_err();
        assert!(matches!(&missing, Error::NoAclUser(u) if u == "nobody"), "{missing:?}");
        assert!(missing.to_string().contains("--redis-app-user"), "{missing}");
    }
}
