//! The endpoint behind TLS and basic auth (`--web-config`, the web configuration format of
//! Prometheus exporters): reached with curl as a user would, and scraped by a real Prometheus
//! over TLS with basic auth; bad files refused before anything attaches.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use scope_probe_tests::Beam;
use scope_probe_tests::probe::{Running, free_port, run};
use scope_probe_tests::servers::prometheus_with;

const USER: &str = "prometheus";
const PASSWORD: &str = "correct horse battery staple";

/// A CA and a server certificate for 127.0.0.1 signed by it, made by openssl.
fn certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl (Debian package openssl)");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        &[&["req", "-x509"][..], &ec, &["-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=scope-probe test CA"]].concat(),
    );
    openssl(&[&["req"][..], &ec, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]].concat());
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
}

fn web_config(dir: &Path) -> std::path::PathBuf {
    certificates(dir);
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let path = dir.join("web.yml");
    // Paths relative to the file, as exporters read them.
    std::fs::write(
        &path,
        format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  {USER}: {hash}\n"),
    )
    .unwrap();
    path
}

/// curl's HTTP status for `url` (0 when it got none), with `args`.
fn curl(url: &str, args: &[&str]) -> (u32, String) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", "10"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl (Debian package curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

#[test]
fn tls_and_basic_auth_keep_the_endpoint_to_those_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let web = web_config(dir.path());
    let beam = Beam::start();
    let port = free_port();
    let (pid, listen) = (beam.os_pid.to_string(), format!("127.0.0.1:{port}"));
    let probe = Running::start(
        &["--pid", &pid, "--mode", "sample", "--listen", &listen, "--web-config", web.to_str().unwrap()],
        beam.os_pid,
        "metrics on https://",
    );
    let url = format!("https://127.0.0.1:{port}/metrics");
    let ca = dir.path().join("ca.crt");
    let ca = ca.to_str().unwrap();
    let user = format!("{USER}:{PASSWORD}");
    let (code, body) = curl(&url, &["--cacert", ca, "-u", &user]);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("scope_probe_attached"), "{body}");
    assert!(probe.stderr().iter().any(|l| l.contains("(TLS, basic auth)")), "{:?}", probe.stderr());
    // Every path is behind the users, not only /metrics.
    assert_eq!(curl(&format!("https://127.0.0.1:{port}/api/processes"), &["--cacert", ca]).0, 401);
    assert_eq!(curl(&url, &["--cacert", ca]).0, 401, "no credentials");
    assert_eq!(curl(&url, &["--cacert", ca, "-u", &format!("{USER}:wrong")]).0, 401, "a wrong password");
    assert_eq!(curl(&url, &["--cacert", ca, "-u", &format!("someone:{PASSWORD}")]).0, 401, "an unknown user");
    assert_eq!(curl(&url, &["-u", &user]).0, 0, "a certificate curl cannot verify is refused by curl");
    assert_eq!(curl(&format!("http://127.0.0.1:{port}/metrics"), &["-u", &user]).0, 0, "plain HTTP gets nothing");

    // A real Prometheus scrapes it over TLS with basic auth.
    let scrape = format!(
        "    scheme: https\n    tls_config:\n      ca_file: {ca}\n    basic_auth:\n      username: {USER}\n      password: {PASSWORD}\n"
    );
    let prometheus = prometheus_with(std::slice::from_ref(&listen), &[], &scrape);
    let started = Instant::now();
    let up = loop {
        let r = prometheus.get_json("/api/v1/query?query=up");
        let value = r["data"]["result"][0]["value"][1].as_str().map(str::to_owned);
        if value.as_deref() == Some("1") || started.elapsed() > Duration::from_secs(20) {
            break (value, r);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(up.0.as_deref(), Some("1"), "Prometheus scraped it: {}", up.1);
    let r = prometheus.get_json(&format!("/api/v1/query?query=scope_probe_attached{{os_pid=\"{pid}\"}}"));
    assert_eq!(r["data"]["result"][0]["value"][1], "1", "{r}");
    let (status, stderr) = probe.finish(scope_probe_tests::probe::Stop::Signal(libc::SIGTERM));
    assert!(status.success(), "{stderr:?}");
}

/// Bad web configurations stop scope-probe with one clear line, before it attaches.
#[test]
fn bad_web_configurations_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let beam = Beam::start();
    let pid = beam.os_pid.to_string();
    let cases = [
        ("missing.yml", None, "cannot read the web configuration"),
        ("typo.yml", Some("tls_server_confg:\n  cert_file: server.crt\n"), "unknown field `tls_server_confg`"),
        ("nokey.yml", Some("tls_server_config:\n  cert_file: server.crt\n"), "cert_file and key_file are both required"),
        ("nocert.yml", Some("tls_server_config:\n  cert_file: nothere.crt\n  key_file: server.key\n"), "nothere.crt"),
        ("pair.yml", Some("tls_server_config:\n  cert_file: ca.crt\n  key_file: server.key\n"), "do not make a key pair"),
        ("hash.yml", Some("basic_auth_users:\n  alice: plain-password\n"), "basic_auth_users.alice is not a bcrypt hash"),
        ("tls10.yml", Some("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS10\n"), "TLS10"),
        (
            "ciphers.yml",
            Some("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n"),
            "cipher_suites is not supported",
        ),
        ("yaml.yml", Some("tls_server_config: [\n"), "not a valid web configuration"),
    ];
    for (name, text, says) in cases {
        let path = dir.path().join(name);
        if let Some(text) = text {
            std::fs::write(&path, text).unwrap();
        }
        let out = run(&["--pid", &pid, "--listen", &format!("127.0.0.1:{}", free_port()), "--web-config", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.contains(says), "{name}: expected {says:?} in {stderr}");
        assert!(!stderr.contains("panicked") && !stderr.contains("attached to pid"), "{name}: {stderr}");
    }
}
