//! A throwaway PostgreSQL cluster the harness can crash.
//!
//! initdb and postgres refuse to run as root; when the harness is root, every server-side
//! command runs as the `postgres` OS user through runuser, and the cluster directory belongs to
//! that user.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
    bindir: PathBuf,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn bindir() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BINDIR") {
        return dir.into();
    }
    Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().into())
        .unwrap_or_else(|| "/usr/lib/postgresql/15/bin".into())
}

impl Cluster {
    /// Creates a cluster in `dir` (which must not hold one) with extra postgresql.conf lines.
    pub fn init(dir: &Path, port: u16, conf: &[String]) -> Cluster {
        let c = Cluster { dir: dir.to_path_buf(), port, bindir: bindir() };
        std::fs::create_dir_all(dir).expect("cluster directory");
        if is_root() {
            c.must(Command::new("chown").args(["postgres:", &dir.display().to_string()]));
        }
        let data = c.data().display().to_string();
        c.must(
            &mut c.pg(
                "initdb",
                &["-D", &data, "-U", "postgres", "-A", "trust", "--data-checksums", "--no-sync"],
            ),
        );
        let mut lines = vec![
            "listen_addresses = ''".to_string(),
            format!("unix_socket_directories = '{}'", dir.display()),
            format!("port = {port}"),
            "fsync = on".into(),
            "full_page_writes = on".into(),
            "shared_preload_libraries = 'courier'".into(),
            "max_connections = 100".into(),
            "restart_after_crash = on".into(),
            "log_min_messages = warning".into(),
            "log_line_prefix = '%m [%p] '".into(),
        ];
        lines.extend(conf.iter().cloned());
        let conf_path = c.data().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).expect("postgresql.conf");
        text.push('\n');
        text.push_str(&lines.join("\n"));
        text.push('\n');
        std::fs::write(&conf_path, text).expect("postgresql.conf is writable");
        c
    }

    /// A cluster in `dir` whose data directory another program fills (pg_basebackup): the
    /// directory is made and given to the cluster's owner, and nothing else is run.
    pub fn at(dir: &Path, port: u16) -> Cluster {
        let c = Cluster { dir: dir.to_path_buf(), port, bindir: bindir() };
        std::fs::create_dir_all(dir).expect("cluster directory");
        if is_root() {
            c.must(Command::new("chown").args(["postgres:", &dir.display().to_string()]));
        }
        c
    }

    /// Runs one of PostgreSQL's programs as the cluster's owner: its output, or what it said
    /// when it failed.
    pub fn program(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let out = self.pg(program, args).output().map_err(|e| format!("cannot run {program}: {e}"))?;
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if out.status.success() { Ok(text) } else { Err(format!("{program} failed: {}", text.trim())) }
    }

    /// Appends lines to postgresql.conf: a later line overrides an earlier one.
    pub fn append_conf(&self, lines: &[String]) {
        let conf_path = self.data().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).expect("postgresql.conf");
        text.push('\n');
        text.push_str(&lines.join("\n"));
        text.push('\n');
        std::fs::write(&conf_path, text).expect("postgresql.conf is writable");
    }

    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// A command for one of PostgreSQL's programs, run as the cluster's owner.
    fn pg(&self, program: &str, args: &[&str]) -> Command {
        let path = self.bindir.join(program);
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path).args(args);
            c
        } else {
            let mut c = Command::new(path);
            c.args(args);
            c
        }
    }

    fn must(&self, cmd: &mut Command) -> Output {
        let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        if !out.status.success() {
            panic!(
                "{cmd:?} failed: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out
    }

    /// Starts the server (running crash recovery if it crashed). Retries while the previous
    /// server's processes are still exiting.
    pub fn start(&self) {
        let data = self.data().display().to_string();
        let log = self.log_path().display().to_string();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let out = self
                .pg("pg_ctl", &["-D", &data, "-l", &log, "-w", "-t", "90", "start"])
                .output()
                .expect("pg_ctl");
            if out.status.success() {
                return;
            }
            if Instant::now() > deadline {
                panic!("the server did not start: {}", String::from_utf8_lossy(&out.stderr));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    pub fn stop(&self, mode: &str) {
        let data = self.data().display().to_string();
        let _ = self.pg("pg_ctl", &["-D", &data, "-m", mode, "-w", "-t", "60", "stop"]).output();
    }

    pub fn postmaster_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.data().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Processes whose parent is `pid`.
    fn children(pid: i32) -> Vec<i32> {
        let mut out = Vec::new();
        let Ok(dir) = std::fs::read_dir("/proc") else { return out };
        for entry in dir.flatten() {
            let Some(child) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
            // The command may contain spaces and parentheses; fields resume after the last ')'.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
            let ppid = rest.split_whitespace().nth(1).and_then(|s| s.parse::<i32>().ok());
            if ppid == Some(pid) {
                out.push(child);
            }
        }
        out
    }

    fn alive(pid: i32) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::kill(pid, 0) == 0 }
    }

    /// kill -9 of the postmaster; with `everything`, of all its children at the same moment too
    /// (a crash of the whole server). Returns once every old process is gone.
    pub fn kill9(&self, everything: bool) {
        if let Some(killed) = self.kill9_signal(everything) {
            killed.wait();
        }
    }

    /// `kill9` without the wait: the signals are sent, the processes may still be exiting (a
    /// killed process runs no more of its own code, but stays visible until it is reaped).
    pub fn kill9_signal(&self, everything: bool) -> Option<Killed> {
        let pm = self.postmaster_pid()?;
        let children = Self::children(pm);
        // SAFETY: sending SIGKILL to the server's own processes.
        unsafe {
            libc::kill(pm, libc::SIGKILL);
            if everything {
                for c in &children {
                    libc::kill(*c, libc::SIGKILL);
                }
            }
        }
        Some(Killed { pm, children })
    }

    pub fn conninfo(&self, db: &str, user: &str, app: &str) -> String {
        format!(
            "host={} port={} user={user} dbname={db} application_name={app} connect_timeout=10 \
             options='-c statement_timeout=20000'",
            self.dir.display(),
            self.port
        )
    }

    /// pg_amcheck over the database (every table and btree index, with heapallindexed; the
    /// amcheck extension must be installed in it). Any finding, or a failure to run, is an error.
    pub fn amcheck(&self, db: &str) -> Result<(), String> {
        let dir = self.dir.display().to_string();
        let port = self.port.to_string();
        let out = self
            .pg("pg_amcheck", &["-h", &dir, "-p", &port, "-U", "postgres", "-d", db, "--heapallindexed"])
            .output()
            .map_err(|e| format!("cannot run pg_amcheck: {e}"))?;
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if out.status.success() && text.trim().is_empty() {
            Ok(())
        } else {
            Err(format!("pg_amcheck (exit {:?}): {}", out.status.code(), text.trim()))
        }
    }

    /// Server log lines that mean a backend crashed or the server panicked.
    pub fn crash_lines(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        text.lines()
            .filter(|l| {
                l.contains("terminated by signal")
                    || l.contains("PANIC:")
                    || l.contains("was terminated by exception")
            })
            .map(str::to_string)
            .collect()
    }

    pub fn destroy(&self) {
        self.stop("immediate");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The processes of a server `kill9_signal` killed.
pub struct Killed {
    pm: i32,
    children: Vec<i32>,
}

impl Killed {
    /// Returns once the postmaster and the children it had are gone.
    pub fn wait(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Cluster::alive(self.pm) || self.children.iter().any(|c| Cluster::alive(*c)) {
            if Instant::now() > deadline {
                for c in &self.children {
                    // SAFETY: as in kill9_signal; orphans that did not notice their postmaster died.
                    unsafe { libc::kill(*c, libc::SIGKILL) };
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
